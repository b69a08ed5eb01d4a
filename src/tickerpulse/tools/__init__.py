"""Developer tools that check the package itself (`python -m tickerpulse.tools.imports`); no stage imports them."""
