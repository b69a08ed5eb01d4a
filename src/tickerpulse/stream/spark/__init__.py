"""`--processor spark`: the pipeline as a Spark Structured Streaming job (pyspark 4.x).

Kafka (Spark's `format("kafka")` when its connector is installed, else our reader on PySpark's Python Data
Source API: `source.py`) -> parse + tickers (`mapInPandas`) -> the model (a pandas UDF: the scorer
in-process per worker, or batched `/v1/sentiment` calls with bounded concurrency) -> foreachBatch writes
to the store with deterministic ids (`pipeline.py`), checkpointed, backpressured by maxOffsetsPerTrigger
(`job.py`). Nothing here imports pyspark until the processor runs.
"""

from __future__ import annotations

import threading
from typing import Any


def run_processor(cfg: Any, stop: threading.Event | None = None, until_idle: float | None = None) -> dict:
    """Registry hook (see `tickerpulse.stream.registry`): `job.run_processor`."""
    from tickerpulse._optional import require

    require("pyspark", "the Spark processor")
    from tickerpulse.stream.spark.job import run_processor as run

    return run(cfg, stop=stop, until_idle=until_idle)
