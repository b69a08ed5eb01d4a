"""The embedded bus: durable produce, consumer-group offsets, resume after a restart, several producing
processes with one consumer."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from tickerpulse.stream.bus.base import Bus, Consumer, dead_letter_topic, next_offsets
from tickerpulse.stream.bus.sqlite import SqliteBus


def test_protocols_and_dlq_name(tmp_path: Path) -> None:
    bus = SqliteBus(tmp_path / "b.sqlite")
    assert isinstance(bus, Bus) and isinstance(bus.consumer("g", ["t"]), Consumer)
    assert dead_letter_topic("financial_raw_text") == "financial_raw_text.dlq"


def test_commit_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    bus = SqliteBus(path)
    for i in range(10):
        bus.produce("t", f"k{i}", f"v{i}".encode())
    bus.produce("other", None, b"x")
    bus.flush()
    c = bus.consumer("g", ["t"])
    first = c.poll(4, 0.1)
    assert [r.value for r in first] == [b"v0", b"v1", b"v2", b"v3"] and first[0].key == b"k0"
    c.commit(next_offsets(first))
    c.poll(3, 0.1)  # polled but not committed: must come again after a restart
    c.close()
    bus.close()

    bus2 = SqliteBus(path)
    c2 = bus2.consumer("g", ["t"])
    assert sum(c2.lag().values()) == 6
    rest = c2.poll(100, 0.1)
    assert [r.value for r in rest] == [f"v{i}".encode() for i in range(4, 10)]
    offs = [r.offset for r in first + rest]
    assert offs == sorted(offs) and len(set(offs)) == 10
    c2.commit()
    assert sum(c2.lag().values()) == 0 and c2.poll(10, 0.05) == []
    assert bus2.committed("g", "t") == {0: rest[-1].offset + 1} == bus2.end_offsets("t")
    # another group starts from the beginning
    assert len(bus2.consumer("g2", ["t"]).poll(100, 0.1)) == 10
    assert bus2.trim("t") == 10  # retention: what every committing group has passed goes
    assert bus2.end_offsets("t") == bus2.committed("g", "t") and bus2.count("t") == 0
    bus2.close()


def _produce(path: str, tag: str, n: int) -> None:
    bus = SqliteBus(path, linger_records=7)
    for i in range(n):
        bus.produce("t", None, f"{tag}-{i}".encode())
    bus.close()


def test_several_processes_produce_while_one_consumes(tmp_path: Path) -> None:
    path = str(tmp_path / "b.sqlite")
    SqliteBus(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_produce, args=(path, tag, 300)) for tag in "abc"]
    for p in procs:
        p.start()
    bus = SqliteBus(path)
    c = bus.consumer("g", ["t"])
    got: list[bytes] = []
    while len(got) < 900:
        recs = c.poll(50, 5.0)
        assert recs, f"stalled at {len(got)} records"
        got += [r.value for r in recs]
        c.commit()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(got) == len(set(got)) == 900
    for tag in "abc":  # each producer's records keep their order
        mine = [int(v.decode().split("-")[1]) for v in got if v.startswith(tag.encode())]
        assert mine == list(range(300))
    bus.close()
