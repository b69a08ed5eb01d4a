"""`tickerpulse demo` (run by `make demo`): the project's story as a list of named steps.

Each step is a function taking one shared `DemoContext` (output folder, model, console, and a `state`
dict through which a step hands its results to later ones). Later stages append their steps to `STEPS`
in pipeline order (distill -> train -> compare -> fuse -> serve -> stream); `--steps` runs a subset.

Steps: `base` (the default model answers the sentiment prompt for sample headlines shipped in the
package, raw and parsed, with latency), then distill -> train -> compare -> fuse -> serve -> stream, each
running the real `tickerpulse` command a user would type. Tweets come from ../shared/data when present,
else from a generated headline corpus. Sized to finish in about 15 minutes on 2 CPU cores: the training run
uses the recipe's fast setup (`configs/demo-sentiment.yaml`: bf16 base where the CPU has it, shared prompt
prefix, packing, label-weighted loss) for 200 steps or 10 minutes of steps, whichever ends first, so the tuned
model learns the labels, not only the answer format. When the recipe's student `tickerpulse-sentiment` is
installed (`make model`), the serve and stream steps run it beside the demo's own model.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console


@dataclass
class DemoContext:
    """What every step sees."""

    out: Path
    model: str = "smollm2-135m"
    console: Console = field(default_factory=Console)
    max_tokens: int = 64
    limit: int | None = None  # sample headlines to use (None: all)
    train_iters: int | None = None  # optimizer steps; None = the demo config's (200, or its 10-minute budget)
    linger: bool = False  # keep the stream + dashboard running at the end (until Ctrl-C)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One named demo step."""

    name: str
    help: str
    run: Callable[[DemoContext], None]


def sample_headlines(limit: int | None = None) -> list[dict[str, Any]]:
    """The packaged sample headlines `{id, text, ticker, label}`."""
    raw = resources.files("tickerpulse.data").joinpath("samples", "headlines.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def step_base(ctx: DemoContext) -> None:
    """The base model answers the sentiment prompt for each sample headline, one request at a time."""
    from rich.table import Table

    from tickerpulse.task.contract import build_messages, parse_answer
    from tickerpulse.models.generate import generate_batch
    from tickerpulse.models.loading import load_model

    with ctx.console.status(f"loading {ctx.model}"):
        t0 = time.perf_counter()
        model, tok = load_model(ctx.model)
        load_s = time.perf_counter() - t0
    ctx.console.print(f"loaded {ctx.model} in {load_s:.1f}s; answering {len(sample_headlines(ctx.limit))} headlines "
                      f"(greedy, up to {ctx.max_tokens} tokens each)", highlight=False)
    rows = []
    for h in sample_headlines(ctx.limit):
        # batch of one: the latency a single request sees
        res = generate_batch(model, tok, [build_messages(h["text"], h["ticker"])], max_tokens=ctx.max_tokens)[0]
        answer, reason = parse_answer(res.text)
        rows.append({**h, "raw": res.text, "parsed": answer.model_dump() if answer else None, "error": reason,
                     "latency_s": round(res.latency, 3), "tokens": res.n_tokens, "finish_reason": res.finish_reason})
        ctx.console.print(f"  [dim]{h['id']}: {res.latency:.1f}s, {res.n_tokens} tokens[/]", highlight=False)

    table = Table(title=f"{ctx.model}: sentiment answers for sample headlines")
    table.add_column("#", no_wrap=True)
    table.add_column("headline (ticker, expected)", ratio=3)
    table.add_column("parsed answer / why it failed", ratio=2)
    table.add_column("latency", justify="right", no_wrap=True)
    for i, r in enumerate(rows, start=1):
        head = f"{_clip(r['text'], 90)} [dim]({r['ticker'] or 'none'}, {r['label']})[/]"
        if r["parsed"]:
            p = r["parsed"]
            mark = "[green]✓[/]" if p["sentiment"] == r["label"] else "[yellow]✗[/]"
            got = f"{mark} {p['sentiment']} {p['score']:+.2f} ({p['ticker'] or 'none'})"
        else:
            got = f"[red]unparsed[/]: {r['error']}"
        table.add_row(str(i), head, got, f"{r['latency_s']:.1f}s")
    ctx.console.print(table)
    for i, r in enumerate(rows, start=1):
        ctx.console.print(f"[dim]#{i} raw:[/] {_clip(r['raw'], 160) or '(empty)'}", highlight=False, markup=True)
    parsed = sum(r["parsed"] is not None for r in rows)
    correct = sum(bool(r["parsed"]) and r["parsed"]["sentiment"] == r["label"] for r in rows)
    mean_latency = sum(r["latency_s"] for r in rows) / max(len(rows), 1)
    summary = {"model": ctx.model, "headlines": len(rows), "parsed": parsed, "correct": correct,
               "mean_latency_s": round(mean_latency, 3), "load_s": round(load_s, 2)}
    ctx.console.print(f"parsed {parsed}/{len(rows)}, label matches {correct}/{len(rows)}, "
                      f"mean latency {mean_latency:.2f}s", highlight=False)
    out = ctx.out / "base_answers.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    ctx.state["base"] = {**summary, "answers": str(out)}


# ---------------------------------------------------------------------------------------------------------
# The rest of the story: each step runs the real `tickerpulse` command a user would type, and shows it.

SHARED_TWEETS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "twitter-financial-news-sentiment"
STUDENT = "tickerpulse-sentiment"  # the recipe's model (`make model`): shown beside the demo's when installed


def _tp(ctx: DemoContext, *args: str, timeout: float = 1800) -> None:
    """Run `tickerpulse ARGS` as a user would (same venv), echoing the command; raise on failure."""
    import shlex
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("tickerpulse")
    cmd = [str(exe) if exe.exists() else "tickerpulse", *args]
    ctx.console.print(f"[bold cyan]$ tickerpulse {' '.join(shlex.quote(a) for a in args)}[/]", highlight=False)
    proc = subprocess.run(cmd, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"`tickerpulse {args[0]}` failed with exit code {proc.returncode}")


def _generated_corpus(path: Path, n: int = 600, seed: int = 0) -> Path:
    """A labeled headline corpus generated from templates, for machines without ../shared/data."""
    import random

    rng = random.Random(seed)
    names = [("AAPL", "Apple"), ("MSFT", "Microsoft"), ("NVDA", "Nvidia"), ("TSLA", "Tesla"), ("AMZN", "Amazon"),
             ("JPM", "JPMorgan"), ("XOM", "Exxon"), ("PFE", "Pfizer"), ("BA", "Boeing"), ("KO", "Coca-Cola")]
    phrases = {
        "positive": ["beats estimates and raises guidance", "jumps after record quarterly revenue",
                     "upgraded to buy on strong demand", "announces a bigger buyback and dividend hike"],
        "negative": ["misses estimates and cuts its outlook", "falls after a profit warning",
                     "downgraded to sell as sales slow", "faces a probe over accounting problems"],
        "neutral": ["to present at an industry conference next week", "schedules its quarterly earnings call",
                    "names a new board member", "files its annual report"],
    }
    rows = []
    for i in range(n):
        label = rng.choices(list(phrases), weights=[3, 3, 4])[0]
        sym, name = rng.choice(names)
        text = f"${sym} {name} {rng.choice(phrases[label])}"
        rows.append({"id": f"gen-{i}", "text": text, "label": label, "tickers": [sym]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def step_distill(ctx: DemoContext) -> None:
    """Label raw tweets with the offline gold teacher into chat JSONL train/valid/test (the same path an
    OpenAI-compatible teacher takes: `--teacher URL --teacher-model NAME`)."""
    src = SHARED_TWEETS / "train.jsonl"
    if not src.is_file():
        ctx.console.print("[yellow]../shared/data not found: using a generated headline corpus[/]")
        src = _generated_corpus(ctx.out / "generated_headlines.jsonl")
    out = ctx.out / "distilled"
    # 3,000 train rows: the 200 steps x 16 see each about once; 128 test rows for a less noisy macro-F1
    _tp(ctx, "distill", "--input", str(src), "--teacher", "gold", "--out", str(out), "--n-train", "3000",
        "--n-valid", "64", "--n-test", "128", "--seed", "0", "--quiet",
        "--cache", str(ctx.out / "distill-cache.sqlite"))
    _tp(ctx, "data", "stats", str(out), "--model", ctx.model)
    ctx.state["distill"] = {"data": str(out)}


def step_train(ctx: DemoContext) -> None:
    """LoRA on the student with the recipe's fast setup (configs/demo-sentiment.yaml): validation, the best
    label-token loss kept, loss curve."""
    run = _fresh(ctx.out / "run")
    iters = ["--iters", str(ctx.train_iters)] if ctx.train_iters else []
    _tp(ctx, "train", "--config", str(_configs_dir() / "demo-sentiment.yaml"), "--model", ctx.model,
        "--data", ctx.state["distill"]["data"], "--adapter-path", str(run), *iters)
    summary = json.loads((run / "summary.json").read_text())
    ctx.console.print(f"loss curve: {run / 'loss_curve.png'}", highlight=False)
    keys = ("step", "best_step", "best_val_loss", "best_metric", "tokens_per_sec", "computed_tokens_per_sec",
            "samples_per_sec", "train_time_s", "base_dtype")
    ctx.state["train"] = {"run": str(run), **{k: summary.get(k) for k in keys}}
    ctx.console.print(f"trained {summary.get('step')} steps in {summary.get('train_time_s', 0):.0f}s of steps: "
                      f"{summary.get('tokens_per_sec') or 0:,.0f} tokens/s "
                      f"({summary.get('computed_tokens_per_sec') or 0:,.0f} computed with the shared prefix), "
                      f"{summary.get('base_dtype')} base", highlight=False)


def step_compare(ctx: DemoContext) -> None:
    """Base vs fine-tuned on the held-out test split: metric table, confusion matrices, HTML report."""
    report = _fresh(ctx.out / "report")
    _tp(ctx, "compare", "--base", ctx.model, "--tuned", ctx.state["train"]["run"], "--data",
        ctx.state["distill"]["data"], "--split", "test", "--max-tokens", "64", "--batch-size", "16",
        "--out", str(report), "--quiet")
    ctx.console.print(f"report: {report / 'report.html'}", highlight=False)
    ctx.state["compare"] = {"report": str(report / "report.html")}
    from tickerpulse.evaluate.result import EvalResult

    for side in ("base", "tuned"):
        m = EvalResult.load(report / side).sentiment
        ctx.state["compare"][side] = {"n": m.n, "accuracy": m.accuracy, "macro_f1": m.macro_f1,
                                      "schema_valid": m.schema_valid}
        recall = {c: round(v.recall, 3) for c, v in m.per_class.items()}
        ctx.console.print(f"{side}: accuracy {m.accuracy:.1%}, macro-F1 {m.macro_f1:.1%}, "
                          f"recall {recall}", highlight=False)


def step_fuse(ctx: DemoContext) -> None:
    """Merge the adapter into a standalone model folder (checked: same logits as base + adapter)."""
    fused = ctx.out / "fused"
    _tp(ctx, "fuse", "--adapter-path", ctx.state["train"]["run"], "--save-path", str(fused), "--overwrite")
    ctx.state["fuse"] = {"model": str(fused)}


def installed_student() -> str | None:
    """The recipe's `tickerpulse-sentiment` when installed here (what `tickerpulse models path` finds), else None."""
    from tickerpulse.models.registry import ModelNotFound, resolve

    try:
        resolve(STUDENT, convert=False)
    except ModelNotFound:
        return None
    return STUDENT


@contextlib.contextmanager
def _server(ctx: DemoContext, model: str) -> Iterator[str]:
    """`tickerpulse serve --model MODEL` on a free port until the block ends; yields its base URL."""
    import subprocess
    import sys

    import httpx

    port = _free_port()
    exe = Path(sys.executable).with_name("tickerpulse")
    args = ["serve", "--model", model, "--port", str(port)]
    ctx.console.print(f"[bold cyan]$ tickerpulse {' '.join(args)} &[/]", highlight=False)
    server = subprocess.Popen([str(exe) if exe.exists() else "tickerpulse", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server for {model} did not start")
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def step_serve(ctx: DemoContext) -> None:
    """Serve the fused model over the OpenAI-compatible API and ask /v1/sentiment (fast and reasoning);
    the installed `tickerpulse-sentiment` answers the same headlines beside it."""
    import httpx
    from rich.table import Table

    heads = sample_headlines(ctx.limit)
    models = [("demo", ctx.state["fuse"]["model"])]
    student = installed_student()
    if student:
        models.append((student, student))
    else:
        ctx.console.print(f"[dim]{STUDENT} is not installed (`make model` builds it): serving the demo's model only[/]")
    answers: dict[str, dict[tuple[str, str], tuple[dict[str, Any], float]]] = {}
    for name, model in models:
        answers[name] = {}
        with _server(ctx, model) as base:
            for h in heads:
                for mode in ("fast", "reasoning"):
                    t0 = time.perf_counter()
                    r = httpx.post(f"{base}/v1/sentiment", json={"text": h["text"], "ticker": h["ticker"], "mode": mode},
                                   timeout=120)
                    r.raise_for_status()
                    answers[name][(h["id"], mode)] = (r.json()["results"][0], (time.perf_counter() - t0) * 1000)
    table = Table(title="POST /v1/sentiment: " + " vs ".join(n for n, _ in models))
    table.add_column("headline")
    table.add_column("expected")
    for name, _ in models:
        table.add_column(f"{name}: fast (ms)")
        table.add_column(f"{name}: reasoning (ms)")
    results = []
    for h in heads:
        row = [_clip(h["text"], 60), h["label"]]
        for name, _ in models:
            for mode in ("fast", "reasoning"):
                ans, ms = answers[name][(h["id"], mode)]
                mark = "[green]✓[/]" if ans["sentiment"] == h["label"] else "[yellow]✗[/]"
                desc = f"{mark} {ans['sentiment']} {ans['score']:+.2f}"
                if mode == "reasoning":
                    desc += f" — {_clip(ans.get('reasoning') or '', 40)}"
                row.append(f"{desc} ({ms:.0f})")
                results.append({"model": name, "id": h["id"], "mode": mode, "ms": round(ms, 1), **ans})
        table.add_row(*row)
    ctx.console.print(table)
    correct = {name: sum(answers[name][(h["id"], "fast")][0]["sentiment"] == h["label"] for h in heads) for name, _ in models}
    ctx.console.print("fast-mode labels matching the expected one: "
                      + ", ".join(f"{n} {c}/{len(heads)}" for n, c in correct.items()), highlight=False)
    ctx.state["serve"] = {"models": [n for n, _ in models], "correct_fast": correct, "answers": results}


def step_stream(ctx: DemoContext) -> None:
    """Replay sample posts through the embedded pipeline (SQLite log -> processor -> DuckDB) scored by the
    fused model, then show the dashboard; the installed `tickerpulse-sentiment` scores the same posts into a
    second store, and the two models' labels are compared post by post."""
    runs = [("demo", ctx.state["fuse"]["model"], _fresh(ctx.out / "stream"))]
    student = installed_student()
    if student:
        runs.append((student, student, _fresh(ctx.out / f"stream-{student}")))
    port = _free_port()
    for i, (name, model, stream_dir) in enumerate(runs):
        args = ["stream", "run", "--model", model, "--dir", str(stream_dir), "--speed", "0", "--port", str(port)]
        linger = ctx.linger and i == len(runs) - 1  # the last run keeps its dashboard up
        if not linger:
            args.append("--exit-when-done")
        else:
            ctx.console.print(f"[bold]dashboard: http://127.0.0.1:{port}/[/] (Ctrl-C to stop)")
        _tp(ctx, *args, timeout=3600 * 24)
        _tp(ctx, "stream", "status", "--dir", str(stream_dir))
    for name, _, stream_dir in runs:
        ctx.console.print(f"[bold]dashboard ({name}):[/] tickerpulse dashboard --db {stream_dir / 'store.duckdb'}  "
                          f"(then open the printed URL)", highlight=False)
    ctx.state["stream"] = {"dir": str(runs[0][2])}
    if len(runs) > 1:
        ctx.state["stream"]["agreement"] = _stream_agreement(ctx, [(n, d) for n, _, d in runs])


def _stream_agreement(ctx: DemoContext, runs: list[tuple[str, Path]]) -> dict[str, Any]:
    """Label agreement of two stream runs over the same posts (same post and ticker)."""
    from tickerpulse.stream.store.duckdb import DuckDBStore

    labels = []
    for _, d in runs:
        store = DuckDBStore(d / "store.duckdb", read_only=True)
        try:
            labels.append({(doc.post_id, doc.ticker): doc.sentiment for doc in store.latest(100_000)})
        finally:
            store.close()
    common = sorted(set(labels[0]) & set(labels[1]))
    same = sum(labels[0][k] == labels[1][k] for k in common)
    ctx.console.print(f"{runs[0][0]} vs {runs[1][0]} on the same stream: {same}/{len(common)} (post, ticker) labels agree",
                      highlight=False)
    return {"items": len(common), "agree": same}


def _fresh(folder: Path) -> Path:
    """A demo rerun starts its story over: clear this step's folder from the last run."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _configs_dir() -> Path:
    """Shipped example configs (repo checkout) — the demo trains with the documented one."""
    return Path(__file__).resolve().parents[2] / "configs"


# The story, in order.
STEPS: list[Step] = [
    Step("base", "the base model answers the sentiment prompt for sample headlines", step_base),
    Step("distill", "a teacher labels raw tweets as validated JSON -> chat train/valid/test", step_distill),
    Step("train", "LoRA fine-tune with the recipe's fast setup, validation and the best checkpoint kept", step_train),
    Step("compare", "base vs fine-tuned on the held-out test split -> HTML report", step_compare),
    Step("fuse", "merge the adapter into a standalone model", step_fuse),
    Step("serve", "OpenAI-compatible server: /v1/sentiment in fast and reasoning mode (+ tickerpulse-sentiment "
                  "when installed)", step_serve),
    Step("stream", "replayed posts -> bus -> processor -> store -> live dashboard (+ tickerpulse-sentiment "
                   "when installed)", step_stream),
]


def step_names() -> list[str]:
    return [s.name for s in STEPS]


def select_steps(names: list[str] | None) -> list[Step]:
    """Steps to run, in pipeline order; ValueError names an unknown step and lists the known ones."""
    if not names:
        return list(STEPS)
    unknown = [n for n in names if n not in step_names()]
    if unknown:
        raise ValueError(f"unknown demo step(s) {', '.join(unknown)}; steps: {', '.join(step_names())}")
    return [s for s in STEPS if s.name in names]


def run_demo(ctx: DemoContext, names: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen steps; write `out/demo.json` (per-step seconds and results) and return it."""
    steps = select_steps(names)
    ctx.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"model": ctx.model, "steps": {}}
    for i, step in enumerate(steps, start=1):
        ctx.console.rule(f"[bold]step {i}/{len(steps)}: {step.name}[/] — {step.help}")
        t0 = time.perf_counter()
        step.run(ctx)
        report["steps"][step.name] = {"seconds": round(time.perf_counter() - t0, 2), **ctx.state.get(step.name, {})}
    (ctx.out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
