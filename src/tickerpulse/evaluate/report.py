"""Reports from eval results: `eval.md` for one system, and a self-contained HTML report for several systems
side by side (metric table, confusion matrices, per-class F1, score scatter, latency, disagreements).

Inputs are `EvalResult`s (eval.json), so any labeler the runner measured (base model, tuned model, the
served modes, a server over HTTP, a baseline) can appear in one report. The HTML has inline
CSS and PNGs embedded as base64 (also written next to it); every piece of data is HTML-escaped by Jinja's
autoescape, because posts and model answers are untrusted. Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import base64
import html
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from tickerpulse.evaluate.result import EvalResult, ItemRecord, SentimentMetrics, TextMetrics

Result = EvalResult
Row = tuple[str, list[Any], str, str]  # (label, values, kind: pct|num|int|sec, better: high|low|none)
Getter = Callable[[SentimentMetrics | TextMetrics], Any]


# ------------------------------------------------------------------------------------------- table rows
def _s(get: Callable[[SentimentMetrics], Any]) -> Getter:
    """A sentiment row's value; None for a text-task result."""
    return lambda m: get(m) if isinstance(m, SentimentMetrics) else None


def _class(m: SentimentMetrics, label: str, key: Literal["recall", "f1"]) -> float | None:
    c = m.per_class.get(label)
    return None if c is None else getattr(c, key)


def metric_rows(results: Sequence[Result]) -> list[Row]:
    """The comparison table: one row per metric that any system has."""
    ms = [r.metrics for r in results]
    spec: list[tuple[str, Getter, str, str]] = [("items", lambda m: m.n, "int", "none")]
    sentiment = [m for m in ms if isinstance(m, SentimentMetrics)]
    if sentiment:
        spec += [
            ("accuracy", _s(lambda m: m.accuracy), "pct", "high"),
            ("macro-F1", _s(lambda m: m.macro_f1), "pct", "high"),
            ("JSON-valid", _s(lambda m: m.json_valid), "pct", "high"),
            ("JSON found (prose around allowed)", _s(lambda m: m.json_found), "pct", "high"),
            ("schema-valid", _s(lambda m: m.schema_valid), "pct", "high"),
            ("invalid answers (counted wrong)", _s(lambda m: m.invalid), "int", "low"),
            ("accuracy, lenient label", _s(lambda m: m.accuracy_lenient), "pct", "high"),
        ]
        labels = list(dict.fromkeys(lab for m in sentiment for lab in m.per_class))
        for key, title in (("recall", "recall"), ("f1", "F1")):
            spec += [(f"{title} {lab}", _s(lambda m, lab=lab, key=key: _class(m, lab, key)), "pct", "high")
                     for lab in labels]
        spec += [
            ("score MAE", _s(lambda m: m.scores and m.scores.mae), "num", "low"),
            ("score Pearson", _s(lambda m: m.scores and m.scores.pearson), "num", "high"),
            ("score Spearman", _s(lambda m: m.scores and m.scores.spearman), "num", "high"),
            ("ticker precision", _s(lambda m: m.tickers and m.tickers.precision), "pct", "high"),
            ("ticker recall", _s(lambda m: m.tickers and m.tickers.recall), "pct", "high"),
        ]
    texts = [m.text or {} for m in ms]
    for name in dict.fromkeys(k for t in texts for k in t):
        for key in dict.fromkeys(k for t in texts for k in t.get(name, {}) if k != "pattern"):
            spec.append((name if key == "mean" else f"{name}: {key}",
                         lambda m, name=name, key=key: (m.text or {}).get(name, {}).get(key), "pct", "high"))
    spec += [
        ("latency mean (s/item)", lambda m: m.latency.latency_mean_s, "sec", "low"),
        ("latency p95 (s/item)", lambda m: m.latency.latency_p95_s, "sec", "low"),
        ("items/s", lambda m: m.latency.items_per_s, "num", "high"),
        ("generated tokens/s", lambda m: m.latency.tokens_per_s, "num", "high"),
        ("mean answer tokens", lambda m: m.latency.mean_answer_tokens, "num", "none"),
        ("answers cut at max_tokens", lambda m: m.latency.hit_max_tokens, "int", "low"),
    ]
    rows = []
    for label, get, kind, better in spec:
        values = [get(m) for m in ms]
        if any(v is not None for v in values):
            rows.append((label, values, kind, better))
    return rows


def fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * float(value):.1f}%"
    if kind == "int":
        return f"{int(value)}"
    if kind == "sec":
        return f"{float(value):.3f}"
    return f"{float(value):.3f}" if abs(float(value)) < 100 else f"{float(value):.0f}"


def _best(values: list[Any], better: str) -> set[int]:
    nums = [(i, float(v)) for i, v in enumerate(values) if v is not None]
    if better == "none" or len(nums) < 2:
        return set()
    target = (max if better == "high" else min)(v for _, v in nums)
    return {i for i, v in nums if v == target} if any(v != target for _, v in nums) else set()


# ------------------------------------------------------------------------------------------------ markdown
def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out)


def eval_markdown(result: Result) -> str:
    """The eval.md summary of one eval result."""
    m, cfg, data = result.metrics, result.config, result.data
    model = _system_name(result) + (f" + adapter {cfg['adapter']}" if cfg.get("adapter") else "")
    lines = [f"# Evaluation: {model}", "",
             f"- data: `{data.get('path', cfg.get('data'))}` ({data.get('n', m.n)} of {data.get('rows', '?')} items"
             f"{', seeded sample' if cfg.get('limit') else ''}), task {m.task}",
             f"- {_settings(result)}", ""]
    rows = [[label, fmt(values[0], kind)] for label, values, kind, _ in metric_rows([result])]
    lines += [_md_table(["metric", "value"], rows), ""]
    if isinstance(m, SentimentMetrics):
        conf = m.confusion
        lines += ["## Confusion matrix (rows: gold, columns: predicted)", "",
                  _md_table(["gold \\ pred", *conf.columns],
                            [[r, *map(str, row)] for r, row in zip(conf.rows, conf.matrix)]), ""]
    return "\n".join(lines)


def comparison_markdown(results: Sequence[Result]) -> str:
    """The metric table of several systems as markdown (report.md, docs)."""
    names = [r.name for r in results]
    rows = [[label, *(fmt(v, kind) for v in values)] for label, values, kind, _ in metric_rows(results)]
    return _md_table(["metric", *names], rows) + "\n"


# ---------------------------------------------------------------------------------------------------- plots
def _figure(n: int, width: float = 4.6, height: float = 4.0) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusions(results: Sequence[Result], path: Path) -> Path | None:
    """One heatmap per system: counts, colour = share of the gold row."""
    if not all(isinstance(r.metrics, SentimentMetrics) for r in results):
        return None
    confs = [(r.name, r.sentiment.confusion) for r in results]
    fig, axes = _figure(len(confs))
    for ax, (name, conf) in zip(axes, confs):
        mat = conf.matrix
        shares = [[v / max(1, sum(row)) for v in row] for row in mat]
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(conf.columns)), conf.columns, rotation=30)
        ax.set_yticks(range(len(conf.rows)), conf.rows)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(name)
        for i, row in enumerate(mat):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if shares[i][j] > 0.6 else "black")
    return _save(fig, path)


def plot_per_class(results: Sequence[Result], path: Path) -> Path | None:
    """Grouped bars: recall and F1 per class for each system."""
    if not all(isinstance(r.metrics, SentimentMetrics) and r.metrics.per_class for r in results):
        return None
    pcs = [(r.name, r.sentiment.per_class) for r in results]
    labels = list(dict.fromkeys(lab for _, pc in pcs for lab in pc))
    fig, axes = _figure(2, 5.5, 3.6)
    width = 0.8 / len(pcs)
    for ax, key in zip(axes, ("recall", "f1")):
        for k, (name, pc) in enumerate(pcs):
            xs = [i + k * width - 0.4 + width / 2 for i in range(len(labels))]
            ax.bar(xs, [getattr(pc[lab], key) if lab in pc else 0.0 for lab in labels], width, label=name)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylim(0, 1)
        ax.set_title(f"per-class {key}")
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_scores(results: Sequence[Result], path: Path, seed: int = 0) -> Path | None:
    """Predicted score vs gold score (scatter with y = x); without gold scores, predicted score per gold
    class (jittered strip). Invalid answers have no score and are left out of the plot (not the metrics)."""
    if not all(r.metrics.task == "sentiment" for r in results):
        return None
    has_gold = any(it.gold_score is not None for r in results for it in r.items)
    fig, axes = _figure(len(results))
    rng = random.Random(seed)
    order = ["negative", "neutral", "positive"]
    for ax, r in zip(axes, results):
        items = [it for it in r.items if it.score is not None]
        if has_gold:
            pts = [(it.gold_score, it.score) for it in items if it.gold_score is not None]
            ax.scatter([g for g, _ in pts], [p for _, p in pts], s=10, alpha=0.5)
            ax.plot([-1, 1], [-1, 1], color="grey", lw=1, ls="--")
            ax.set_xlabel("gold score")
            ax.set_xlim(-1.05, 1.05)
        else:
            for k, lab in enumerate(order):
                ys = [it.score for it in items if it.gold_label == lab]
                ax.scatter([k + rng.uniform(-0.25, 0.25) for _ in ys], ys, s=8, alpha=0.4, label=lab)
            ax.set_xticks(range(3), order)
            ax.set_xlabel("gold label")
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel("predicted score")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"{r.name} ({len(items)} scored answers)")
    return _save(fig, path)


def plot_latency(results: Sequence[Result], path: Path) -> Path | None:
    """Per-item latency distribution per system, with tokens/s in the label."""
    lat = [[it.latency_s for it in r.items] for r in results]
    if not any(lat):
        return None
    fig, axes = _figure(1, 7.0, 3.4)
    speeds = [r.metrics.latency for r in results]
    names = [f"{r.name}\n" + (f"{s.tokens_per_s:.0f} tok/s" if s.tokens_per_s is not None
                                else f"{s.items_per_s or 0:.1f} items/s") for r, s in zip(results, speeds)]
    axes[0].boxplot(lat, vert=False, tick_labels=names)
    axes[0].set_xlabel("latency per item (s, from batch start to its last token)")
    return _save(fig, path)


PLOTS: list[tuple[str, str, Callable[..., Path | None]]] = [
    ("confusion", "Confusion matrices", plot_confusions),
    ("per_class", "Per-class recall and F1", plot_per_class),
    ("scores", "Predicted score vs gold", plot_scores),
    ("latency", "Latency", plot_latency),
]


# ----------------------------------------------------------------------------------------------- disagreements
def disagreements(results: Sequence[Result], limit: int = 100) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Items where the systems' answers differ (label for sentiment, answer text otherwise).

    Rows where exactly one system is right come first. Returns (rows, counts) where counts has
    total, and for two systems `<name> only right` for each.
    """
    names = [r.name for r in results]
    by_id = [{it.id: it for it in r.items} for r in results]
    ids = [it.id for it in results[0].items if all(it.id in b for b in by_id)]
    rows: list[dict[str, Any]] = []
    counts = {"total": 0, **{f"{n} only right": 0 for n in names}}
    for item_id in ids:
        its = [b[item_id] for b in by_id]
        keys = [it.label if it.label is not None else " ".join(it.prediction.split()) for it in its]
        if len(set(keys)) == 1:
            continue
        right = [it.correct if it.correct is not None else _text_correct(it) for it in its]
        counts["total"] += 1
        if sum(right) == 1:
            counts[f"{names[right.index(True)]} only right"] += 1
        rows.append({
            "id": item_id, "text": its[0].text, "gold": its[0].gold_label or its[0].gold or "",
            "answers": [{"name": n, "label": it.label or "", "right": ok, "prediction": it.prediction}
                        for n, it, ok in zip(names, its, right)],
            "rank": 0 if sum(right) == 1 else 1,
        })
    rows.sort(key=lambda r: r["rank"])
    return rows[:limit], counts


def _text_correct(item: ItemRecord) -> bool:
    tm = item.text_metrics or {}
    first = next(iter(tm.values()), False)
    return bool(first) if not isinstance(first, dict) else False


# ------------------------------------------------------------------------------------------------------- HTML
def write_html_report(results: Sequence[Result], out: str | Path, *, title: str = "tickerpulse comparison",
                      max_disagreements: int = 100, notes: Sequence[str] = ()) -> Path:
    """Write report.html (+ report.md and the PNGs) into `out`; returns the HTML path."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for key, caption, fn in PLOTS:
        png = fn(results, out / f"{key}.png")
        if png is not None:
            plots.append({"file": png.name, "caption": caption,
                          "data": base64.b64encode(png.read_bytes()).decode("ascii")})
    rows = []
    for label, values, kind, better in metric_rows(results):
        best = _best(values, better)
        cells = [{"text": fmt(v, kind), "best": i in best} for i, v in enumerate(values)]
        delta = None
        if len(values) == 2 and None not in values:
            d = float(values[1]) - float(values[0])
            delta = ("+" if d > 0 else "") + (f"{100 * d:.1f} pt" if kind == "pct" else fmt(d, kind))
        rows.append({"label": label, "cells": cells, "delta": delta, "better": better})
    dis, counts = disagreements(results, max_disagreements) if len(results) >= 2 else ([], {"total": 0})
    env = Environment(loader=PackageLoader("tickerpulse.evaluate", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    page = env.get_template("report.html.jinja").render(
        title=title,
        systems=[_system_info(r) for r in results],
        rows=rows,
        plots=plots,
        disagreements=dis,
        counts=counts,
        notes=list(notes),
        two=len(results) == 2,
    )
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    (out / "report.md").write_text(f"# {title}\n\n" + comparison_markdown(results), encoding="utf-8")
    return html_path


def _system_name(r: Result) -> str:
    """What was measured: the model (or the server's URL)."""
    return str(r.config.get("model") or r.config.get("url") or r.model.get("url") or r.model.get("model") or r.name)


def _settings(r: Result) -> str:
    """How it answered: the served mode, or the generation settings."""
    cfg = r.config
    mode = cfg.get("mode") or r.model.get("mode")
    if mode in ("fast", "reasoning") or cfg.get("max_tokens") is None:
        return f"mode {mode or 'labels'}" + (f", max_tokens {cfg.get('max_tokens')}" if mode == "reasoning" else "")
    return (f"generation: max_tokens {cfg.get('max_tokens')}, temperature {cfg.get('temperature')}, "
            f"batch {cfg.get('batch_size')}, seed {cfg.get('seed')}")


def _system_info(r: Result) -> dict[str, Any]:
    cfg, data = r.config, r.data
    return {"name": r.name, "model": _system_name(r), "adapter": cfg.get("adapter") or "",
            "data": data.get("path", cfg.get("data", "")), "n": r.metrics.n,
            "settings": f"{_settings(r)}, {r.model.get('dtype', '')}"}


def escape(text: str) -> str:
    """HTML-escape (for callers that build HTML outside the template)."""
    return html.escape(text, quote=True)
