"""The sentiment task contract, the ground floor every stage imports and that imports no stage: the prompt
and answer schema (`contract`), ticker extraction (`tickers`), the question record and the one rule for which
ticker a row asks about (`questions`), answer building (`answers`), label/score metrics (`metrics`) and
calibration fitted and applied (`calibration`)."""
