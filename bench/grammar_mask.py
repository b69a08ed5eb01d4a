#!/usr/bin/env python
"""Time per token of the response_format token mask: the grammar engine that serves, on fixed JSON documents.

For each schema a fixed valid document is replayed token by token with the model's tokenizer, as a model
would write it: at each step the constraint's mask is computed (the timed part), then the longest allowed
vocabulary token that continues the document is accepted and the text the grammar forces is fed as its
tokens, exactly as the server's decode loop does. The same documents, schemas and tokenizer serve both
engines, so the numbers compare the old hand-written automaton (`serve/constrained.py` + `serve/tokenmask.py`,
deleted in the move to llguidance) with the llguidance matcher that replaced it:

    python bench/grammar_mask.py                                    # the current engine (llguidance)
    mkdir -p /tmp/old && git archive 003248c src | tar -x -C /tmp/old   # the tree before the move
    PYTHONPATH=/tmp/old/src python bench/grammar_mask.py            # ... measures the automaton

Writes bench/results/grammar_mask_<engine>.json; when both files exist it prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"enum": ["growth", "value", "income"]}, "maxItems": 3},
        "kind": {"$ref": "#/$defs/kind"},
        "bio": {"type": "string", "maxLength": 400},
    },
    "required": ["name", "age", "score", "tags", "kind", "bio"],
    "additionalProperties": False,
    "$defs": {"kind": {"type": "string", "enum": ["retail", "institutional"]}},
}
SENTIMENT = {
    "type": "object",
    "properties": {"ticker": {"type": ["string", "null"]}, "sentiment": {"enum": ["negative", "neutral", "positive"]},
                   "score": {"type": "number", "minimum": -1, "maximum": 1},
                   "reasoning": {"type": "string", "maxLength": 400}},
    "required": ["ticker", "sentiment", "score", "reasoning"], "additionalProperties": False,
}
CASES = {
    "person": (PERSON, {"name": "Ada Lovelace", "age": 36, "score": 0.875, "tags": ["growth", "income"],
                        "kind": "institutional",
                        "bio": "Long-term investor who follows semiconductor earnings and reads every 10-K twice."}),
    "sentiment": (SENTIMENT, {"ticker": "NVDA", "sentiment": "positive", "score": 0.62,
                              "reasoning": "Revenue beat estimates and guidance was raised, which investors read as "
                                           "a sign of durable demand for data-center chips."}),
    "json_object": ({"type": "object"}, {"a": [1, 2.5, {"b": None}], "c": "free text, any keys", "d": True}),
}


class Tokens:
    """Decoded text of every vocabulary id (ids that decode to a partial UTF-8 piece get "")."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        anchor = tok.convert_tokens_to_ids("a")
        head = tok.decode([anchor])
        texts = tok.batch_decode([[anchor, i] for i in range(len(tok))], clean_up_tokenization_spaces=False)
        special = set(tok.all_special_ids)
        self.strs = ["" if i in special or "\ufffd" in t else t[len(head):] for i, t in enumerate(texts)]

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])


class _Old:
    """The automaton's API (text in, text out) in the shape the replay needs."""

    def __init__(self, con: Any, toks: Tokens) -> None:
        self.con, self.toks = con, toks

    def forced(self) -> tuple[str, int]:
        text = self.con.forced()
        return text, len(self.toks.encode(text)) if text else 0

    def mask(self, budget: int) -> Any:
        return self.con.mask(budget).numpy()

    def accept(self, t: int, budget_after: int) -> bool:
        return self.con.accept(t)

    def done(self) -> bool:
        return self.con.done()


class _New:
    """The llguidance constraint (token ids in and out)."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def forced(self) -> tuple[str, int]:
        ids = self.con.forced_ids()
        return self.con.tok.decode_str(ids), len(ids)

    def mask(self, budget: int) -> Any:
        return self.con.mask(budget)

    def accept(self, t: int, budget_after: int) -> bool:
        return self.con.accept(t, budget_after)

    def done(self) -> bool:
        return self.con.done()


def make_constraint(schema: dict, tok: Any, toks: Tokens, vocab_size: int, budget: int) -> tuple[str, Any]:
    """(engine name, constraint) for whichever engine this checkout has."""
    try:
        from tickerpulse.serve import constrained as C  # the automaton (before the move)
        from tickerpulse.serve.tokenmask import JsonConstraint, TokenVocab

        node = C.FREE_OBJ if schema == {"type": "object"} else C.compile_schema(schema)
        return "automaton", _Old(JsonConstraint(node, TokenVocab.get(tok, vocab_size), {tok.eos_token_id}), toks)
    except ImportError:
        from tickerpulse.serve.constraint import GrammarConstraint
        from tickerpulse.serve.grammar import compile_schema, grammar_tokenizer

        g = compile_schema(schema, grammar_tokenizer(tok, vocab_size, [tok.eos_token_id]))
        return "llguidance", _New(GrammarConstraint(g, budget))


def replay(schema: dict, doc: Any, tok: Any, toks: Tokens, vocab_size: int, budget: int) -> dict:
    text = json.dumps(doc, ensure_ascii=False, separators=(", ", ": "))
    t0 = time.perf_counter()
    engine, con = make_constraint(schema, tok, toks, vocab_size, budget)
    compile_s = time.perf_counter() - t0
    written, used = con.forced()
    times: list[float] = []
    steps: list[float] = []  # mask + accept + forced: all the constraint costs per sampled token
    while not con.done() and len(written) < len(text):
        t = time.perf_counter()
        allowed = con.mask(budget - used)
        times.append(time.perf_counter() - t)
        if allowed is None:
            raise RuntimeError(f"{engine}: budget {budget} too small for the document (the closing was forced)")
        rest = text[len(written):]
        best = max((i for i, s in enumerate(toks.strs[: len(allowed)]) if s and allowed[i] and rest.startswith(s)),
                   key=lambda i: len(toks.strs[i]), default=None)
        if best is None:
            raise RuntimeError(f"{engine}: no allowed token continues {written!r} -> {rest[:20]!r}")
        t2 = time.perf_counter()
        assert con.accept(best, budget - used - 1)
        written += toks.strs[best]
        used += 1
        forced, n = con.forced()
        steps.append(times[-1] + time.perf_counter() - t2)
        written += forced
        used += n
    if written != text:
        raise RuntimeError(f"{engine}: wrote {written!r}, expected {text!r}")
    ms = [x * 1000 for x in times]
    return {"engine": engine, "masks": len(ms), "tokens": used, "compile_ms": compile_s * 1000,
            "mask_ms_mean": statistics.mean(ms), "mask_ms_p50": statistics.median(ms),
            "mask_ms_p95": sorted(ms)[int(0.95 * (len(ms) - 1))], "mask_ms_max": max(ms), "mask_ms_total": sum(ms),
            "step_ms_mean": statistics.mean(steps) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3, help="replays per schema (the first one is a cold cache)")
    ap.add_argument("--budget", type=int, default=512, help="max_tokens given to the constraint (near the document's "
                    "length, ~40-50 tokens, llguidance's closing is recomputed at every token)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    from transformers import AutoConfig

    from tickerpulse.models import resolve
    from tickerpulse.models.loading import load_tokenizer

    path = resolve(args.model)
    tok = load_tokenizer(path)
    vocab_size = AutoConfig.from_pretrained(path).vocab_size
    toks = Tokens(tok)
    results = []
    for name, (schema, doc) in CASES.items():
        runs = [replay(schema, doc, tok, toks, vocab_size, args.budget) for _ in range(args.repeats)]
        warm = runs[1:] or runs
        r = {"schema": name, **{k: v for k, v in runs[-1].items() if not k.startswith("mask_ms")},
             "cold_mask_ms_mean": runs[0]["mask_ms_mean"], "cold_mask_ms_max": runs[0]["mask_ms_max"],
             "cold_compile_ms": runs[0]["compile_ms"],
             "mask_ms_mean": statistics.mean(x["mask_ms_mean"] for x in warm),
             "mask_ms_p50": statistics.mean(x["mask_ms_p50"] for x in warm),
             "mask_ms_p95": statistics.mean(x["mask_ms_p95"] for x in warm),
             "mask_ms_max": max(x["mask_ms_max"] for x in warm),
             "step_ms_mean": statistics.mean(x["step_ms_mean"] for x in warm)}
        results.append(r)
        print(f"{r['engine']:10s} {name:12s} {r['masks']:3d} masks  cold {r['cold_mask_ms_mean']:8.3f} ms/token  "
              f"warm mean {r['mask_ms_mean']:7.3f}  p50 {r['mask_ms_p50']:7.3f}  p95 {r['mask_ms_p95']:7.3f}  "
              f"mask+accept+forced {r['step_ms_mean']:7.3f}  compile {r['cold_compile_ms']:7.1f} ms", flush=True)
    engine = results[0]["engine"]
    out = {"engine": engine, "model": args.model, "budget": args.budget, "repeats": args.repeats, "results": results,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                       "load1": round(os.getloadavg()[0], 2)},
           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path_out = args.out_dir / f"grammar_mask_{engine}.json"
    path_out.write_text(json.dumps(out, indent=2))
    print(f"wrote {path_out}")
    other = args.out_dir / f"grammar_mask_{'llguidance' if engine == 'automaton' else 'automaton'}.json"
    if other.is_file():
        prev = {r["schema"]: r for r in json.loads(other.read_text())["results"]}
        for r in results:
            if r["schema"] in prev:
                p = prev[r["schema"]]
                print(f"  {r['schema']:12s} warm mean {p['engine']} {p['mask_ms_mean']:.3f} ms vs {r['engine']} "
                      f"{r['mask_ms_mean']:.3f} ms (cold {p['cold_mask_ms_mean']:.3f} vs {r['cold_mask_ms_mean']:.3f}; "
                      f"mask+accept+forced {p.get('step_ms_mean', float('nan')):.3f} vs {r['step_ms_mean']:.3f})")


if __name__ == "__main__":
    main()
