"""Document stores for sentiment documents, dead letters, processed-post marks and pipeline heartbeats.
`base.Store` is the interface; one file per backend (`duckdb` embedded default, `elasticsearch`).
Open one with `tickerpulse.stream.registry.open_store(cfg)`."""
