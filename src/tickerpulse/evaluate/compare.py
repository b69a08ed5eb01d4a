"""`tickerpulse compare`: the base model and a fine-tuned one on the same items, then one HTML report.

The tuned side is either a standalone model folder (a fused model: it has config.json) or a training run
folder, whose adapter is applied on top of the base. Items are loaded once, so both systems see exactly
the same prompts; each system's eval.json/eval.md goes to `<out>/<name>/`, the report to `<out>/report.html`.
Models are loaded one after the other (never both in memory).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from tickerpulse.evaluate.items import load_items
from tickerpulse.evaluate.report import write_html_report
from tickerpulse.evaluate.result import EvalResult
from tickerpulse.evaluate.runner import EvalConfig, evaluate, write_eval


def tuned_side(tuned: str, base: str) -> tuple[str, str | None]:
    """(model, adapter) for `--tuned`: a model folder stands alone; a run folder's adapter goes on the base
    model the run was trained from (its own record, which may differ from `base`).

    Raises:
        FileNotFoundError / ModelNotFound: neither a run folder, a model folder nor a model name.
    """
    path = Path(tuned)
    if (path / "config.json").is_file():
        return str(path), None
    if path.exists():
        from tickerpulse.models.adapters import read_run

        return read_run(path).base_model, str(path)
    from tickerpulse.models.registry import resolve

    resolve(tuned)  # a named model (e.g. tickerpulse-sentiment): raises ModelNotFound with the choices
    return tuned, None


# Settings that must be equal for a saved base eval to stand in for a fresh one.
_SAME = ("model", "split", "limit", "task", "prompt_ticker", "max_tokens", "temperature", "top_p", "seed",
         "stop", "device", "dtype")


def compare(base_cfg: EvalConfig, tuned: str, out: str | Path, *, progress: bool = True,
            max_disagreements: int = 100, title: str | None = None,
            reuse_base: str | Path | None = None) -> tuple[list[EvalResult], Path]:
    """Evaluate `base_cfg.model` and the tuned side on the same items; write both evals and the report.

    Args:
        base_cfg: the eval settings (model = base); the tuned run reuses them with its model/adapter.
        tuned: run folder (adapter on the base) or standalone model folder / named model.
        out: report folder.
        reuse_base: an eval.json (or its folder) of the base model made earlier with the same settings and
            items: used instead of generating the base answers again (one base eval, many tuned runs).

    Returns:
        ([base_result, tuned_result], path of report.html)
    """
    out = Path(out)
    assert base_cfg.model is not None
    model, adapter = tuned_side(tuned, base_cfg.model)
    tuned_cfg = base_cfg.model_copy(update={"model": model, "adapter": adapter, "out": str(out / "tuned")})
    base_cfg = base_cfg.model_copy(update={"adapter": None, "out": str(out / "base")})
    items, task, info = load_items(base_cfg.data, split=base_cfg.split, limit=base_cfg.limit, seed=base_cfg.seed,
                                   task=base_cfg.task, prompt_ticker=base_cfg.prompt_ticker)
    results = []
    for name, cfg in (("base", base_cfg), ("tuned", tuned_cfg)):
        if name == "base" and reuse_base is not None:
            res = _reusable(EvalResult.load(reuse_base), base_cfg, info, reuse_base)
            write_eval(res, out / name)
            results.append(res)
            continue
        res = evaluate(cfg, items=items, task=task, data_info=info, label=name, progress=progress, write=False)
        write_eval(res, cfg.out or out / name)
        results.append(res)
        gc.collect()
    path = write_html_report(results, out, title=title or f"Base vs fine-tuned: {Path(info['path']).name}",
                             max_disagreements=max_disagreements, notes=_notes(results))
    return results, path


def _reusable(saved: EvalResult, cfg: EvalConfig, info: dict[str, Any], where: Any) -> EvalResult:
    """The saved base eval, renamed "base", after checking it was made with the same settings and items.

    Raises:
        ConfigError: naming the first setting (or the item set) that differs.
    """
    from tickerpulse.config import ConfigError

    old = saved.config
    for key in _SAME:
        if old.get(key) != getattr(cfg, key):
            raise ConfigError(f"--reuse-base {where}: it was made with {key}={old.get(key)!r}, this compare uses "
                              f"{getattr(cfg, key)!r}; rerun without --reuse-base")
    if old.get("adapter"):
        raise ConfigError(f"--reuse-base {where}: that eval has an adapter ({old['adapter']}), it is not the base model")
    if (Path(saved.data.get("path", "")).resolve() != Path(info["path"]).resolve()
            or saved.data.get("fingerprint") != info.get("fingerprint")):
        raise ConfigError(f"--reuse-base {where}: it covers different items than this compare")
    return saved.model_copy(update={"name": "base", "reused_from": str(where)})


def report_from_evals(paths: list[str | Path], out: str | Path, names: list[str] | None = None,
                      title: str = "tickerpulse comparison", max_disagreements: int = 100) -> Path:
    """Rebuild a report from existing eval.json files (no generation)."""
    results = [EvalResult.load(p) for p in paths]
    for i, r in enumerate(results):
        if names and i < len(names):
            r.name = names[i]
    ids = [[it.id for it in r.items] for r in results]
    if any(set(i) != set(ids[0]) for i in ids[1:]):
        raise ValueError("the eval results cover different items: compare them only on the same data and --limit/--seed")
    return write_html_report(results, out, title=title, max_disagreements=max_disagreements, notes=_notes(results))


def _notes(results: list[EvalResult]) -> list[str]:
    notes = []
    cfg, data = results[0].config, results[0].data
    if cfg.get("limit"):
        notes.append(f"A seeded random sample (seed {cfg.get('seed')}) of {data.get('n')} of {data.get('rows')} items.")
    if results[0].metrics.task == "sentiment":
        notes.append("JSON-valid: the whole answer is one JSON object. Schema-valid: a JSON object (prose around it "
                     "tolerated) that passes the answer schema; only schema-valid answers get a label.")
    return notes
