"""report.json / report.md of a distillation job: counts, agreement with gold, label and score
distributions, rejects with reasons, retries, tokens, cost, cache hits, timing."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from tickerpulse.data.formats import SPLITS
from tickerpulse.distill.select import Plan
from tickerpulse.distill.teacher import Item, Outcome, Teacher, endpoint_host, known_prices
from tickerpulse.task.contract import LABELS


class LabelledJob(Protocol):
    """What the report reads of a finished job (`distill.job._Job`)."""

    cfg: Any  # DistillConfig
    plan: Plan
    teacher: Teacher | None
    prompt: dict[str, Any]
    results: dict[int, Outcome]
    cached: set[int]
    cache_path: Path | None
    format_fallbacks: list[str]
    label_seconds: float

    def item(self, idx: int) -> Item: ...

    def verdict(self, idx: int) -> str: ...

_BINS = [round(-1 + 0.2 * i, 1) for i in range(11)]


def reason_kind(reason: str | None) -> str:
    """Group similar reasons: numbers become '#', the '(after N answers)' suffix is dropped."""
    text = re.sub(r"\s*\(after \d+ answers\)$", "", reason or "unknown")
    return re.sub(r"-?\d+(?:\.\d+)?", "#", text)[:160]


def _rate(agree: int, total: int) -> float | None:
    return round(agree / total, 4) if total else None


def build_report(job: LabelledJob, written: dict[str, list[int]], seconds: float, command: list[str] | None) -> dict[str, Any]:
    cfg, teacher = job.cfg, job.teacher
    assert teacher is not None

    processed = sorted(job.results)
    fresh = [i for i in processed if i not in job.cached]
    verdicts = Counter(job.verdict(i) for i in processed)
    rows_out = [i for s in written for i in written[s]]

    def agreement(indices: list[int]) -> dict[str, Any]:
        pairs = [(job.item(i).gold_label, job.results[i].answer["sentiment"]) for i in indices  # type: ignore[index]
                 if job.results[i].status == "ok" and job.item(i).gold_label]
        agree = sum(g == t for g, t in pairs)
        return {"rows_with_gold": len(pairs), "agree": agree, "rate": _rate(agree, len(pairs))}

    ok_idx = [i for i in processed if job.results[i].status == "ok"]
    confusion = {g: {t: 0 for t in LABELS} for g in LABELS}
    for i in ok_idx:
        gold = job.item(i).gold_label
        if gold:
            confusion[gold][job.results[i].answer["sentiment"]] += 1  # type: ignore[index]

    scores = [job.results[i].answer["score"] for i in rows_out]  # type: ignore[index]
    hist = [0] * (len(_BINS) - 1)
    for s in scores:
        hist[min(int((s + 1) / 0.2 + 1e-9), len(hist) - 1)] += 1
    by_label: dict[str, list[float]] = {lab: [] for lab in LABELS}
    for i in rows_out:
        ans = job.results[i].answer
        by_label[ans["sentiment"]].append(ans["score"])  # type: ignore[index]

    def problems(status: str) -> dict[str, Any]:
        idx = [i for i in processed if job.verdict(i) == status]
        kinds = Counter(reason_kind(job.results[i].reason) for i in idx)
        examples = [{"id": job.item(i).id, "reason": job.results[i].reason, "attempts": job.results[i].attempts}
                    for i in idx[:20]]
        return {"count": len(idx), "by_reason": dict(kinds.most_common()), "examples": examples}

    retries: Counter[str] = Counter()
    for i in fresh:
        retries.update(job.results[i].retries)
    tok_run = {"prompt": sum(job.results[i].prompt_tokens for i in fresh),
               "completion": sum(job.results[i].completion_tokens for i in fresh)}
    tok_all = {"prompt": sum(job.results[i].prompt_tokens for i in processed),
               "completion": sum(job.results[i].completion_tokens for i in processed)}
    if teacher.endpoint == "gold":
        prices: tuple[float, float] | None = (0.0, 0.0)
    elif cfg.price_in is not None and cfg.price_out is not None:
        prices = (cfg.price_in, cfg.price_out)
    else:
        prices = known_prices(teacher.model)

    def cost(tok: dict[str, int]) -> float | None:
        if prices is None:
            return None
        return round((tok["prompt"] * prices[0] + tok["completion"] * prices[1]) / 1e6, 6)

    requests = sum(job.results[i].attempts for i in fresh)
    return {
        "command": command or sys.argv,
        "config": json.loads(cfg.model_dump_json()),
        "teacher": {
            "model": teacher.model,
            "endpoint": endpoint_host(teacher.endpoint),
            "prompt_version": job.prompt["version"],
            "prompt_hash": job.prompt["hash"],
            "response_formats": dict(Counter(job.results[i].response_format or "none" for i in ok_idx)),
            "format_fallbacks": job.format_fallbacks,
        },
        "counts": {
            **job.plan.stats,
            "labelled": len(processed),
            "ok": verdicts["ok"] + verdicts["disagrees"],
            "rejected": verdicts["rejected"],
            "failed": verdicts["failed"],
            "dropped_disagreements": verdicts["disagrees"],
            "written": {s: len(written[s]) for s in written},
            "shortfall": {s: cfg.targets[s] - len(written[s]) for s in written if cfg.targets[s] > len(written[s])},
        },
        "agreement": {
            "labelled": agreement(processed),
            "written": agreement(rows_out),
            "per_split": {s: agreement(written[s]) for s in written},
            "confusion_gold_to_teacher": confusion,
        },
        "labels": {s: dict(Counter(job.results[i].answer["sentiment"] for i in written[s])) for s in written},  # type: ignore[index]
        "gold_labels": {s: dict(Counter(job.item(i).gold_label or "none" for i in written[s])) for s in written},
        "scores": {
            "bins": _BINS,
            "histogram": hist,
            "mean_by_label": {lab: round(sum(v) / len(v), 3) if v else None for lab, v in by_label.items()},
        },
        "rejects": problems("rejected"),
        "failures": problems("failed"),
        "retries": dict(retries),
        "tokens": {"this_run": tok_run, "dataset": tok_all},
        "cost_usd": {"this_run": cost(tok_run), "dataset": cost(tok_all),
                     "prices_per_1m_tokens": list(prices) if prices else None},
        "cache": {"path": str(job.cache_path) if job.cache_path else None, "hits": len(job.cached), "sent": len(fresh)},
        "timing": {"seconds": round(seconds, 2), "label_seconds": round(job.label_seconds, 2), "requests": requests,
                   "rows_per_s": round(len(fresh) / job.label_seconds, 2) if fresh and job.label_seconds > 0 else None},
    }


def write_report(report: dict[str, Any], out: Path) -> None:
    out = Path(out)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")


def render_markdown(r: dict[str, Any]) -> str:
    c, t, a = r["counts"], r["teacher"], r["agreement"]
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    lines = [
        "# Distillation report",
        "",
        f"Teacher **{t['model']}** at `{t['endpoint']}`, prompt {t['prompt_version']} (`{t['prompt_hash']}`), "
        f"response formats {t['response_formats'] or '-'}.",
        "",
        "| split | written | teacher labels | gold labels | agreement |",
        "|---|---|---|---|---|",
    ]
    for s in SPLITS:
        if s in c["written"]:
            lines.append(f"| {s} | {c['written'][s]} | {r['labels'][s]} | {r['gold_labels'][s]} | "
                         f"{pct(a['per_split'][s]['rate'])} |")
    lines += [
        "",
        f"- input rows {c['input_rows']}, exact duplicates dropped {c['exact_duplicates_dropped']}, "
        f"near-duplicate clusters {c['near_duplicate_clusters']} ({c['near_duplicate_rows']} rows, kept in one split), "
        f"candidates {c['candidates']}",
        f"- labelled {c['labelled']}: ok {c['ok']}, rejected {c['rejected']}, failed {c['failed']}, "
        f"dropped for disagreeing with gold {c['dropped_disagreements']}",
        f"- agreement with gold: {pct(a['labelled']['rate'])} of {a['labelled']['rows_with_gold']} labelled rows, "
        f"{pct(a['written']['rate'])} of the rows written",
        f"- cache: {r['cache']['hits']} hits, {r['cache']['sent']} rows sent ({r['timing']['requests']} requests) "
        f"in {r['timing']['label_seconds']} s of labelling ({r['timing']['rows_per_s']} rows/s; job {r['timing']['seconds']} s)",
        f"- tokens this run: {r['tokens']['this_run']}, whole dataset: {r['tokens']['dataset']}; cost USD this run "
        f"{r['cost_usd']['this_run']}, whole dataset {r['cost_usd']['dataset']}"
        + ("" if r["cost_usd"]["prices_per_1m_tokens"] else " (unknown model price: pass --price-in/--price-out)"),
        f"- retries: {r['retries'] or 'none'}",
    ]
    if c.get("shortfall"):
        lines.append(f"- **shortfall** (input pool exhausted): {c['shortfall']}")
    lines += ["", "## Confusion (rows: gold, columns: teacher)", "", "| gold | " + " | ".join(LABELS) + " |",
              "|---|" + "---|" * len(LABELS)]
    for g, row in a["confusion_gold_to_teacher"].items():
        lines.append(f"| {g} | " + " | ".join(str(row[x]) for x in LABELS) + " |")
    bins = r["scores"]["bins"]
    lines += ["", "## Score histogram (rows written)", "", "| score | rows |", "|---|---|"]
    lines += [f"| [{bins[i]}, {bins[i + 1]}) | {n} |" for i, n in enumerate(r["scores"]["histogram"])]
    for title, key in (("Rejected rows", "rejects"), ("Failed rows (transport errors; retried on a rerun)", "failures")):
        block = r[key]
        lines += ["", f"## {title}: {block['count']}", ""]
        lines += [f"- {n} x {reason}" for reason, n in block["by_reason"].items()] or ["none"]
    return "\n".join(lines) + "\n"
