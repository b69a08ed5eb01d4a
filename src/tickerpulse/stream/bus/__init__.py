"""Message buses: a durable, partitioned log with consumer groups. `base.Bus` is the interface; one file
per backend (`sqlite` embedded default, `kafka` for clusters). Open one with
`tickerpulse.stream.registry.open_bus(cfg)`."""
