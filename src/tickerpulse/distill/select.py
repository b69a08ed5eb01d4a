"""Deterministic selection: drop exact duplicates, then deal whole near-duplicate groups to per-split queues.

Texts are compared after the data stage's normalisation (`tickerpulse.data.split.normalize_text`), so a
headline posted twice with different t.co links about the same target is an exact duplicate: the first is
kept, the rest dropped (and counted, with how often their gold labels conflict); the same text asked about
another target is another question. The splitting itself is the data stage's one
splitter (`data.split.group_keys` + `split_groups`): near-duplicate clusters (character 5-gram Jaccard >=
`near_dup_threshold`) never straddle train/valid/test, so the student is never tested on a paraphrase of a
training row; each split's queue is stratified by gold label when there is one and in seeded order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tickerpulse.data.formats import SPLITS
from tickerpulse.data.records import Record
from tickerpulse.data.split import group_keys, normalize_text, split_groups


@dataclass
class Plan:
    """The candidates (deduplicated input rows) and, per split, the order in which to label them."""

    rows: list[Record]
    cluster: list[int]  # per row: the index of the first row of its near-duplicate group
    queues: dict[str, list[int]]
    stats: dict[str, int] = field(default_factory=dict)


def plan_splits(
    rows: list[Record],
    targets: dict[str, int],
    seed: int = 0,
    near_dup_threshold: float = 0.8,
    drop_near_duplicates: bool = False,
) -> Plan:
    """Deduplicate `rows` and deal whole near-duplicate groups to the splits.

    Each wanted split gets a queue covering its share of the whole pool in proportion to `targets`, so when
    the teacher rejects a row the job takes the next one from the same queue without breaking group
    separation. A split with target 0 gets no queue; a wanted split gets a group whenever the pool has at
    least as many groups as there are wanted splits.

    Args:
        rows: input records in input order (labeled or not).
        targets: wanted rows per split, e.g. {"train": 500, "valid": 100, "test": 100}.
        seed: the split's seed.
        near_dup_threshold: see `data.split.group_keys`; >= 1 disables near-duplicate grouping.
        drop_near_duplicates: keep only the first member of each group instead of keeping all of them
            in one split.
    """
    stats = {"input_rows": len(rows), "empty_dropped": 0, "exact_duplicates_dropped": 0, "duplicate_gold_conflicts": 0}
    seen: dict[str, int] = {}
    kept: list[Record] = []
    for row in rows:
        text = normalize_text(row.text)
        if not text:
            stats["empty_dropped"] += 1
            continue
        # a duplicate is the same question: the same text about the same target (one paragraph asked about
        # two entities is two questions; the text-level grouping below keeps them in one split)
        norm = f"{text}\x00{row.questions()[0].target or ''}"
        if norm in seen:
            stats["exact_duplicates_dropped"] += 1
            first = kept[seen[norm]]
            if row.label and first.label and row.label != first.label:
                stats["duplicate_gold_conflicts"] += 1
            continue
        seen[norm] = len(kept)
        kept.append(row)
    keys = group_keys([r.text for r in kept], near_dup_threshold, seed)
    first: dict[str, int] = {}
    cluster = [first.setdefault(k, i) for i, k in enumerate(keys)]
    sizes = Counter(cluster)
    stats["near_duplicate_clusters"] = sum(1 for n in sizes.values() if n > 1)
    stats["near_duplicate_rows"] = sum(n for n in sizes.values() if n > 1)
    pool = list(range(len(kept)))
    if drop_near_duplicates:
        stats["near_duplicates_dropped"] = sum(n - 1 for n in sizes.values() if n > 1)
        pool = [i for i in pool if cluster[i] == i]
    active = [s for s in SPLITS if targets.get(s, 0) > 0]
    queues: dict[str, list[int]] = {s: [] for s in SPLITS}
    if active:
        total = sum(targets[s] for s in active)
        # the first wanted split takes what the others' shares leave (train, unless it is not wanted)
        fractions = {s: targets[s] / total for s in active[1:]}
        labels = [kept[i].label for i in pool] if any(kept[i].label for i in pool) else None
        parts = split_groups([keys[i] for i in pool], labels, fractions, seed, rest=active[0])
        for s in active:
            queues[s] = [pool[j] for j in parts[s]]
    stats["candidates"] = sum(len(q) for q in queues.values())
    return Plan(rows=kept, cluster=cluster, queues=queues, stats=stats)
