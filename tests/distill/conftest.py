"""Distill fixtures: the real twitter-financial-news-sentiment rows and a real OpenAI-protocol teacher
server on 127.0.0.1 (gold-label echo with fault injection), started per test and stopped after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tickerpulse.distill.testing_teacher import TeacherServer, TeacherState, load_gold


@pytest.fixture(scope="session")
def tfns_file(shared_data: Path) -> Path:
    return shared_data / "twitter-financial-news-sentiment" / "train.jsonl"


@pytest.fixture(scope="session")
def tfns_gold(tfns_file: Path) -> dict[str, str]:
    return load_gold(tfns_file)


@pytest.fixture
def teacher_server(tfns_gold: dict[str, str]) -> Iterator[TeacherServer]:
    """A running gold-echo teacher; tests tweak `teacher_server.state` (faults, delay) before use."""
    server = TeacherServer(TeacherState(gold=dict(tfns_gold))).start()
    try:
        yield server
    finally:
        server.stop()
