"""`tickerpulse stream ...`: run the live pipeline (run), or one part of it (produce, process), or look at
it (status). Settings: defaults < `--config stream.yaml` < `--set key=value` < flags."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

stream_app = typer.Typer(help="Live pipeline: source -> bus -> processor -> store -> dashboard.", no_args_is_help=True)
console = Console()

# -- shared options (typer has no option groups; these keep the commands consistent) -----------------
CONFIG = typer.Option(None, "--config", "-c", help="YAML with StreamConfig keys (see configs/stream.yaml).")
SET = typer.Option(None, "--set", help="Override any config key: --set max_records=128 (repeatable).")
DIR = typer.Option(None, "--dir", help="Working folder of the embedded bus/store [tickerpulse-stream].")
BUS = typer.Option(None, "--bus", help="Bus backend: sqlite (embedded) | kafka.")
STORE = typer.Option(None, "--store", help="Store backend: duckdb (embedded) | elasticsearch.")
PROCESSOR = typer.Option(None, "--processor", help="Processor: local | spark.")
DB = typer.Option(None, "--db", help="DuckDB store file [<dir>/store.duckdb].")
TOPIC = typer.Option(None, "--topic", help="Topic of raw posts [financial_raw_text].")
SCORER = typer.Option(None, "--scorer", help="engine (model in-process) | http (a tickerpulse server) | vader (baseline).")
MODE = typer.Option(None, "--mode", help="fast (label scoring) | reasoning (generated JSON with a reason).")
MODEL = typer.Option(None, "--model", help="Model name or folder for the engine scorer [smollm2-135m].")
ADAPTER = typer.Option(None, "--adapter-path", "--adapter", help="LoRA adapter run folder (engine scorer).")
URL = typer.Option(None, "--url", help="Server URL for the http scorer [http://127.0.0.1:8080].")
API_KEY_ENV = typer.Option(None, "--api-key-env", help="Environment variable holding the server's API key "
                           "(http scorer) [TICKERPULSE_API_KEY]. The key itself is never a flag.")
NAMES = typer.Option(None, "--names/--no-names", help="Company names count as tickers (\"Tesla is tanking\" -> "
                     "TSLA; the default); --no-names: cashtags, exchange prefixes and known symbols only.")


def _config(config: Path | None, sets: list[str] | None, **flags: Any):  # -> StreamConfig
    from tickerpulse.config import build, load_yaml, parse_set_flags
    from tickerpulse.stream.config import StreamConfig

    data = load_yaml(config) if config else {}
    return build(StreamConfig, data, parse_set_flags(sets), flags, source=str(config) if config else "flags")


def _logging(name: str, verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format=f"%(asctime)s [{name}] %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per scorer request drowns the log


def _stop_on_signals() -> threading.Event:
    """A stop event set by SIGINT/SIGTERM (finish the batch, commit, exit). A second Ctrl-C exits at once;
    a SIGTERM after a Ctrl-C (the supervisor stopping its children) does not."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise SystemExit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop


def _source(kind: str, file: Path | None, speed: float, loop: bool, gap: float, limit: int | None,
            subreddits: list[str] | None, interval: float, oauth_url: str | None, reddit_url: str | None):
    from tickerpulse.config import ConfigError

    if kind == "replay":
        from tickerpulse.stream.sources.replay import ReplaySource, sample_corpus

        return ReplaySource(file or sample_corpus(), speed=speed, loop=loop, gap_s=gap, limit=limit)
    if kind == "reddit":
        from tickerpulse.stream.sources.reddit import RedditSource

        return RedditSource(subreddits or ["wallstreetbets", "stocks", "investing", "CryptoCurrency"],
                            interval=interval, oauth_url=oauth_url, reddit_url=reddit_url)
    raise ConfigError(f"--source {kind!r}: choose replay or reddit")


SOURCE = typer.Option("replay", "--source", help="replay (a JSONL/CSV file) | reddit (PRAW, credentials from env).")
FILE = typer.Option(None, "--file", "-f", help="Replay file (JSONL/CSV with a text column) [the packaged sample].")
SPEED = typer.Option(1.0, "--speed", help="Replay time compression (0 = as fast as possible).")
LOOP = typer.Option(False, "--loop/--no-loop", help="Replay forever (ids get ~N suffixes per cycle).")
GAP = typer.Option(1.0, "--gap", help="Seconds between posts that have no timestamp.")
LIMIT = typer.Option(None, "--limit", help="Replay at most this many posts.")
SUBREDDIT = typer.Option(None, "--subreddit", "-r", help="Subreddit to follow (repeatable) [wallstreetbets, stocks, ...].")
INTERVAL = typer.Option(10.0, "--interval", help="Seconds between Reddit polls.")
OAUTH_URL = typer.Option(None, "--reddit-oauth-url", help="Reddit API host override (e.g. a proxy).")
REDDIT_URL = typer.Option(None, "--reddit-url", help="Reddit auth host override.")


@stream_app.command("produce")
def produce(
    source: str = SOURCE, file: Path | None = FILE, speed: float = SPEED, loop: bool = LOOP, gap: float = GAP,
    limit: int | None = LIMIT, subreddit: list[str] | None = SUBREDDIT, interval: float = INTERVAL,
    reddit_oauth_url: str | None = OAUTH_URL, reddit_url: str | None = REDDIT_URL,
    config: Path | None = CONFIG, set_: list[str] | None = SET, dir: Path | None = DIR, bus: str | None = BUS,
    topic: str | None = TOPIC,
) -> None:
    """Read a source and put its posts on the bus (deduplicated by post id)."""
    from tickerpulse.stream import registry
    from tickerpulse.stream.produce import run_source

    _logging("producer")
    cfg = _config(config, set_, dir=dir, bus=bus, topic=topic)
    src = _source(source, file, speed, loop, gap, limit, subreddit, interval, reddit_oauth_url, reddit_url)
    stop = _stop_on_signals()
    b = registry.open_bus(cfg)
    try:
        b.ensure_topics([cfg.topic, cfg.dead_letter_topic])
        stats = run_source(src.iter_posts(stop), b, cfg.topic, stop=stop)
    finally:
        b.close()
    console.print(f"produced {stats.produced} posts to {cfg.topic} ({stats.duplicates} duplicates skipped) "
                  f"in {stats.seconds:.1f}s")


@stream_app.command("process")
def process(
    config: Path | None = CONFIG, set_: list[str] | None = SET, dir: Path | None = DIR, bus: str | None = BUS,
    store: str | None = STORE, processor: str | None = PROCESSOR, db: Path | None = DB, topic: str | None = TOPIC,
    scorer: str | None = SCORER, mode: str | None = MODE, model: str | None = MODEL, adapter: str | None = ADAPTER,
    url: str | None = URL, api_key_env: str | None = API_KEY_ENV, names: bool | None = NAMES,
    until_idle: float | None = typer.Option(None, "--until-idle", help="Exit after this many seconds without records."),
) -> None:
    """Consume the topic: tickers -> model -> store, committing offsets after each write. A scorer that
    refuses the processor (e.g. HTTP 401) stops it with exit code 78 and nothing of the batch committed."""
    from tickerpulse.stream import registry
    from tickerpulse.stream.scoring import EXIT_SCORER_FATAL, ScorerFatal, ScoringInterrupted

    _logging("processor")
    cfg = _config(config, set_, dir=dir, bus=bus, store=store, processor=processor, db=db, topic=topic,
                  scorer=scorer, mode=mode, model=model, adapter=adapter, url=url, api_key_env=api_key_env,
                  names=names)
    stop = _stop_on_signals()
    try:
        totals = registry.run_processor(cfg, stop=stop, until_idle=until_idle)
    except ScorerFatal as exc:
        from rich.markup import escape

        Console(stderr=True).print(f"[bold red]error:[/] scorer refused the processor, stopping (nothing of the "
                                   f"current batch committed): {escape(str(exc))}", markup=True, highlight=False)
        raise typer.Exit(EXIT_SCORER_FATAL) from None
    except ScoringInterrupted:
        console.print("processor stopped while waiting for the scorer (nothing committed)")
        return
    console.print(f"processor stopped: {json.dumps(totals)}")


@stream_app.command("status")
def status(
    config: Path | None = CONFIG, set_: list[str] | None = SET, dir: Path | None = DIR, bus: str | None = BUS,
    store: str | None = STORE, db: Path | None = DB, topic: str | None = TOPIC,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Topic offsets, consumer lag, store counts, dead letters and the processor heartbeat."""
    from tickerpulse.stream import registry

    cfg = _config(config, set_, dir=dir, bus=bus, store=store, db=db, topic=topic)
    b = registry.open_bus(cfg)
    try:
        ends, done = b.end_offsets(cfg.topic), b.committed(cfg.group, cfg.topic)
        count = getattr(b, "count", None)
        lag = count(cfg.topic, done.get(0, 0)) if callable(count) else sum(max(0, e - done.get(p, 0)) for p, e in ends.items())
    finally:
        b.close()
    st = registry.open_store(cfg, read_only=True)
    try:
        out = {"topic": cfg.topic, "end_offsets": ends, "committed": done, "lag_records": lag, "counts": st.counts(),
               "heartbeats": st.heartbeats(), "dead_letters": [d.to_dict() for d in st.dead_letters(5)]}
    finally:
        st.close()
    if as_json:
        typer.echo(json.dumps(out, default=str))
        return
    c = out["counts"]
    console.print(f"[bold]{cfg.topic}[/] on {cfg.bus}: end offsets {ends}, group {cfg.group} committed {done}, lag {lag}")
    console.print(f"store {cfg.store}: {c['posts']} posts ({c['posts_without_ticker']} without ticker), "
                  f"{c['docs']} docs, {c['tickers']} tickers, {c['dead_letters']} dead letters")
    for name, beat in out["heartbeats"].items():
        console.print(f"{name}: {beat.get('status')} · {beat.get('posts_per_s')} posts/s · updated {beat.get('updated')}"
                      + (f" · {beat['reason']}" if beat.get("reason") else ""), markup=False, highlight=False)
    for d in out["dead_letters"]:
        console.print(f"  dead letter [{d['stage']}] {d['code']}: {d['reason']}", highlight=False, markup=False)


@stream_app.command("run")
def run(
    source: str = SOURCE, file: Path | None = FILE, speed: float = SPEED, loop: bool = LOOP, gap: float = GAP,
    limit: int | None = LIMIT, subreddit: list[str] | None = SUBREDDIT, interval: float = INTERVAL,
    reddit_oauth_url: str | None = OAUTH_URL, reddit_url: str | None = REDDIT_URL,
    config: Path | None = CONFIG, set_: list[str] | None = SET, dir: Path | None = DIR, bus: str | None = BUS,
    store: str | None = STORE, processor: str | None = PROCESSOR, db: Path | None = DB, topic: str | None = TOPIC,
    scorer: str | None = SCORER, mode: str | None = MODE, model: str | None = MODEL, adapter: str | None = ADAPTER,
    url: str | None = URL, api_key_env: str | None = API_KEY_ENV, names: bool | None = NAMES,
    host: str = typer.Option("127.0.0.1", "--host", help="Dashboard bind address."),
    port: int = typer.Option(8050, "--port", help="Dashboard port."),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Run without the dashboard."),
    exit_when_done: bool = typer.Option(False, "--exit-when-done", help="Stop once the source is exhausted and processed."),
) -> None:
    """Source + processor + dashboard in one process tree; prints the dashboard URL; Ctrl-C stops all."""
    from tickerpulse.stream.run import supervise

    _logging("stream")
    cfg = _config(config, set_, dir=dir, bus=bus, store=store, processor=processor, db=db, topic=topic,
                  scorer=scorer, mode=mode, model=model, adapter=adapter, url=url, api_key_env=api_key_env,
                  names=names)
    _source_check(source, file)
    args = ["--source", source, "--speed", str(speed), "--gap", str(gap), "--interval", str(interval),
            "--loop" if loop else "--no-loop"]
    if file:
        args += ["--file", str(file)]
    if limit is not None:
        args += ["--limit", str(limit)]
    for s in subreddit or []:
        args += ["--subreddit", s]
    if reddit_oauth_url:
        args += ["--reddit-oauth-url", reddit_oauth_url]
    if reddit_url:
        args += ["--reddit-url", reddit_url]
    console.print(f"stream: {source} -> {cfg.bus} -> {cfg.processor} ({cfg.scorer}, {cfg.mode}) -> {cfg.store} in {cfg.dir}")
    rc = supervise(cfg, args, port=port, host=host, dashboard=not no_dashboard, exit_when_done=exit_when_done,
                   announce=lambda m: console.print(m, highlight=False))
    raise typer.Exit(rc)


def _source_check(source: str, file: Path | None) -> None:
    """Fail in the parent (one red line) rather than in a child process."""
    from tickerpulse.config import ConfigError

    if source == "replay" and file is not None and not file.is_file():
        raise FileNotFoundError(f"--file: replay file not found: {file}")
    if source == "reddit":
        from tickerpulse.stream.sources.reddit import credentials_from_env

        credentials_from_env()
    elif source != "replay":
        raise ConfigError(f"--source {source!r}: choose replay or reddit")


# -- dead letters ----------------------------------------------------------------------------------------
dlq_app = typer.Typer(help="Dead letters: list the pending ones, redrive them after a fix.", no_args_is_help=True)
stream_app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(
    config: Path | None = CONFIG, set_: list[str] | None = SET, dir: Path | None = DIR, bus: str | None = BUS,
    topic: str | None = TOPIC,
    show: int = typer.Option(20, "--show", min=0, help="Print at most this many letters (all are counted)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Dead letters on <topic>.dlq not yet redriven: position, stage, code, reason, payload preview."""
    from tickerpulse.stream.dlq import list_letters

    cfg = _config(config, set_, dir=dir, bus=bus, topic=topic)
    out = list_letters(cfg, show=show)
    if as_json:
        typer.echo(json.dumps(out.to_dict(), default=str))
        return
    codes = ", ".join(f"{k} {v}" for k, v in out.by_code.most_common())
    console.print(f"{out.pending} dead letter(s) pending on {cfg.dead_letter_topic}" + (f": {codes}" if codes else ""),
                  highlight=False, soft_wrap=True)
    for x in out.letters:
        d = x.letter
        head = f"  @{x.record.partition}:{x.record.offset}"
        if d is None:
            console.print(f"{head} {x.problem}", highlight=False, markup=False, soft_wrap=True)
            continue
        note = f" [not redrivable: {x.problem}]" if x.problem else ""
        console.print(f"{head} [{d.stage}] {d.code}: {d.reason} ({d.payload_bytes} bytes){note}\n      {d.preview(100)!r}",
                      highlight=False, markup=False, soft_wrap=True)


@dlq_app.command("redrive")
def dlq_redrive(
    config: Path | None = CONFIG, set_: list[str] | None = SET, dir: Path | None = DIR, bus: str | None = BUS,
    topic: str | None = TOPIC,
    limit: int | None = typer.Option(None, "--limit", min=1, help="Redrive only the first N pending letters."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Put the pending dead letters' original records back on the posts topic (exact bytes), then mark them
    redriven: the running (or next) processor handles them again; none is redriven twice."""
    from tickerpulse.stream.dlq import redrive

    _logging("dlq")
    cfg = _config(config, set_, dir=dir, bus=bus, topic=topic)
    res = redrive(cfg, limit=limit)
    if as_json:
        typer.echo(json.dumps(res.to_dict()))
        return
    console.print(f"redrove {res.redriven} dead letter(s) to {cfg.topic} ({res.duplicates} duplicate payloads, "
                  f"{len(res.skipped)} not redrivable)", highlight=False)
    for x in res.skipped:
        console.print(f"  @{x.record.partition}:{x.record.offset} skipped: {x.problem}", highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(stream_app, name="stream")
