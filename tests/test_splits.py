"""assign_splits: whole clusters per split, and the cap on any one cluster's share of val/test."""

from collections import Counter

import pytest

from proteinmtp.splits import assign_splits, held_out_cluster_cap


def _clusters() -> dict[str, str]:
    """1,000 chains: four families of 90 chains and 640 singletons."""
    out = {}
    for f in range(4):
        for i in range(90):
            out[f"fam{f}_{i:03d}"] = f"fam{f}"
    for i in range(640):
        out[f"single{i:03d}"] = f"single{i:03d}"
    return out


def test_cap_is_ceil_of_share_at_least_one() -> None:
    assert held_out_cluster_cap(100, 0.05) == 5
    assert held_out_cluster_cap(31, 0.05) == 2      # ceil(1.55)
    assert held_out_cluster_cap(10, 0.05) == 1
    assert held_out_cluster_cap(660, 1.0) == 660


def test_uncapped_split_can_be_dominated_by_one_family() -> None:
    """Without the cap some seed puts a whole 90-chain family into a 100-chain test split (the failure
    the cap exists for); with the default cap no seed does."""
    cl = _clusters()
    dominated = []
    for seed in range(20):
        split = assign_splits(cl, val_fraction=0.1, test_fraction=0.1, seed=seed, max_cluster_share=1.0)
        held = Counter(cl[k] for k, v in split.items() if v in ("val", "test"))
        dominated.append(max(held.values()) == 90)
    assert any(dominated)
    for seed in range(20):
        split = assign_splits(cl, val_fraction=0.1, test_fraction=0.1, seed=seed)
        for name in ("val", "test"):
            members = [k for k, v in split.items() if v == name]
            sizes = Counter(cl[k] for k in members)
            assert 95 <= len(members) <= 105                   # target 100, 5 % slack
            assert max(sizes.values()) <= 5                     # ceil(0.05 * 100)
        # whole clusters: every family is in exactly one split
        for f in range(4):
            assert len({split[f"fam{f}_{i:03d}"] for i in range(90)}) == 1


def test_invalid_share_rejected() -> None:
    with pytest.raises(ValueError, match="max_cluster_share"):
        assign_splits({"a": "a"}, max_cluster_share=0.0)
