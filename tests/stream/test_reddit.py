"""The Reddit source through real PRAW against a local Reddit-shaped server: OAuth, listings of new
submissions and comments, dedupe across polls, credentials from env and never logged."""

from __future__ import annotations

import logging
import time

import pytest

from tests.stream.reddit_server import RedditLike, comment, submission
from tickerpulse.config import ConfigError
from tickerpulse.stream.bus.sqlite import SqliteBus
from tickerpulse.stream.produce import run_source
from tickerpulse.stream.schema import parse_post
from tickerpulse.stream.sources.reddit import RedditSource, credentials_from_env

SECRET = "s3cr3t-value-never-logged"


@pytest.fixture
def reddit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDDIT_CLIENT_ID", "cid-test")
    monkeypatch.setenv("REDDIT_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("REDDIT_USER_AGENT", "tickerpulse-tests/0.1")


def test_missing_credentials_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_USER_AGENT"):
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(ConfigError, match="REDDIT_CLIENT_ID, REDDIT_CLIENT_SECRET, REDDIT_USER_AGENT"):
        credentials_from_env()


def test_reddit_source_polls_dedupes_and_produces(reddit_env: None, tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    now = time.time()
    with RedditLike("cid-test", SECRET) as api:
        api.submissions = [
            submission("s2", "stocks", "Is $NVDA overvalued?", "P/E of 60 and still climbing", now - 10),
            submission("s1", "wallstreetbets", "$GME to the moon", "YOLO'd my savings", now - 20),
            submission("x9", "cooking", "Best pasta", "not finance", now - 5),
        ]
        api.comments = [comment("c1", "stocks", "NVDA margins are insane, long", now - 8, "s2")]
        src = RedditSource(["wallstreetbets", "r/stocks"], interval=0.05, polls=1,
                           oauth_url=api.url, reddit_url=api.url)
        first = src.poll_once()
        # Second poll: one new comment arrives; the old items must not come again.
        api.comments.insert(0, comment("c2", "wallstreetbets", "$GME puts printing", now - 1, "s1"))
        second = src.poll_once()

        bus = SqliteBus(tmp_path / "bus.sqlite")
        src2 = RedditSource(["wallstreetbets", "stocks"], interval=0.01, polls=3, oauth_url=api.url, reddit_url=api.url)
        stats = run_source(src2.iter_posts(), bus, "financial_raw_text")
        records = bus.consumer("g", ["financial_raw_text"]).poll(100, 0.5)
        bus.close()

    assert [p.id for p in first] == ["t3_s1", "t3_s2", "t1_c1"]  # oldest first; r/cooking not asked for
    assert [p.id for p in second] == ["t1_c2"]
    s1 = first[0]
    assert s1.source == "reddit" and s1.channel == "wallstreetbets" and s1.author == "alice"
    assert s1.text == "$GME to the moon\n\nYOLO'd my savings"
    assert s1.url == "https://www.reddit.com/r/wallstreetbets/comments/s1/x/"
    assert abs(s1.created_at.timestamp() - (now - 20)) < 1e-3
    assert first[2].text == "NVDA margins are insane, long" and first[2].raw["kind"] == "comment"
    # three polls of the same listings: every post produced once
    assert stats.produced == 4 and len(records) == 4
    assert sorted(parse_post(r.value).id for r in records) == ["t1_c1", "t1_c2", "t3_s1", "t3_s2"]
    # OAuth happened with our credentials; listings carried the bearer token; the secret is in no log line
    assert any(m == "POST" and p.startswith("/api/v1/access_token") for m, p, _ in api.requests)
    assert any(p.startswith("/r/wallstreetbets+stocks/new") for _, p, _ in api.requests)
    assert SECRET not in caplog.text


def test_reddit_outage_does_not_kill_the_source(reddit_env: None) -> None:
    with RedditLike("cid-test", "wrong-secret") as api:  # every token request is refused (401)
        src = RedditSource(["stocks"], interval=0.01, polls=2, oauth_url=api.url, reddit_url=api.url)
        src_iter = src.iter_posts()
        assert list(src_iter) == []
    assert src.errors == 2
