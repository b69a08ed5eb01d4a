"""Near-duplicate clusters of normalised texts: MinHash over character 5-grams, LSH banding, exact check.

Signatures use 64 permutations in 16 bands x 4 rows, so pairs above ~0.5 Jaccard become candidates; each
candidate pair is then confirmed with the exact Jaccard similarity of its 5-gram sets. `data.split` uses the
clusters as split groups, so a split never holds a paraphrase of another split's text.

Known limitation: clusters are transitive (A~B and B~C puts A and C together even when A and C differ more);
with the default threshold this only merges families of templated headlines, which is what a split wants.
"""

from __future__ import annotations

import zlib

import numpy as np

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
