"""Deterministic selection: drop exact duplicates, cluster near-duplicates, assign whole clusters to splits.

Texts are compared after the data stage's normalisation (`tickerpulse.data.split.normalize_text`: NFKC,
lower case, URLs and punctuation removed), so a headline posted twice with different t.co links counts as
an exact duplicate, exactly as `tickerpulse data split` groups it. Near-duplicates are found with MinHash over
character 5-grams and LSH banding (16 bands x 4 rows, so pairs above ~0.5 Jaccard become candidates) and then
confirmed with the exact Jaccard similarity; a cluster never straddles train/valid/test, so the student is
never tested on a paraphrase of a training row.

Known limitation: clusters are transitive (A~B and B~C puts A and C together even when A and C differ more);
with the default threshold this only merges families of templated headlines, which is what we want.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

import numpy as np

from tickerpulse.data.split import normalize_text  # the same grouping key as `tickerpulse data split`
from tickerpulse.distill.inputs import RawRow

__all__ = ["SPLIT_ORDER", "Plan", "near_duplicate_clusters", "normalize_text", "plan_splits", "shingles"]

SPLIT_ORDER = ("train", "valid", "test")
_NUM_PERM, _BANDS = 64, 16


def shingles(norm: str, k: int = 5) -> set[int]:
    """Stable 32-bit hashes of the character k-grams of a normalised text."""
    if len(norm) <= k:
        return {zlib.crc32(norm.encode())}
    data = norm.encode()
    return {zlib.crc32(data[i : i + k]) for i in range(len(data) - k + 1)}


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicate_clusters(norms: list[str], threshold: float, seed: int = 0) -> list[int]:
    """Cluster id (index of the cluster's first member) for each text; singletons are their own cluster.

    Args:
        norms: normalised texts.
        threshold: Jaccard similarity of 5-gram sets at or above which two texts are near-duplicates;
            >= 1.0 disables near-duplicate detection.
    """
    parent = list(range(len(norms)))
    if threshold >= 1.0 or len(norms) < 2:
        return parent

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    sets = [shingles(n) for n in norms]
    rng = np.random.default_rng(seed)
    sig = _minhash(sets, rng)
    per_band = _NUM_PERM // _BANDS
    mix = rng.integers(1, 2**63, size=per_band, dtype=np.uint64) | np.uint64(1)
    checked: set[tuple[int, int]] = set()
    with np.errstate(over="ignore"):
        for band in range(_BANDS):
            # one 64-bit key per (text, band); equal keys = same bucket (a rare collision only adds a candidate)
            keys = (sig[:, band * per_band : (band + 1) * per_band].astype(np.uint64) * mix).sum(axis=1)
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
            sizes = np.diff(np.r_[starts, len(keys)])
            for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
                group = order[start : start + size]
                for x in range(len(group)):
                    for y in range(x + 1, len(group)):
                        i, j = int(group[x]), int(group[y])
                        if (i, j) in checked:
                            continue
                        checked.add((i, j))
                        ri, rj = find(i), find(j)
                        if ri == rj:
                            continue
                        li, lj = len(sets[i]), len(sets[j])
                        if min(li, lj) < threshold * max(li, lj):  # Jaccard <= min/max size ratio
                            continue
                        if jaccard(sets[i], sets[j]) >= threshold:
                            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(len(norms))]


def _minhash(sets: list[set[int]], rng: np.random.Generator) -> np.ndarray:
    """(n_docs, n_perm) uint32 MinHash signatures, vectorised over all shingles.

    Each "permutation" is x -> a*x + b mod 2**32 with odd a: a bijection on 32-bit shingle hashes.
    """
    a = rng.integers(1, 2**32, size=_NUM_PERM, dtype=np.uint32) | np.uint32(1)
    b = rng.integers(0, 2**32, size=_NUM_PERM, dtype=np.uint32)
    lengths = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
    flat = np.fromiter((h for s in sets for h in s), dtype=np.uint32, count=int(lengths.sum()))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    out = np.empty((len(sets), _NUM_PERM), dtype=np.uint32)
    chunk = 16  # bounds memory: n_shingles x chunk x 4 bytes
    with np.errstate(over="ignore"):
        for lo in range(0, _NUM_PERM, chunk):
            hashed = flat[:, None] * a[None, lo : lo + chunk] + b[None, lo : lo + chunk]  # wraps mod 2**32
            out[:, lo : lo + chunk] = np.minimum.reduceat(hashed, starts, axis=0)
    return out


def _no_empty_split(queues: dict[str, list[int]], members: dict[int, list[int]], order: list[int], active: list[str]) -> None:
    """Give every wanted split at least one cluster when there are enough clusters.

    Proportional dealing leaves a small split empty on a small pool (3 texts with targets 500/100/100 all
    land in train and valid), and an empty test.jsonl is a folder `data validate` rejects. The cluster moved
    is the last one dealt to the split holding the most clusters, so a big pool is never changed.
    """
    if all(queues[s] for s in active):
        return
    split_of = {i: s for s in active for i in queues[s]}
    owner = {c: split_of[members[c][0]] for c in order if members[c][0] in split_of}
    for split in active:
        if queues[split]:
            continue
        counts = {s: sum(1 for o in owner.values() if o == s) for s in active}
        donor = max(active, key=lambda s: counts[s])
        if counts[donor] < 2:
            return  # fewer clusters than splits: the caller reports how many rows are needed
        cluster = next(c for c in reversed(order) if owner.get(c) == donor)
        moved = set(members[cluster])
        queues[donor] = [i for i in queues[donor] if i not in moved]
        queues[split] = list(members[cluster])
        owner[cluster] = split


@dataclass
class Plan:
    """The candidates (deduplicated input rows) and, per split, the order in which to label them."""

    rows: list[RawRow]
    cluster: list[int]
    queues: dict[str, list[int]]
    stats: dict[str, int] = field(default_factory=dict)


def plan_splits(
    rows: list[RawRow],
    targets: dict[str, int],
    seed: int = 0,
    near_dup_threshold: float = 0.8,
    drop_near_duplicates: bool = False,
) -> Plan:
    """Deduplicate `rows` and deal whole near-duplicate clusters to the splits in a seeded order.

    Each split gets a queue covering the whole pool in proportion to `targets`, so when the teacher
    rejects a row the job takes the next one from the same queue without breaking cluster separation.

    Args:
        rows: raw input rows in input order.
        targets: wanted rows per split, e.g. {"train": 500, "valid": 100, "test": 100}.
        seed: shuffles the cluster order.
        near_dup_threshold: see `near_duplicate_clusters`.
        drop_near_duplicates: keep only the first member of each cluster instead of keeping all of them
            in one split.
    """
    stats = {"input_rows": len(rows), "empty_dropped": 0, "exact_duplicates_dropped": 0, "duplicate_gold_conflicts": 0}
    seen: dict[str, int] = {}
    kept: list[RawRow] = []
    norms: list[str] = []
    for row in rows:
        norm = normalize_text(row.text)
        if not norm:
            stats["empty_dropped"] += 1
            continue
        if norm in seen:
            stats["exact_duplicates_dropped"] += 1
            first = kept[seen[norm]]
            if row.label and first.label and row.label != first.label:
                stats["duplicate_gold_conflicts"] += 1
            continue
        seen[norm] = len(kept)
        kept.append(row)
        norms.append(norm)
    cluster = near_duplicate_clusters(norms, near_dup_threshold, seed)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(cluster):
        members.setdefault(c, []).append(i)
    multi = [m for m in members.values() if len(m) > 1]
    stats["near_duplicate_clusters"] = len(multi)
    stats["near_duplicate_rows"] = sum(len(m) for m in multi)
    if drop_near_duplicates:
        stats["near_duplicates_dropped"] = sum(len(m) - 1 for m in multi)
        members = {c: m[:1] for c, m in members.items()}
    order = sorted(members)
    random.Random(seed).shuffle(order)
    active = [s for s in SPLIT_ORDER if targets.get(s, 0) > 0]
    total_target = sum(targets[s] for s in active) or 1
    queues: dict[str, list[int]] = {s: [] for s in SPLIT_ORDER}
    assigned = 0
    for c in order:
        group = members[c]
        if active:
            # the split furthest behind its share of everything dealt so far (ties: train, valid, test)
            split = max(active, key=lambda s: targets[s] / total_target * (assigned + len(group)) - len(queues[s]))
            queues[split].extend(group)
        assigned += len(group)
    _no_empty_split(queues, members, order, active)
    stats["candidates"] = sum(len(q) for q in queues.values())
    return Plan(rows=kept, cluster=cluster, queues=queues, stats=stats)
