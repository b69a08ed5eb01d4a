#!/usr/bin/env python
"""What company-name matching adds to ticker extraction, measured on FinEntity (news paragraphs with every
entity mention annotated; ../shared/data/finentity): per setting (`names` off = what training data uses,
on = what the stream uses) the mentions found, the share of them that lie on an annotated entity (a
mention elsewhere is a false find), the share of annotated entity mentions found, and the paragraphs that
get at least one ticker; and how many annotated entity names resolve to a symbol on their own
(`symbol_of_name`, for a client's or a dataset's named target). Entities include indices, central banks,
commodities and non-US firms that have no symbol in the table, so the found shares are floors, not recalls.

    python bench/ticker_names.py [--data ../shared/data/finentity/finentity.jsonl]
Writes bench/results/ticker_names.json (and prints a table).
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from tickerpulse.task.names import symbol_of_name
from tickerpulse.task.tickers import find_mentions

ROOT = Path(__file__).resolve().parents[1]


def measure(rows: list[dict], names: bool) -> dict:
    found = on_entity = entities = hit = paragraphs = 0
    off_entity: collections.Counter[str] = collections.Counter()
    for r in rows:
        text = r["text"]
        spans = [(e["start"], e["end"]) for e in r["entities"]]
        ms = find_mentions(text, names=names)
        cover = [(m.start, m.end) for m in ms]
        for m, (a, b) in zip(ms, cover):
            found += 1
            if any(a < e and s < b for s, e in spans):
                on_entity += 1
            else:
                off_entity[f"{text[a:b]} -> {m.symbol}"] += 1
        entities += len(spans)
        hit += sum(any(a < e and s < b for a, b in cover) for s, e in spans)
        paragraphs += bool(ms)
    return {"names": names, "mentions": found, "on_entity": round(on_entity / max(found, 1), 3),
            "entities": entities, "entities_found": round(hit / max(entities, 1), 3),
            "paragraphs": len(rows), "paragraphs_with_ticker": paragraphs,
            "off_entity_top": off_entity.most_common(10)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "finentity" / "finentity.jsonl")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.data.open(encoding="utf-8")]
    out = {"data": str(args.data.name), "settings": [measure(rows, names) for names in (False, True)]}
    targets = [e["name"] for r in rows for e in r["entities"]]
    resolved = [t for t in targets if symbol_of_name(t)]
    out["targets"] = {"mentions": len(targets), "with_symbol": round(len(resolved) / max(len(targets), 1), 3),
                      "distinct": len(set(targets)), "distinct_with_symbol": len(set(resolved))}
    for s in out["settings"]:
        print(f"names={s['names']!s:5s} mentions {s['mentions']:4d}, on an entity {s['on_entity']:.1%}, entities found "
              f"{s['entities_found']:.1%} of {s['entities']}, paragraphs with a ticker {s['paragraphs_with_ticker']}"
              f"/{s['paragraphs']}")
    t = out["targets"]
    print(f"entity names with a symbol: {t['with_symbol']:.1%} of {t['mentions']} mentions, "
          f"{t['distinct_with_symbol']} of {t['distinct']} distinct names")
    path = ROOT / "bench" / "results" / "ticker_names.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
