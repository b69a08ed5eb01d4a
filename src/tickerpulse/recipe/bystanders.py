"""Bystander questions: a post names someone who is not what the post is about, and that one is neutral.

Financial news names its sources next to its subject: the data provider ("according to Refinitiv data"), the
broker whose analyst is quoted ("said analysts at Jefferies"), the outlet that reported it, the platform it
spread on. Annotated entity data (FinEntity) labels such a bystander neutral while the subject of the same
sentence is positive or negative, and a small student reads the sentence's mood onto every name in it. The
tweet pairs (`recipe.pairs`) teach that two halves of a text can disagree; these teach that one sentence can
name a target it says nothing about.

A single-target twitter row (its one symbol, `pairs.single_target`) gets one attribution clause naming a
bystander from a fixed public vocabulary of well-known providers, brokers, outlets and platforms (none named
in the row already), and becomes two records: the row's target with the row's label (a source does not change
the news), and the bystander, asked by name, neutral. `source` is "pairs", so the pairs' settings apply.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tickerpulse.data.records import Record, Target
from tickerpulse.recipe.pairs import single_target
from tickerpulse.task.contract import resolve_target
from tickerpulse.task.marking import target_spans

# role -> names: widely cited market-data vendors, sell-side brokers, news outlets, social platforms
BYSTANDERS: dict[str, tuple[str, ...]] = {
    "data": ("Refinitiv", "LSEG", "FactSet", "Bloomberg", "S&P Global Market Intelligence", "Morningstar",
             "Dealogic", "IBES", "Preqin", "EPFR", "Kpler", "Sensor Tower", "Placer.ai", "Cox Automotive"),
    "broker": ("Jefferies", "Morgan Stanley", "Goldman Sachs", "Citi", "JPMorgan", "Bank of America", "Barclays",
               "UBS", "Deutsche Bank", "Bernstein", "Wedbush", "Evercore ISI", "Raymond James", "Piper Sandler",
               "Baird", "Stifel", "Oppenheimer", "Needham", "KeyBanc", "Truist", "Mizuho", "Nomura", "Macquarie",
               "RBC Capital Markets", "BMO Capital Markets", "Wolfe Research", "Canaccord Genuity", "Instinet"),
    "news": ("Reuters", "Bloomberg News", "CNBC", "the Wall Street Journal", "the Financial Times", "Barron's",
             "MarketWatch", "Dow Jones", "Nikkei", "Axios"),
    "platform": ("Reddit", "StockTwits", "YouTube", "TikTok", "Discord"),
}

# role -> clauses around the post ({post}) naming the bystander ({name})
TEMPLATES: dict[str, tuple[str, ...]] = {
    "data": ("{post}, according to {name} data.", "{post} (data: {name})", "Data compiled by {name}: {post}",
             "{post}, figures from {name} showed."),
    "broker": ("{post}, said analysts at {name}.", "{name} analysts weigh in: {post}",
               "{post} -- {name} note to clients", "{post}, a {name} strategist said."),
    "news": ("{post} ({name} reports)", "{name}: {post}", "{post}, {name} reported.", "As reported by {name}, {post}"),
    "platform": ("{post} -- trending on {name}", "Posted on {name}: {post}", "{post} (shared widely on {name})",
                 "{post}, traders on {name} noted."),
}


def bystander_records(rows: Sequence[Record], n: int, seed: int, polar_share: float = 0.8,
                      max_chars: int = 600) -> list[Record]:
    """2n records from n seeded single-target rows, each with a bystander clause: the row's target with its
    label and the bystander (by name) neutral.

    Args:
        rows: training records (twitter train rows); only the single-target ones are used.
        n: texts wanted (fewer when the rows allow fewer).
        seed: the same rows and seed give the same records.
        polar_share: share of texts drawn from positive or negative rows (the rest from any row): a neutral
            bystander beside a polar target is the case a student gets wrong.
        max_chars: texts longer than this are skipped.
    """
    pool = single_target(rows)
    polar = [p for p in pool if p[0].label in ("positive", "negative")]
    if n <= 0 or not pool:
        return []
    rng = random.Random(f"bystanders:{seed}")  # not the pairs' draws from the same rows
    roles = sorted(BYSTANDERS)
    out: list[Record] = []
    tries = 0
    while len(out) < 2 * n and tries < 20 * n:
        tries += 1
        draw = polar if polar and rng.random() < polar_share else pool
        row, sym = draw[rng.randrange(len(draw))]
        role = rng.choice(roles)
        name = rng.choice(BYSTANDERS[role])
        template = rng.choice(TEMPLATES[role])
        shown = name[0].upper() + name[1:] if template.startswith("{name}") else name  # "The Financial Times: ..."
        text = template.format(post=row.text.strip().rstrip("."), name=shown)
        # the bystander must be new to the post, by name, alias or symbol (the matcher the prompt marks with), so
        # it is not the target either: one gold per question
        if len(text) > max_chars or target_spans(row.text, *resolve_target(name.removeprefix("the "))):
            continue
        label = row.label or "neutral"
        bid = f"bys{len(out) // 2}:{row.id}"
        out.append(Record(id=f"{bid}:{sym}", text=text, label=label, source="pairs", tickers=[sym], dataset="pairs",
                          targets=[Target(target=sym, score=None, ticker=sym, label=label)]))
        out.append(Record(id=f"{bid}:{name}", text=text, label="neutral", source="pairs", tickers=[sym],
                          dataset="pairs", targets=[Target(target=name, score=None, label="neutral")]))
    return out
