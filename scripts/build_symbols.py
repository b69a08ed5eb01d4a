#!/usr/bin/env python
"""Build `src/tickerpulse/task/data/symbols.txt`: the known symbols the ticker extractor accepts as bare
upper-case words (cashtags need no list), and `names.txt`: company and coin names -> symbol, for the
opt-in name matching (`tickerpulse.task.names`; curated aliases and everyday-word flags live beside it in
`aliases.txt`, edited by hand, read at run time).

Sources (all public):
  1. US index constituents (Dow Jones, NASDAQ 100, S&P 100/500/600) from the `pytickersymbols` wheel on
     PyPI (MIT; its data is generated from Wikipedia). The wheel is fetched with `pip download` into a
     temp folder; nothing is installed.
  2. Cashtags used at least 3 times in twitter-financial-news-sentiment train + FiQA task 1
     (../shared/data; MIT / research), minus feed tags such as $COMDX (5 letters ending in X).
  3. A curated list of major crypto assets (symbols that social posts use for coins).
Names: each index constituent's name without a leading "The" and trailing legal words ("Apple Inc." ->
"Apple", "The Coca-Cola Company" -> "Coca-Cola", "Enact Holdings, Inc." -> "Enact"), and each curated
coin's name. A name that lands on two symbols (GOOG/GOOGL "Alphabet", or a mislabelled row of the source)
is left out and printed: pin it in aliases.txt.
Usage: python scripts/build_symbols.py [--shared-data ../shared/data] [--out PATH] [--names-out PATH]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PTS = "pytickersymbols==1.17.10"
US_INDICES = ["DOW JONES", "NASDAQ 100", "S&P 100", "S&P 500", "S&P 600"]
# Major coins by market capitalisation (curated by hand; symbols as social posts write them).
CRYPTO = {
    "BTC": "Bitcoin", "ETH": "Ethereum", "USDT": "Tether", "BNB": "BNB", "SOL": "Solana", "XRP": "XRP",
    "USDC": "USD Coin", "ADA": "Cardano", "DOGE": "Dogecoin", "TRX": "TRON", "AVAX": "Avalanche",
    "SHIB": "Shiba Inu", "DOT": "Polkadot", "LINK": "Chainlink", "MATIC": "Polygon", "POL": "Polygon",
    "LTC": "Litecoin", "BCH": "Bitcoin Cash", "XLM": "Stellar", "ATOM": "Cosmos", "XMR": "Monero",
    "ETC": "Ethereum Classic", "FIL": "Filecoin", "HBAR": "Hedera", "APT": "Aptos", "ARB": "Arbitrum",
    "NEAR": "NEAR Protocol", "ALGO": "Algorand", "UNI": "Uniswap", "AAVE": "Aave", "PEPE": "Pepe",
    "SUI": "Sui", "TON": "Toncoin", "ICP": "Internet Computer", "XTZ": "Tezos", "EOS": "EOS",
    "SAND": "The Sandbox", "MANA": "Decentraland", "AXS": "Axie Infinity", "CRO": "Cronos",
    "KAS": "Kaspa", "OP": "Optimism", "INJ": "Injective", "RNDR": "Render", "WIF": "dogwifhat",
    "BONK": "Bonk", "FLOKI": "Floki", "DAI": "Dai", "VET": "VeChain", "XDC": "XDC Network",
}


def us_constituents() -> tuple[dict[str, str], set[str]]:
    """symbol -> index name (a constituent's listed symbol and its Yahoo alternates: ADRs, share classes,
    old symbols), and the set of listed symbols (the one a company's name stands for)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", PTS, "-d", tmp], check=True)
        whl = next(Path(tmp).glob("pytickersymbols-*.whl"))
        with zipfile.ZipFile(whl) as z:
            src = z.read("pytickersymbols/indices_data.py").decode("utf-8")
    ns: dict = {}
    exec(compile(src, "indices_data.py", "exec"), ns)  # the wheel's generated data module (a dict literal)
    out: dict[str, str] = {}
    listed: set[str] = set()
    for name in US_INDICES:
        for c in ns["INDICES"][name]["companies"]:
            sym = c.get("symbol") or ""
            if re.fullmatch(r"[A-Z]{1,5}(\.[A-Z])?", sym):
                out.setdefault(sym, c["name"])
                listed.add(sym)
            for y in c.get("symbols", []):
                v = y.get("yahoo", "")
                if re.fullmatch(r"[A-Z]{1,5}(-[A-Z])?", v):
                    out.setdefault(v.replace("-", "."), c["name"])
    return out, listed


# Legal-form words dropped from the end of an official name (repeatedly: "Foo Holdings, Inc." -> "Foo").
LEGAL_TAIL = re.compile(r"(?:,?\s+(?:Inc\.?|Incorporated|Corporation|Corp\.?|Company|Co\.?|Ltd\.?|Limited|plc|PLC|"
                        r"N\.V\.|S\.A\.|LLC|L\.P\.|LP|Holdings?|Group|& Co\.?))+$")


def short_name(official: str) -> str:
    """"The Coca-Cola Company" -> "Coca-Cola": what posts call a company (the matcher accepts a legal word
    after it anyway: "Coca-Cola Co", "Target Corp")."""
    s = re.sub(r"\s*\([^()]*\)$", "", re.sub(r"^The\s+", "", official.strip()))  # "Buckle (clothing retailer)"
    # "Carnival Corporation & plc" -> "Carnival", "Eli Lilly and Company" -> "Eli Lilly"
    while (t := re.sub(r"(?:\s+(?:&|and))+$", "", LEGAL_TAIL.sub("", s).rstrip(" ,"))) != s:
        s = t
    return s or official.strip()


def name_rows(rows: dict[str, tuple[str, str]], listed: set[str],
              ) -> tuple[list[tuple[str, str, str]], dict[str, list[str]]]:
    """(name, symbol, source) rows from the index and crypto rows of the symbol table, and the names that
    land on several symbols (left out). A name stands for its company's listed symbol, not the alternates
    (ADRs, preferred shares, old symbols) that share its row in the source."""
    by_name: dict[str, dict[str, str]] = collections.defaultdict(dict)
    for sym, (_, src) in rows.items():
        kind, _, official = src.partition(":")
        if kind in ("index", "crypto") and official:
            by_name[short_name(official)].setdefault(sym, src)
    out, clashes = [], {}
    for name, syms in sorted(by_name.items()):
        syms = {s: src for s, src in syms.items() if s in listed or src.startswith("crypto:")} or syms
        if len(syms) == 1:
            (sym, src), = syms.items()
            out.append((name, sym, src))
        else:
            clashes[name] = sorted(syms)
    return out, clashes


def dataset_cashtags(shared: Path, min_count: int = 3) -> dict[str, int]:
    files = [shared / "twitter-financial-news-sentiment" / "train.jsonl", shared / "fiqa-sentiment" / "fiqa_task1.jsonl"]
    counts: collections.Counter[str] = collections.Counter()
    for f in files:
        if f.is_file():
            for line in f.open(encoding="utf-8"):
                counts.update({t.upper() for t in json.loads(line).get("tickers") or []})
    return {s: n for s, n in counts.items()
            if n >= min_count and re.fullmatch(r"[A-Z]{1,5}(\.[A-Z])?", s) and not (len(s) == 5 and s.endswith("X"))
            and s not in {"WIRES"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "src/tickerpulse/task/data/symbols.txt")
    ap.add_argument("--names-out", type=Path, default=ROOT / "src/tickerpulse/task/data/names.txt")
    args = ap.parse_args()
    rows: dict[str, tuple[str, str]] = {}
    constituents, listed = us_constituents()
    for sym, name in constituents.items():
        rows[sym] = ("equity", f"index:{name}")
    for sym, n in dataset_cashtags(args.shared_data).items():
        rows.setdefault(sym, ("equity", f"cashtag x{n}"))
    for sym, name in CRYPTO.items():
        rows[sym] = ("crypto", f"crypto:{name}")
    today = dt.date.today().isoformat()
    head = [
        "# Known symbols for bare upper-case ticker matching (cashtags need no list).",
        f"# Built {today} by scripts/build_symbols.py from: {PTS} (PyPI, MIT; US index constituents "
        f"{', '.join(US_INDICES)}, data generated from Wikipedia); cashtags used >= 3 times in "
        "twitter-financial-news-sentiment train + FiQA task 1; a curated list of major crypto assets.",
        "# Columns: symbol<TAB>asset_class<TAB>source",
    ]
    body = [f"{s}\t{a}\t{src.replace(chr(9), ' ')}" for s, (a, src) in sorted(rows.items())]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(head + body) + "\n", encoding="utf-8")
    kinds = collections.Counter(a for a, _ in rows.values())
    print(f"wrote {args.out}: {len(rows)} symbols ({dict(kinds)})")

    names, clashes = name_rows(rows, listed)
    head = [
        "# Company and coin names -> symbol, for name matching (tickerpulse.task.names; aliases.txt beside this",
        "# file adds common short forms, pins and everyday-word flags, and wins over this file).",
        f"# Built {today} by scripts/build_symbols.py from the index and crypto rows of symbols.txt: each "
        "official name without a leading 'The' and trailing legal words (Inc., Corporation, Holdings, Group, ...).",
        "# Columns: name<TAB>symbol<TAB>source",
    ]
    body = [f"{n}\t{s}\t{src.replace(chr(9), ' ')}" for n, s, src in names]
    args.names_out.write_text("\n".join(head + body) + "\n", encoding="utf-8")
    print(f"wrote {args.names_out}: {len(names)} names")
    for name, syms in clashes.items():
        print(f"  left out (several symbols; pin it in aliases.txt): {name} -> {', '.join(syms)}")


if __name__ == "__main__":
    main()
