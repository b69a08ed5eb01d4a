"""Real servers for the distributed-pipeline tests, started once per session on free 127.0.0.1 ports and
stopped at the end: noida-db (Kafka + Elasticsearch API), Tansu (a second Kafka implementation) and one
local SparkSession. Heavy imports happen inside the fixtures, so collecting these modules never needs the
`stream` extra (the default suite deselects them by marker)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def noida(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tickerpulse.stream import infra

    srv = infra.start_noida(tmp_path_factory.mktemp("noida"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tickerpulse.stream import infra

    srv = infra.start_tansu(log_dir=tmp_path_factory.mktemp("tansu"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from tickerpulse.stream.spark.job import SparkOptions, spark_session

    session = spark_session(SparkOptions(shuffle_partitions=2))
    yield session
    session.stop()
