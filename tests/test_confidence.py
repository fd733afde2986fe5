"""Confidence statistics: pTM by hand, ECE by hand, pooled correlations against scipy, per-residue lDDT
against biotite, the heads' pair error classes, the REMARK and the distogram file, Cβ contacts by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from proteinmtp import confidence as C
from proteinmtp import metrics as M
from proteinmtp.heads.common import ERROR_EDGES, ERROR_SCORES, HeadConfig


def _onehot(L: int, cls: int) -> np.ndarray:
    p = np.zeros((L, L, 5))
    p[..., cls] = 1.0
    return p


def test_predicted_tm_by_hand():
    L = 60
    d0 = 1.24 * (L - 15) ** (1 / 3) - 1.8
    for cls, e in enumerate((0.25, 0.75, 1.5, 3.0, 8.0)):
        f = 1 / (1 + (e / d0) ** 2)
        assert C.predicted_tm(_onehot(L, cls)) == pytest.approx((1 + (L - 1) * f) / L)
    # the anchor with the best row wins: residue 7 certain (class 0) against everyone, the rest class 4
    p = _onehot(L, 4)
    p[7, :] = _onehot(L, 0)[7]
    f0, f4 = 1 / (1 + (0.25 / d0) ** 2), 1 / (1 + (8 / d0) ** 2)
    assert C.predicted_tm(p) == pytest.approx((1 + (L - 1) * f0) / L)
    assert C.predicted_tm(p) > (1 + (L - 1) * f4) / L
    # a mask drops residues (and d0 follows the masked length)
    m = np.ones(L, bool)
    m[:30] = False
    d0m = M.tm_d0(30)
    assert C.predicted_tm(_onehot(L, 2), m) == pytest.approx((1 + 29 / (1 + (1.5 / d0m) ** 2)) / 30)
    assert C.predicted_tm(None) is None
    with pytest.raises(ValueError, match="pair_error_probs"):
        C.predicted_tm(np.zeros((4, 4, 3)))


def test_error_classes_match_the_training_targets():
    pred = np.array([0.0, 0.4, 0.5, 0.9, 1.0, 1.7, 2.0, 3.9, 4.0, 9.0])
    true = np.zeros_like(pred)
    ref = torch.bucketize(torch.tensor(pred), torch.tensor(ERROR_EDGES, dtype=torch.float64)).numpy()
    assert (C.error_classes(pred, true) == ref).all()
    assert list(C.error_classes(pred, true)) == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4]


def test_reliability_bins_ece_by_hand():
    b = C.ReliabilityBins()
    # bin [0.2, 0.3): confidences 0.25, 0.25, outcomes 1, 0 -> gap |0.5 - 0.25|; bin [0.9, 1]: 0.95, 1.0 -> 1, 1
    b.add([0.25, 0.25, 0.95, 1.0], [1, 0, 1, 1])
    expected = (2 * 0.25 + 2 * abs(1 - 0.975)) / 4
    assert b.ece() == pytest.approx(expected)
    d = b.as_dict()
    assert d["count"][2] == 2 and d["count"][9] == 2 and d["mean_outcome"][2] == 0.5 and d["mean_confidence"][0] is None
    assert C.ReliabilityBins().ece() is None


def test_confidence_stats_pooled_correlations_ece_and_merge():
    rng = np.random.default_rng(0)
    proteins = []
    for L in (30, 45, 60):
        lddt = rng.random(L)
        conf = np.clip(100 * lddt + rng.normal(scale=20, size=L), 0, 100)
        lddt[3] = np.nan                                   # a residue without a native pair is left out
        probs = rng.dirichlet(np.ones(5), size=(L, L))
        pred = rng.random((L, L)) * 20
        true = pred + rng.normal(scale=2.0, size=(L, L))
        proteins.append((conf, lddt, probs, pred, true))
    whole = C.ConfidenceStats()
    parts = [C.ConfidenceStats() for _ in proteins]
    for i, (conf, lddt, probs, pred, true) in enumerate(proteins):
        whole.add_protein(i, conf, lddt, probs, pred, true)
        parts[i].add_protein(i, conf, lddt, probs, pred, true)
    merged = C.ConfidenceStats()
    for p in parts:
        merged.merge(p)
    x = np.concatenate([p[0] for p in proteins])
    y = np.concatenate([p[1] for p in proteins])
    ok = np.isfinite(y)
    assert whole.residue_pearson() == pytest.approx(pearsonr(x[ok], y[ok]).statistic, abs=1e-10)
    assert whole.residue_spearman() == pytest.approx(spearmanr(x[ok], y[ok]).statistic, abs=1e-10)
    # pair ECE recomputed directly: pairs i < j, top-label confidence vs correct class, 10 bins
    confs, hits = [], []
    for conf, _lddt, probs, pred, true in proteins:
        iu, ju = np.triu_indices(len(conf), 1)
        p = probs[iu, ju]
        err = np.abs(pred[iu, ju] - true[iu, ju])
        cls = np.digitize(err, ERROR_EDGES, right=True)
        confs.append(p.max(1))
        hits.append(p.argmax(1) == cls)
    cf, ht = np.concatenate(confs), np.concatenate(hits)
    bins = np.minimum((cf * 10).astype(int), 9)
    ece = sum(abs(ht[bins == b].mean() - cf[bins == b].mean()) * (bins == b).sum() for b in np.unique(bins)) / len(cf)
    assert whole.pair_bins.ece() == pytest.approx(ece, abs=1e-12)
    for a, b in ((whole.summary(), merged.summary()),):
        assert a["residue_lddt_pearson"] == pytest.approx(b["residue_lddt_pearson"], abs=1e-12)
        assert a["residue_lddt_spearman"] == pytest.approx(b["residue_lddt_spearman"], abs=1e-12)
        assert a["pair_ece"] == pytest.approx(b["pair_ece"], abs=1e-12)
    # a bounded sample: the same residues whatever the merge order, and never more than the cap
    small = [C.ConfidenceStats(cap=50) for _ in range(2)]
    for order, st in zip(((0, 1, 2), (2, 0, 1)), small):
        for i in order:
            one = C.ConfidenceStats(cap=50)
            one.add_protein(i, *proteins[i][:2])
            st.merge(one)
    assert len(small[0].sample) == 50
    assert sorted(map(tuple, small[0].sample)) == sorted(map(tuple, small[1].sample))


def test_summary_ptm_pearson():
    st = C.ConfidenceStats()
    st.add_protein(0, np.array([50.0, 60.0]), np.array([0.5, 0.7]))
    ptm = np.array([0.2, 0.4, np.nan, 0.9])
    tm = np.array([0.1, 0.5, 0.3, 0.7])
    out = st.summary(ptm, tm, tm)
    assert out["ptm_pearson"] == pytest.approx(pearsonr([0.2, 0.4, 0.9], [0.1, 0.5, 0.7]).statistic)
    assert out["ptm_mean"] == pytest.approx(0.5)
    assert set(out) >= {"residue_lddt_pearson", "residue_lddt_spearman", "pair_ece", "ptm_pearson"}


def test_lddt_per_residue_matches_biotite(test_data_dir):
    import biotite.structure as bs
    from conftest import ca_atom_array

    z = np.load(test_data_dir / "geometry" / "alpha_196.npz")
    ca = z["ca"].astype(np.float64)
    L = len(ca)
    ref = ca_atom_array(ca)
    dec = ca + np.random.default_rng(2).normal(scale=1.5, size=ca.shape)
    expected = np.asarray(bs.lddt(ref, dec, aggregation="residue"))
    got = M.lddt_ca_per_residue(dec, ca)
    assert np.allclose(got, expected, atol=1e-6)
    # pooled over pairs, the per-residue values weighted by pair counts are lddt_ca
    dt = M.distance_matrix(ca)
    n = ((dt < 15) & ~np.eye(L, dtype=bool)).sum(1)
    assert (got * n).sum() / n.sum() == pytest.approx(M.lddt_ca(dec, ca), abs=1e-12)
    # a residue outside the native is NaN; a missing predicted residue scores 0
    native = ca.copy()
    native[5] = np.nan
    pred = dec.copy()
    pred[9] = np.nan
    pr = M.lddt_ca_per_residue(pred, native)
    assert np.isnan(pr[5]) and pr[9] == 0.0 and np.isfinite(pr[:5]).all()


def test_distance_head_pair_error_probs():
    from proteinmtp.heads.distance import DistanceHead

    torch.manual_seed(0)
    head = DistanceHead(12, HeadConfig(pair_dim=8, single_dim=8, dilations=(1,), prior_input=False)).eval()
    for p in head.pair_conf.parameters():
        torch.nn.init.normal_(p, std=0.5)
    L = 9
    with torch.no_grad():
        out = head(torch.randn(1, 11, 12), torch.ones(1, 11, dtype=torch.bool))
    arr = head.predict_numpy(out, 0, L, (2.5, 0.5))
    pe = arr["pair_error_probs"]
    assert pe.shape == (L, L, 5) and np.allclose(pe.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(pe, pe.transpose(1, 0, 2), atol=1e-5)
    assert np.allclose(pe @ np.array(ERROR_SCORES), arr["pair_confidence"], atol=1e-6)
    ref = torch.softmax(out["pair_conf_logits"][0, :L, :L], -1).numpy()
    assert np.allclose(pe, ref, atol=1e-6)


def test_remark_and_distogram_carry_ptm(tmp_path):
    from proteinmtp.model import DistancePrediction
    from proteinmtp.predict import structure_from_distances
    from proteinmtp.writers import save_distogram, structure_remarks

    rng = np.random.default_rng(1)
    L = 30
    xyz = np.cumsum(rng.normal(size=(L, 3)), axis=0) * 2.0
    dist = M.distance_matrix(xyz)
    probs = rng.dirichlet(np.ones(5), size=(L, L))
    probs = 0.5 * (probs + probs.transpose(1, 0, 2))
    dp = DistancePrediction(sequence="A" * L, dist=dist, contact_prob=(dist < 8).astype(float),
                            pair_confidence=probs @ np.array(ERROR_SCORES), residue_confidence=np.full(L, 0.5),
                            pair_error_probs=probs)
    sp = structure_from_distances(dp)
    ptm = C.predicted_tm(probs)
    [line] = [r for r in structure_remarks(sp) if r.startswith("PREDICTED TM-SCORE")]
    assert f"{ptm:.3f}" in line
    z = np.load(save_distogram(tmp_path / "d.npz", sp))
    assert float(z["ptm"]) == pytest.approx(ptm) and z["pair_error_probs"].shape == (L, L, 5)
    # a head without error classes: no pTM line, no arrays
    dp.pair_error_probs = None
    sp = structure_from_distances(dp)
    assert not any(r.startswith("PREDICTED TM") for r in structure_remarks(sp))
    assert "ptm" not in np.load(save_distogram(tmp_path / "e.npz", sp)).files


def test_cb_contacts_by_hand(test_data_dir):
    """precision_L5_long_cb: the top L/5 long-range pairs by the score, fraction with Cβ–Cβ < 8 Å, counted
    here directly from the chain's Cβ coordinates (Cα for glycine, from the structure reader)."""
    from proteinmtp.dataset import Sample
    from proteinmtp.eval_scoring import score_prediction
    from proteinmtp.structure import read_structure

    c = read_structure(test_data_dir / "3KPR.pdb.gz")[0]
    s = Sample(id=c.id, sequence=c.sequence, ca=np.array(c.ca), residue_ids=list(c.residue_ids), source=c.source,
               split="test", cb=np.array(c.cb))
    cb = np.array(c.cb)
    assert np.isfinite(cb).all()
    L = len(cb)
    rng = np.random.default_rng(3)
    true = s.distances()
    pred = true + rng.normal(scale=3.0, size=true.shape)
    pred = 0.5 * (pred + pred.T)
    m = score_prediction(pred, pred, np.array(c.ca), s, higher_is_contact=False)
    iu, ju = np.triu_indices(L, 24)
    order = np.argsort(pred[iu, ju], kind="stable")[: L // 5]
    dcb = np.linalg.norm(cb[iu[order]] - cb[ju[order]], axis=1)
    dca = true[iu[order], ju[order]]
    assert m["precision_L5_long_cb"] == pytest.approx((dcb < 8).mean())
    assert m["precision_L5_long"] == pytest.approx((dca < 8).mean())
    # Cα-only chain (no Cβ beyond the glycines): no Cβ scores
    s.cb = np.full_like(cb, np.nan)
    assert "precision_L5_long_cb" not in score_prediction(pred, pred, np.array(c.ca), s, higher_is_contact=False)
