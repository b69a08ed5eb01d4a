#!/usr/bin/env python
"""Build `src/tickerpulse/task/data/symbols.txt`: the known symbols the ticker extractor accepts as bare
upper-case words (cashtags need no list).

Sources (all public):
  1. US index constituents (Dow Jones, NASDAQ 100, S&P 100/500/600) from the `pytickersymbols` wheel on
     PyPI (MIT; its data is generated from Wikipedia). The wheel is fetched with `pip download` into a
     temp folder; nothing is installed.
  2. Cashtags used at least 3 times in twitter-financial-news-sentiment train + FiQA task 1
     (../shared/data; MIT / research), minus feed tags such as $COMDX (5 letters ending in X).
  3. A curated list of major crypto assets (symbols that social posts use for coins).
Usage: python scripts/build_symbols.py [--shared-data ../shared/data] [--out PATH]
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


def us_constituents() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", PTS, "-d", tmp], check=True)
        whl = next(Path(tmp).glob("pytickersymbols-*.whl"))
        with zipfile.ZipFile(whl) as z:
            src = z.read("pytickersymbols/indices_data.py").decode("utf-8")
    ns: dict = {}
    exec(compile(src, "indices_data.py", "exec"), ns)  # the wheel's generated data module (a dict literal)
    out: dict[str, str] = {}
    for name in US_INDICES:
        for c in ns["INDICES"][name]["companies"]:
            sym = c.get("symbol") or ""
            if re.fullmatch(r"[A-Z]{1,5}(\.[A-Z])?", sym):
                out.setdefault(sym, c["name"])
            for y in c.get("symbols", []):
                v = y.get("yahoo", "")
                if re.fullmatch(r"[A-Z]{1,5}(-[A-Z])?", v):
                    out.setdefault(v.replace("-", "."), c["name"])
    return out


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
    args = ap.parse_args()
    rows: dict[str, tuple[str, str]] = {}
    for sym, name in us_constituents().items():
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


if __name__ == "__main__":
    main()
