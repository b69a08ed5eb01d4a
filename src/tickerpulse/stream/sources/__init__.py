"""Post sources: `replay` (a JSONL/CSV file, timed) and `reddit` (PRAW polling). Each is an iterator of
`Post`s; `produce.run_source` puts them on the bus, deduplicated by post id."""
