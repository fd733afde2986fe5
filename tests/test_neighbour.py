"""Nearest-training-neighbour baseline: hand-checkable queries against three real training chains."""

from __future__ import annotations

import numpy as np
import pytest

from proteinmtp.dataset import Sample
from proteinmtp.eval_scoring import score_prediction
from proteinmtp.neighbour import NeighbourSet, find_neighbours
from proteinmtp.prior import SeparationPrior
from proteinmtp.reconstruction import reconstruct
from proteinmtp.structure import read_structure

MISSING = 70  # residue of the training copy of 3KPR:B without a Cα


def _sample(sid: str, seq: str, ca) -> Sample:
    return Sample(id=sid, sequence=seq, ca=np.array(ca, dtype=np.float64),
                  residue_ids=[str(i + 1) for i in range(len(seq))], source="", split="")


@pytest.fixture(scope="module")
def case(test_data_dir):
    chains = {c.id: c for f in ("1LCD.pdb.gz", "3KPR.pdb.gz", "1A8O.pdb.gz")
              for c in read_structure(test_data_dir / f)}
    a, b, c = (chains[k] for k in ("1A8O:A", "3KPR:B", "1LCD:A"))
    b_train = _sample(b.id, b.sequence, b.ca)
    b_train.ca[MISSING] = np.nan
    # 1LCD:A behind 40 Thr (a straight Cα line), queried behind (AK)x20: BLOSUM62 A/T 0, K/T -1, so a
    # global alignment pairs the two heads (-20 beats the gaps) while a local one leaves them unaligned
    r1, r2 = "AK" * 20, "T" * 40
    line = np.arange(40)[:, None] * np.array([3.8, 0.0, 0.0]) - np.array([200.0, 0.0, 0.0])
    fused = _sample("fused", r2 + c.sequence, np.concatenate([line, np.array(c.ca, float)]))
    train = [fused, b_train, _sample(a.id, a.sequence, a.ca)]
    # 3KPR:B with residues 30-34 deleted and PGPGPG inserted before residue 60:
    # query 0-29 -> 3KPR:B 0-29, query 30-54 -> 35-59, query 55-60 inserted, query 61-99 -> 60-98
    seq = b.sequence[:30] + b.sequence[35:60] + "PGPGPG" + b.sequence[60:]
    queries = [_sample("same", a.sequence, a.ca), _sample("indel", seq, np.full((len(seq), 3), np.nan)),
               _sample("nohit", "P" * 40, np.full((40, 3), np.nan)),
               _sample("domain", r1 + c.sequence, np.full((91, 3), np.nan))]
    nbs = find_neighbours(train, queries)
    return {"train": train, "queries": queries, "nbs": nbs, "prior": SeparationPrior.fit(train),
            "a": np.array(a.ca, float), "b": np.array(b.ca, float)}


def test_identical_query_gets_the_chains_exact_distances(case):
    nb = case["nbs"].by_id["same"]
    a = case["a"]
    assert nb.neighbour_id == "1A8O:A" and nb.identity == pytest.approx(1.0) and nb.aligned_fraction == 1.0
    true = np.linalg.norm(a[:, None] - a[None], axis=-1)
    L = len(a)
    dist = nb.filled(case["prior"].predict(L))
    np.testing.assert_allclose(dist, true, atol=1e-9)
    # reconstructed and scored like the model: oracle quality
    xyz, _ = reconstruct(dist, method="refine")
    m = score_prediction(dist, dist, xyz, case["queries"][0], higher_is_contact=False, true_dist=true)
    assert m["mae"] == pytest.approx(0.0, abs=1e-9)
    assert m["rmsd"] < 0.5 and m["lddt"] > 0.99 and m["tm_score"] > 0.98


def test_indel_query_takes_aligned_distances_at_the_right_indices(case):
    nb = case["nbs"].by_id["indel"]
    b, L = case["b"], 100
    assert nb.neighbour_id == "3KPR:B" and nb.query_sequence == case["queries"][1].sequence
    want_q = [*range(30), *range(30, 55), *range(61, 100)]
    want_t = [*range(30), *range(35, 60), *range(60, 99)]
    keep = [t != MISSING for t in want_t]                 # neighbour residue 70 has no Cα
    np.testing.assert_array_equal(nb.query_idx, np.array(want_q)[keep])
    np.testing.assert_array_equal(nb.neighbour_idx, np.array(want_t)[keep])
    assert nb.aligned_fraction == pytest.approx(93 / 100)
    prior = case["prior"].predict(L)
    d = nb.filled(prior)

    def dist(i, j):
        return float(np.linalg.norm(b[i] - b[j]))

    assert d[5, 40] == pytest.approx(dist(5, 45))        # before the deletion / after it
    assert d[40, 80] == pytest.approx(dist(45, 79))       # after the deletion / after the insertion
    assert d[10, 61] == pytest.approx(dist(10, 60))
    assert d[57, 10] == prior[57, 10] and d[60, 99] == prior[60, 99]   # inserted residues: prior
    assert d[71, 3] == prior[71, 3] and d[71, 71] == 0.0               # aligned to a residue without Cα
    assert nb.mask().sum() == 93 * 93
    np.testing.assert_array_equal(d[~nb.mask()], prior[~nb.mask()])


def test_no_hit_falls_back_to_the_prior_and_is_counted(case):
    nb = case["nbs"].by_id["nohit"]
    assert nb.neighbour_id is None and nb.identity is None and nb.aligned_fraction == 0.0
    prior = case["prior"].predict(40)
    np.testing.assert_array_equal(nb.filled(prior), prior)
    info = case["nbs"].info
    assert info["n_with_hit"] == 3 and info["n_without_hit"] == 1 and info["n_train_chains"] == 3
    assert info["evalue"] == 10.0 and info["search"].startswith("exhaustive")


def test_local_alignment_leaves_the_unrelated_segment_to_the_prior(case):
    """A global alignment would pair the two unrelated 40-residue heads and copy the line's distances."""
    nb = case["nbs"].by_id["domain"]
    assert nb.neighbour_id == "fused"
    np.testing.assert_array_equal(nb.query_idx, np.arange(40, 91))
    np.testing.assert_array_equal(nb.neighbour_idx, np.arange(40, 91))
    prior = case["prior"].predict(91)
    d = nb.filled(prior)
    np.testing.assert_array_equal(d[:40], prior[:40])
    assert d[45, 80] == pytest.approx(float(np.linalg.norm(case["train"][0].ca[45] - case["train"][0].ca[80])))


def test_round_trip_and_stale_use(case, tmp_path):
    nbs = case["nbs"]
    path = nbs.save(tmp_path / "nb.json.gz")
    back = NeighbourSet.load(path)
    assert back.info == nbs.info and set(back.by_id) == set(nbs.by_id)
    for k, nb in nbs.by_id.items():
        np.testing.assert_allclose(np.nan_to_num(back.by_id[k].distances(), nan=-1),
                                   np.nan_to_num(nb.distances(), nan=-1), atol=0.01)  # coordinates kept to 1e-3 Å
    q = case["queries"][0]
    with pytest.raises(ValueError, match="different sequence"):
        nbs.for_sample(_sample(q.id, q.sequence[:-1], q.ca[:-1]))
    with pytest.raises(ValueError, match="no precomputed neighbour for chain 'other'"):
        nbs.for_sample(_sample("other", q.sequence, q.ca))
    with pytest.raises(ValueError, match="duplicate query id"):
        find_neighbours(case["train"], [q, q])
    with pytest.raises(ValueError, match="does not match the query length"):
        nbs.by_id["same"].filled(np.zeros((3, 3)))
