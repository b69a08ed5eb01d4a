"""Reddit source: new submissions and comments of some subreddits, polled through PRAW (read-only,
application-only OAuth).

Credentials come from the environment only (`REDDIT_CLIENT_ID`, `REDDIT_CLIENT_SECRET`,
`REDDIT_USER_AGENT`) and are never logged or written. `oauth_url` / `reddit_url` point PRAW at another
API host (a local Reddit-shaped server in tests; a proxy in some deployments).

Each poll lists the newest `limit` submissions and comments of the `+`-joined subreddits, yields the
unseen ones oldest first, then waits `interval` seconds. Dedupe is by fullname (`t3_...`, `t1_...`) over
the last `remember` ids. Limitations: a burst of more than `limit` items between two polls loses the
oldest (Reddit listings page backwards; raise `limit` or lower `interval`); API errors are retried with
backoff forever (the stream must not die on a Reddit outage).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from tickerpulse.config import ConfigError
from tickerpulse.stream.schema import MAX_TEXT_CHARS, Post, to_utc

log = logging.getLogger("tickerpulse.stream.reddit")
ENV_VARS = ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_USER_AGENT")


def credentials_from_env() -> dict[str, str]:
    """{client_id, client_secret, user_agent} from the environment; ConfigError naming what is missing."""
    missing = [v for v in ENV_VARS if not os.environ.get(v)]
    if missing:
        raise ConfigError(f"the reddit source needs {', '.join(missing)} in the environment "
                          "(create a 'script' app at reddit.com/prefs/apps)")
    return {"client_id": os.environ["REDDIT_CLIENT_ID"], "client_secret": os.environ["REDDIT_CLIENT_SECRET"],
            "user_agent": os.environ["REDDIT_USER_AGENT"]}


def submission_to_post(s: Any) -> Post:
    title, body = getattr(s, "title", "") or "", getattr(s, "selftext", "") or ""
    return Post(id=s.name, source="reddit", text=(f"{title}\n\n{body}" if body else title)[:MAX_TEXT_CHARS],
                author=str(s.author) if s.author else None, created_at=to_utc(float(s.created_utc)),
                url=f"https://www.reddit.com{s.permalink}" if getattr(s, "permalink", None) else None,
                channel=str(s.subreddit), raw={"kind": "submission"})


def comment_to_post(c: Any) -> Post:
    return Post(id=c.name, source="reddit", text=(c.body or "")[:MAX_TEXT_CHARS],
                author=str(c.author) if c.author else None, created_at=to_utc(float(c.created_utc)),
                url=f"https://www.reddit.com{c.permalink}" if getattr(c, "permalink", None) else None,
                channel=str(c.subreddit), raw={"kind": "comment", "link_id": getattr(c, "link_id", None)})


class RedditSource:
    """Polls subreddits for new submissions and comments.

    Args:
        subreddits: names without `r/` (e.g. ["wallstreetbets", "stocks"]).
        comments / submissions: which listings to poll.
        interval: seconds between polls.
        limit: items per listing per poll (Reddit caps at 100).
        polls: stop after this many polls (None = forever; tests use 1-2).
        oauth_url / reddit_url: API hosts (defaults: Reddit's).
        credentials: {client_id, client_secret, user_agent}; default from the environment.
    """

    name = "reddit"

    def __init__(self, subreddits: Sequence[str], *, comments: bool = True, submissions: bool = True,
                 interval: float = 10.0, limit: int = 100, polls: int | None = None, remember: int = 100_000,
                 oauth_url: str | None = None, reddit_url: str | None = None,
                 credentials: dict[str, str] | None = None) -> None:
        if not subreddits:
            raise ConfigError("--subreddit: give at least one subreddit")
        self.subreddits = [s.strip().removeprefix("r/") for s in subreddits if s.strip()]
        self.comments, self.submissions = comments, submissions
        self.interval, self.limit, self.polls, self.remember = interval, min(max(1, limit), 100), polls, remember
        creds = credentials or credentials_from_env()
        import praw

        kwargs: dict[str, Any] = {"check_for_updates": False}
        if oauth_url:
            kwargs["oauth_url"] = oauth_url.rstrip("/")
        if reddit_url:
            kwargs["reddit_url"] = reddit_url.rstrip("/")
        self.reddit = praw.Reddit(client_id=creds["client_id"], client_secret=creds["client_secret"],
                                  user_agent=creds["user_agent"], **kwargs)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.errors = 0

    def _remember(self, key: str) -> bool:
        """True if `key` is new (and remembers it)."""
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        return True

    def poll_once(self) -> list[Post]:
        """One round of listings; the unseen posts, oldest first."""
        sub = self.reddit.subreddit("+".join(self.subreddits))
        posts: list[Post] = []
        if self.submissions:
            posts += [submission_to_post(s) for s in sub.new(limit=self.limit)]
        if self.comments:
            posts += [comment_to_post(c) for c in sub.comments(limit=self.limit)]
        posts.sort(key=lambda p: p.created_at)
        return [p for p in posts if self._remember(p.id)]

    def iter_posts(self, stop: threading.Event | None = None) -> Iterator[Post]:
        stop = stop or threading.Event()
        n, backoff = 0, self.interval
        while not stop.is_set() and (self.polls is None or n < self.polls):
            n += 1
            try:
                fresh = self.poll_once()
                backoff = self.interval
            except Exception as exc:  # network / API errors (prawcore): keep the stream alive
                self.errors += 1
                backoff = min(max(backoff * 2, self.interval), 300.0)
                log.warning("reddit poll failed (%s); retrying in %.0fs", type(exc).__name__, backoff)
                stop.wait(backoff)
                continue
            yield from fresh
            if self.polls is None or n < self.polls:
                stop.wait(self.interval)

    def __iter__(self) -> Iterator[Post]:
        return self.iter_posts()
