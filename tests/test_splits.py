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


# ---------------------------------------------------------------- streamed clustering


def _components_reference(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    """Connected components by scipy (independent of proteinmtp's union-find): smallest member per node."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    q, t = np.array(pairs).T
    _, label = connected_components(coo_matrix((np.ones(len(q)), (q, t)), shape=(n, n)), directed=False)
    smallest = {}
    for i, lab in enumerate(label):
        smallest.setdefault(int(lab), i)
    return [smallest[int(lab)] for lab in label]


def test_union_find_from_streamed_hit_file_equals_components(tmp_path) -> None:
    """A MMseqs2-style hit file (query, target, more columns) streamed into the union-find gives the
    connected components scipy finds, with the smallest member as the root."""
    import numpy as np

    from proteinmtp.splits import UnionFind, union_hit_file

    rng = np.random.default_rng(0)
    n = 300
    pairs = [(int(a), int(b)) for a, b in rng.integers(0, n, size=(260, 2))]
    pairs += [(i, i) for i in range(0, n, 7)]                       # self hits, as MMseqs2 writes them
    path = tmp_path / "hits.m8"
    path.write_text("".join(f"s{a}\ts{b}\t0.41\t120\t1e-20\n" for a, b in pairs))
    uf = UnionFind(n)
    n_lines, n_joins = union_hit_file(path, uf)
    ref = _components_reference(n, pairs)
    assert [uf.find(i) for i in range(n)] == ref
    assert n_lines == len(pairs)
    assert n_joins == n - len(set(ref))                             # each join removes one set


def _mutant(seq: str, rate: float, rng) -> str:
    aa = "ACDEFGHIKLMNPQRSTVWY"
    return "".join(rng.choice(list(aa)) if rng.random() < rate else c for c in seq)


def _planted(rng) -> dict[str, str]:
    aa = list("ACDEFGHIKLMNPQRSTVWY")
    seqs = {f"rand{i:02d}": "".join(rng.choice(aa, 150)) for i in range(30)}
    a = "".join(rng.choice(aa, 150))
    b = _mutant(a, 0.6, rng)                                    # ~ 0.4 + 0.6/20 = 43 % identical
    ident = sum(x == y for x, y in zip(a, b)) / len(a)
    assert 0.35 < ident < 0.55
    seqs.update(homA=a, homB=b)
    return seqs


def _check_planted(cl: dict[str, str]) -> None:
    assert cl["homA"] == cl["homB"] == "homA"
    assert sum(v == k for k, v in cl.items()) == 31              # 30 singletons + the pair's cluster
    for seed in range(10):
        split = assign_splits(cl, val_fraction=0.3, test_fraction=0.3, seed=seed)
        assert split["homA"] == split["homB"]


def test_clustering_keeps_a_planted_homolog_pair_together() -> None:
    """Two 45 %-identical homologs (of random 150-mers) among 30 unrelated random chains: the default search
    (exhaustive at this size) links them, assign_splits keeps them in one split for every seed, and the
    unrelated chains stay singletons."""
    import numpy as np

    from proteinmtp.splits import cluster_sequences

    stats: dict = {}
    _check_planted(cluster_sequences(_planted(np.random.default_rng(1)), stats=stats))
    assert stats["exhaustive"] and stats["joins"] == 1


@pytest.mark.slow
def test_prefiltered_clustering_keeps_a_planted_homolog_pair_together() -> None:
    """The same with the k-mer prefilter that large builds use (~20 s: the prefilter's fixed cost)."""
    import numpy as np

    from proteinmtp.splits import cluster_sequences

    stats: dict = {}
    _check_planted(cluster_sequences(_planted(np.random.default_rng(1)), exhaustive=False, stats=stats))
    assert not stats["exhaustive"] and stats["joins"] == 1


def test_verify_split_moves_a_leaking_cluster_to_train_and_keeps_the_rest() -> None:
    """A split made from clusters that missed the planted homolog pair (each chain its own cluster, homA in
    test, homB in train, as a prefilter miss would leave them): verify_split's exhaustive search finds the
    pair, joins the two clusters and moves them to train; every unrelated chain keeps its split."""
    import numpy as np

    from proteinmtp.splits import verify_split

    seqs = _planted(np.random.default_rng(1))
    cluster_of = {k: k for k in seqs}
    split_of = {k: ("test" if i % 3 == 0 else "val" if i % 3 == 1 else "train") for i, k in enumerate(sorted(seqs))}
    split_of.update(homA="test", homB="train")
    stats: dict = {}
    new_split, new_cluster = verify_split(seqs, split_of, cluster_of, stats=stats)
    assert new_split["homA"] == new_split["homB"] == "train"
    assert new_cluster["homA"] == new_cluster["homB"] == "homA"
    assert {k: v for k, v in new_split.items() if not k.startswith("hom")} == \
        {k: v for k, v in split_of.items() if not k.startswith("hom")}
    assert stats["chains_moved_to_train"] == 1 and stats["clusters_moved"] == 1
    assert stats["hits_across_splits"] == 1          # homA (test) -> homB (train); homB is not a query
    assert stats["held_out_chains"] == sum(v != "train" for v in split_of.values())
    # a split that is already clean comes back unchanged
    clean_split, _ = verify_split(seqs, new_split, new_cluster)
    assert clean_split == new_split
