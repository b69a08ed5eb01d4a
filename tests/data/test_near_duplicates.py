"""Near-duplicate clusters (MinHash + exact Jaccard) that the splitter keeps in one split."""

from __future__ import annotations

from tickerpulse.data.near_duplicates import near_duplicate_clusters
from tickerpulse.data.split import normalize_text

FAMILY = [
    "Nomura Instinet loses confidence in Extended Stay America",
    "$STAY - Nomura Instinet loses confidence in Extended Stay America https://t.co/WrQXTC38nB",
    "Nomura Instinet loses confidence in Extended Stay America, shares slip",
]


def test_near_duplicate_clusters_find_the_family():
    others = [f"Company {i} reports quarterly revenue of {i * 7} million dollars" for i in range(40)]
    norms = [normalize_text(t) for t in FAMILY + others]
    cl = near_duplicate_clusters(norms, 0.7)
    assert cl[0] == cl[1] == cl[2] == 0
    assert len(set(cl[3:])) == 40 or all(c >= 3 for c in cl[3:])
    assert near_duplicate_clusters(norms, 1.0) == list(range(len(norms)))  # disabled
