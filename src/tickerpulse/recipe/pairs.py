"""Training pairs that teach the student to answer about the target, not the post.

Twitter rows carry one label for the whole tweet. A row that names exactly one target (a cashtag, a bare
symbol or a company name, `symbols_of(..., names=True)`: what the stream asks about) is a single-target
question whose gold is that target's. Joining two such rows about different targets gives a text in which
each target has its own gold: asking about the first must answer the first row's label, about the second the
second's. With most pairs drawn with different labels, copying the text's overall mood to every target is
wrong half the time, so the model must read the part of the text about the target.

Each pair gives two records (one per target), `source` "pairs", each asking about its target through
`targets` (the one question rule, `Record.questions`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tickerpulse.data.records import Record, Target
from tickerpulse.task.questions import symbols_of

JOINERS = (" ", "\n", " | ", ". ", " ... ", "; ", " -- ", "\n\n")


def single_target(rows: Sequence[Record]) -> list[tuple[Record, str]]:
    """(row, its one symbol) for the labeled rows that name exactly one target."""
    out = []
    for r in rows:
        if r.label is None:
            continue
        syms = symbols_of(r.text, names=True)
        if len(syms) == 1:
            out.append((r, syms[0]))
    return out


def target_pairs(rows: Sequence[Record], n: int, seed: int, conflict_share: float = 0.7,
                 max_chars: int = 600) -> list[Record]:
    """2n records from n seeded pairs of single-target rows (different targets; `conflict_share` of the pairs
    with different labels, the others with the same label), each pair's two records asking about one target.

    Args:
        rows: training records (twitter train rows); only the single-target ones are used.
        n: pairs wanted (fewer when the rows allow fewer).
        seed: the same rows and seed give the same pairs.
        conflict_share: share of pairs whose labels differ (the rest share their label, so a joined text does
            not by itself mean "the two answers differ").
        max_chars: joined texts longer than this are skipped (the post limit the prompt keeps is 2000).
    """
    pool = single_target(rows)
    if n <= 0 or len(pool) < 2:
        return []
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, (r, _) in enumerate(pool):
        by_label.setdefault(r.label or "", []).append(i)
    out: list[Record] = []
    tries = 0
    while len(out) < 2 * n and tries < 50 * n:
        tries += 1
        i = rng.randrange(len(pool))
        a, sym_a = pool[i]
        conflict = rng.random() < conflict_share
        labels = [lab for lab in by_label if (lab != a.label) == conflict]
        if not labels:
            continue
        j = rng.choice(by_label[rng.choice(labels)])
        b, sym_b = pool[j]
        if i == j or sym_a == sym_b or a.text == b.text:
            continue
        # neither text may name the other's target: each question has one gold
        if sym_b in symbols_of(a.text, names=True) or sym_a in symbols_of(b.text, names=True):
            continue
        text = a.text.rstrip() + rng.choice(JOINERS) + b.text.lstrip()
        if len(text) > max_chars:
            continue
        pid = f"pair{len(out) // 2}"
        for row, sym in ((a, sym_a), (b, sym_b)):
            label = row.label or "neutral"
            target = Target(target=sym, score=None, ticker=sym, label=label)
            out.append(Record(id=f"{pid}:{row.id}:{sym}", text=text, label=label, source="pairs", score=None,
                              tickers=[sym], targets=[target], dataset="pairs"))
    return out


def paragraph_pairs(paragraphs: Sequence[Record], n: int, seed: int, conflict_share: float = 0.7,
                    max_chars: int = 1400) -> list[Record]:
    """News paragraphs with annotated entities (FinEntity train) joined two by two, one record per distinct
    entity of the joined text with its own paragraph's gold (`data.finentity.target_records`): in-domain text
    where entities of one post carry different labels far more often than in the data itself.

    Args:
        paragraphs: records with `targets` (FinEntity train paragraphs, before `target_records`).
        n: joined paragraphs wanted (fewer when the rows allow fewer).
        seed: the same rows and seed give the same records.
        conflict_share: share of joins in which the two paragraphs' labels differ (an entity of one has a
            label no entity of the other has); the others are drawn among the rest.
        max_chars: joined texts longer than this are skipped.
    """
    from tickerpulse.data.finentity import target_records

    pool = list({r.id: r for r in paragraphs if r.targets}.values())
    if n <= 0 or len(pool) < 2:
        return []
    rng = random.Random(seed)
    out: list[Record] = []
    made = tries = 0
    while made < n and tries < 50 * n:
        tries += 1
        a, b = rng.sample(pool, 2)
        names_a, names_b = {t.target for t in a.targets}, {t.target for t in b.targets}
        labels_a, labels_b = {t.label for t in a.targets}, {t.label for t in b.targets}
        if names_a & names_b or (labels_a != labels_b) != (rng.random() < conflict_share):
            continue
        text = a.text.rstrip() + rng.choice(JOINERS) + b.text.lstrip()
        if len(text) > max_chars:
            continue
        joined = Record(id=f"ppair{made}:{a.id}+{b.id}", text=text, label=a.label, source="pairs",
                        targets=[*a.targets, *b.targets], dataset="pairs")
        out += target_records([joined])[0]
        made += 1
    return out
