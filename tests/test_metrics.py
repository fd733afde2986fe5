"""Metrics against reference programs (tmtools' TM-align, biotite lDDT/superimpose, scipy.stats) and
hand-computed cases, on real Cα traces (tests/data/geometry) and decoys built from them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from scipy.stats import pearsonr, spearmanr

from proteinmtp import geometry as G
from proteinmtp import metrics as M


def _load(test_data_dir, name: str):
    z = np.load(test_data_dir / "geometry" / f"{name}.npz")
    return z["ca"].astype(np.float64), str(z["sequence"])


def _hinge(ca: np.ndarray, angle_deg: float, seed: int) -> np.ndarray:
    """Rotate the C-terminal half rigidly about the middle residue (a domain motion)."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    rot = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(angle_deg)).as_matrix()
    out = ca.copy()
    h = len(ca) // 2
    out[h:] = (ca[h:] - ca[h]) @ rot.T + ca[h]
    return out + rng.normal(scale=0.7, size=ca.shape)


def _tmalign_identity(x: np.ndarray, y: np.ndarray, seq: str) -> float:
    import tmtools

    return tmtools.tm_align(x, y, seq, seq, alignment=[seq, seq]).tm_norm_chain2


DECOYS = [("alpha_196", "hinge", 60), ("mixed_339", "hinge", 45), ("beta_200", "hinge", 90),
          ("small_114", "noise", 3.0), ("mixed_339", "noise", 2.0), ("alpha_196", "mds", 4.0)]


@pytest.mark.parametrize("name,kind,amount", DECOYS)
def test_tm_score_matches_tmalign_identity_alignment(test_data_dir, name, kind, amount):
    ca, seq = _load(test_data_dir, name)
    rng = np.random.default_rng(7)
    if kind == "hinge":
        dec = _hinge(ca, amount, seed=3)
    elif kind == "noise":
        dec = ca + rng.normal(scale=amount, size=ca.shape)
    else:  # noisy-distance MDS reconstruction, moved far away and rotated
        d = G.distance_matrix(ca)
        n = np.triu(rng.normal(scale=amount, size=d.shape), 1)
        dec = G.classical_mds(np.maximum(d + n + n.T, 1.0) * (1 - np.eye(len(ca))))
        dec = G.choose_hand(dec)[0] @ Rotation.random(random_state=1).as_matrix().T + 50.0
    ours = M.tm_score(dec, ca)
    ref = _tmalign_identity(dec, ca, seq)
    assert ours == pytest.approx(ref, abs=0.01)
    if kind == "hinge":  # one Kabsch fit on all residues under-reports a domain motion
        aligned, _ = G.superpose(dec, ca)
        d0 = M.tm_d0(len(ca))
        single = np.mean(1 / (1 + (np.linalg.norm(aligned - ca, axis=1) / d0) ** 2))
        assert ours > single + 0.05


def test_tm_score_identity_and_short_chain(test_data_dir):
    ca, _ = _load(test_data_dir, "small_114")
    assert M.tm_score(ca, ca) == pytest.approx(1.0)
    assert M.tm_d0(20) == 0.5
    assert M.tm_d0(100) == pytest.approx(1.24 * 85 ** (1 / 3) - 1.8)
    # missing predicted residues count against TM (normalised by native length)
    pred = ca.copy()
    pred[:57] = np.nan
    assert M.tm_score(pred, ca) == pytest.approx(57 / 114, abs=1e-9)


def test_rmsd_matches_reference_kabsch(test_data_dir):
    ca, _ = _load(test_data_dir, "beta_200")
    rng = np.random.default_rng(0)
    dec = ca @ Rotation.random(random_state=2).as_matrix().T + rng.normal(scale=2.0, size=ca.shape)
    _, rssd = Rotation.align_vectors(ca - ca.mean(0), dec - dec.mean(0))
    assert M.rmsd(dec, ca) == pytest.approx(rssd / np.sqrt(len(ca)), abs=0.02)


@pytest.mark.parametrize("name,sigma", [("alpha_196", 1.0), ("mixed_339", 2.5), ("beta_200", 4.0)])
def test_lddt_matches_biotite(test_data_dir, name, sigma):
    import biotite.structure as bs
    from conftest import ca_atom_array

    ca, _ = _load(test_data_dir, name)
    ref = ca_atom_array(ca)
    dec = ca + np.random.default_rng(1).normal(scale=sigma, size=ca.shape)
    expected = float(bs.lddt(ref, dec))
    assert M.lddt_ca(dec, ca) == pytest.approx(expected, abs=0.01)
    # superposition-free and mirror-invariant
    assert M.lddt_ca(G.mirror(dec) + 3.0, ca) == pytest.approx(M.lddt_ca(dec, ca), abs=1e-12)


def test_gdt_hand_computed_case(test_data_dir):
    """100 residues: A = 50 exact, B = 30 (interleaved with A) translated together by 3 Å along x,
    C = 20 displaced by 30 Å in random directions.

    Cutoffs 8 and 4 Å: A + B = 0.80 (even unsuperposed). Cutoff 2 Å: no longer with the identity, but
    a translation of ~1.1 Å along x (the Kabsch fit on A + B) puts both within 2 Å: 0.80. Cutoffs 1 and
    0.5 Å: A and B cannot both fit (they are 3 Å apart and spatially interleaved), so A alone: 0.50.
    GDT-TS = (.5 + .8 + .8 + .8) / 4 = 0.725; GDT-HA = (.5 + .5 + .8 + .8) / 4 = 0.65.
    """
    ca, _ = _load(test_data_dir, "mixed_339")
    ca = ca[:100]
    rng = np.random.default_rng(11)
    perm = rng.permutation(100)
    dec = ca.copy()
    dec[perm[50:80]] += np.array([3.0, 0.0, 0.0])
    v = rng.normal(size=(20, 3))
    dec[perm[80:]] += 30.0 * v / np.linalg.norm(v, axis=1, keepdims=True)
    g = M.gdt(dec, ca)
    assert (g["gdt_0.5"], g["gdt_1"], g["gdt_2"], g["gdt_4"], g["gdt_8"]) == pytest.approx(
        (0.5, 0.5, 0.8, 0.8, 0.8), abs=1e-9)
    assert g["gdt_ts"] == pytest.approx(0.725, abs=1e-9)
    assert g["gdt_ha"] == pytest.approx(0.65, abs=1e-9)


def test_gdt_finds_the_domain_a_single_fit_misses(test_data_dir):
    ca, _ = _load(test_data_dir, "alpha_196")
    dec = ca.copy()
    h = len(ca) // 2
    dec[h:] = (ca[h:] - ca[h]) @ Rotation.from_rotvec([0, 0, np.pi / 2]).as_matrix().T + ca[h]
    g = M.gdt(dec, ca)
    # the larger rigid half alone is ≥ half of the residues within every cutoff
    assert g["gdt_ha"] >= (len(ca) - h) / len(ca) - 1e-9


def test_distance_metrics_against_scipy():
    rng = np.random.default_rng(0)
    L = 40
    t = np.abs(rng.normal(10, 4, size=(L, L)))
    t = t + t.T
    p = t + rng.normal(0, 1.5, size=(L, L))
    p = 0.5 * (p + p.T)
    mask = np.ones(L, bool)
    mask[[3, 17]] = False
    out = M.distance_metrics(p, t, mask)
    iu, ju = np.triu_indices(L, 1)
    keep = mask[iu] & mask[ju]
    a, b = p[iu, ju][keep], t[iu, ju][keep]
    assert out["n_pairs"] == len(a) == (38 * 37) // 2
    assert out["mae"] == pytest.approx(np.abs(a - b).mean())
    assert out["rmse"] == pytest.approx(np.sqrt(((a - b) ** 2).mean()))
    assert out["pearson"] == pytest.approx(pearsonr(a, b)[0])
    assert out["spearman"] == pytest.approx(spearmanr(a, b)[0])
    sep = (ju - iu)[keep]
    long = sep >= 24
    assert out["mae_long"] == pytest.approx(np.abs(a - b)[long].mean())
    short = (sep >= 6) & (sep <= 11)
    assert out["pearson_short"] == pytest.approx(pearsonr(a[short], b[short])[0])
    assert out["n_pairs_local"] == int(((sep >= 1) & (sep <= 5)).sum())


def test_contact_precision_hand_case():
    L = 30
    t = np.full((L, L), 20.0)
    np.fill_diagonal(t, 0)
    for i, j in ((0, 25), (1, 27), (2, 29)):          # the true long-range contacts
        t[i, j] = t[j, i] = 6.0
    rng = np.random.default_rng(0)
    prob = rng.uniform(0, 0.5, size=(L, L))
    prob = 0.5 * (prob + prob.T)
    for (i, j), s in (((0, 25), 0.9), ((0, 24), 0.8), ((1, 27), 0.7), ((3, 29), 0.6)):
        prob[i, j] = prob[j, i] = s
    out = M.contact_metrics(prob, t)
    # 21 long-range pairs; L/5 = 6 top pairs hold 2 of the 3 contacts (ranks 1 and 3) unless
    # (2, 29) ranks 5th or 6th among the random rest
    rest = sorted(((prob[i, j], (i, j)) for i in range(L) for j in range(i + 24, L)
                   if (i, j) not in {(0, 25), (0, 24), (1, 27), (3, 29)}), reverse=True)
    hit_2_29 = [p for _, p in rest[:2]].count((2, 29))
    assert out["precision_L5_long"] == pytest.approx((2 + hit_2_29) / 6)
    assert out["precision_L_long"] == pytest.approx(3 / 21)      # L = 30 > 21 pairs: all of them


def test_contact_precision_matches_brute_force():
    rng = np.random.default_rng(4)
    L = 50
    x = np.cumsum(rng.normal(scale=2.2, size=(L, 3)), axis=0)
    t = G.distance_matrix(x)
    score = rng.random((L, L))
    score = 0.5 * (score + score.T)
    out = M.contact_metrics(score, t)
    for name, (lo, hi) in {"short": (6, 11), "medium": (12, 23), "long": (24, L), "all": (6, L)}.items():
        pairs = sorted(((score[i, j], i, j) for i in range(L) for j in range(i + lo, min(i + hi + 1, L))),
                       reverse=True)
        for key, k in (("L", L), ("L2", L // 2), ("L5", L // 5)):
            top = pairs[:k]
            expected = sum(t[i, j] < 8.0 for _, i, j in top) / len(top)
            assert out[f"precision_{key}_{name}"] == pytest.approx(expected), (name, key)
    # ranking by predicted distance (lower = contact) gives the same numbers
    assert M.contact_metrics(1.0 - score, t, higher_is_contact=False) == out


def test_lddt_counts_missing_predicted_residues_as_misses():
    """Hand case: 4 residues on a line 3 Å apart (all 12 ordered pairs within 15 Å); the prediction lacks
    residue 3, so only the 6 ordered pairs among residues 0–2 can be preserved (they are exact): 6/12."""
    true = np.array([[0.0, 0, 0], [3, 0, 0], [6, 0, 0], [9, 0, 0]])
    pred = true.copy()
    pred[3] = np.nan
    assert M.lddt_ca(pred, true) == pytest.approx(0.5)
    # a residue missing from the NATIVE is not scored at all
    assert M.lddt_ca(pred[:3], true[:3]) == pytest.approx(1.0)
    nat = true.copy()
    nat[3] = np.nan
    assert M.lddt_ca(true, nat) == pytest.approx(1.0)
    assert M.lddt_ca(np.full_like(true, np.nan), true) == 0.0
    # structure_metrics uses the same conventions: GDT and TM over the native's 4 residues
    m = M.structure_metrics(pred, true)
    assert m["lddt"] == pytest.approx(0.5) and m["gdt_ts"] == pytest.approx(0.75) and m["n_aligned"] == 3


def _fragment_seeds(L: int, min_len: int = 4):
    """TM-score's seed fragments written from its description, independently of ``metrics._seeds``:
    contiguous windows of length L, L/2, L/4, L/8, L/16 (integer halving, only while longer than
    ``min_len``) and ``min_len``, each at every offset, as boolean masks."""
    lengths = []
    for k in range(5):
        if L >> k <= min_len:
            break
        lengths.append(L >> k)
    lengths.append(min(min_len, L))
    for ln in sorted(set(lengths), reverse=True):
        for start in range(L - ln + 1):
            mask = np.zeros(L, dtype=bool)
            mask[start:start + ln] = True
            yield mask


def test_fragment_seeds_hand_counted():
    # L = 70: windows of 70, 35, 17, 8 and 4 residues -> 1 + 36 + 54 + 63 + 67 offsets
    assert sum(1 for _ in _fragment_seeds(70)) == 1 + 36 + 54 + 63 + 67
    assert sorted({int(m.sum()) for m in _fragment_seeds(70)}) == [4, 8, 17, 35, 70]


def _naive_tm_search(x: np.ndarray, y: np.ndarray) -> float:
    """TM-score's search written one seed at a time (no batching, no deduplication): every seed
    fragment, then up to 20 rounds of Kabsch on the residues within d (widened by 0.5 Å to ≥ 3),
    stopping when the selection repeats."""
    L = len(y)
    d0 = M.tm_d0(L)
    ds = min(max(d0, 4.5), 8.0)
    best = 0.0
    for seed in _fragment_seeds(L):
        sel, d_cut = seed, ds - 1.0
        for it in range(21):
            r, t = G.kabsch(x[sel], y[sel])
            d = np.linalg.norm(x @ r.T + t - y, axis=1)
            best = max(best, float(np.sum(1 / (1 + (d / d0) ** 2)) / L))
            thr = d_cut
            new = d < thr
            while new.sum() < 3:
                thr += 0.5
                new = d < thr
            if it > 0 and (new == sel).all():
                break
            sel, d_cut = new, ds + 1.0
    return best


@pytest.mark.parametrize("kind", ["noise", "hinge", "coil"])
def test_tm_search_equals_one_seed_at_a_time(test_data_dir, kind):
    """The batched, deduplicating search visits the same superpositions as iterating each seed alone."""
    ca = _load(test_data_dir, "small_114")[0][:70]
    rng = np.random.default_rng(5)
    if kind == "noise":
        dec = ca + rng.normal(scale=4.0, size=ca.shape)
    elif kind == "hinge":
        dec = _hinge(ca, 70, seed=2)
    else:
        steps = rng.normal(size=ca.shape)
        dec = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
    assert M.tm_score(dec, ca) == pytest.approx(_naive_tm_search(dec, ca), abs=1e-9)


def test_clash_check_hand_built_trace():
    """A 10-residue zig-zag with every bond 3.8 Å, then three defects placed by hand: the counts are exact."""
    L = 10
    x = np.zeros((L, 3))
    x[:, 0] = np.arange(L) * 3.8 * np.cos(np.radians(30))       # i, i+2 = 2 · 3.8 · cos 30° = 6.58 Å
    x[1::2, 1] = 3.8 * np.sin(np.radians(30))
    c = M.clash_check(x)
    assert c["ok"] and c["n_clashes"] == 0 and c["max_bond_deviation"] < 1e-9
    assert c["min_i2"] == pytest.approx(2 * 3.8 * np.cos(np.radians(30)))
    y = x.copy()
    y[9] = y[6] + [0.0, 0.0, 3.0]          # residue 9 on top of 6: |i − j| = 3 at 3.0 Å, bond 8–9 stretched
    c = M.clash_check(y)
    assert c["n_clashes"] == 1 and c["min_nonbonded"] == pytest.approx(3.0)
    assert c["clashes"] == pytest.approx(100 * 1 / 10) and c["n_bond_outliers"] == 1 and not c["ok"]
    assert c["max_bond_deviation"] == pytest.approx(abs(np.linalg.norm(y[9] - y[8]) - 3.8))
    # a recorded break at 8 makes 8–9 no bond (and 7–9 no i, i+2 pair): only the clash is left
    c = M.clash_check(y, breaks=[8])
    assert c["n_bond_outliers"] == 0 and c["n_clashes"] == 1
    # i, i+2 at 4.0 Å: short (< 4.2) but not a clash (≥ 3.5); across a break it is neither
    z = x.copy()
    z[2] = z[0] + (z[2] - z[0]) / np.linalg.norm(z[2] - z[0]) * 4.0
    z[1] = (z[0] + z[2]) / 2 + np.array([0, 1, 0]) * np.sqrt(3.8 ** 2 - 2.0 ** 2)
    c = M.clash_check(z[:3])
    assert c["n_i2_short"] == 1 and c["n_clashes"] == 0 and c["min_i2"] == pytest.approx(4.0)
    assert M.clash_check(z[:3], breaks=[1])["n_i2_short"] == 0
    # a missing residue (NaN row) and a mask take residues out; two residues across a break may not touch
    w = y.copy()
    w[6] = np.nan
    assert M.clash_check(w)["n_clashes"] == 0 and M.clash_check(w)["n_residues"] == 9
    m = np.ones(L, bool)
    m[9] = False
    assert M.clash_check(y, mask=m)["ok"]
    touching = np.array([[0.0, 0, 0], [3.0, 0, 0]])
    assert M.clash_check(touching, breaks=[0])["n_clashes"] == 1 and M.clash_check(touching)["n_clashes"] == 0
    with pytest.raises(ValueError, match="breaks must lie"):
        M.clash_check(x, breaks=[9])


def test_clash_check_matches_brute_force(test_data_dir):
    """On a noisy decoy of a real chain: the k-d tree count equals an all-pairs count."""
    ca, _ = _load(test_data_dir, "small_114")
    rng = np.random.default_rng(3)
    x = ca + rng.normal(scale=1.5, size=ca.shape)
    d = G.distance_matrix(x)
    i, j = np.triu_indices(len(x), 2)
    c = M.clash_check(x)
    assert c["n_clashes"] == int((d[i, j] < 3.5).sum()) > 0
    assert c["n_i2_short"] == int((np.diag(d, 2) < 4.2).sum())
    assert c["n_bond_outliers"] == int((np.abs(np.diag(d, 1) - 3.8) > 0.1).sum())
    assert c["min_nonbonded"] == pytest.approx(d[i, j].min())
    assert M.structure_metrics(x, ca)["clashes"] == pytest.approx(100 * c["n_clashes"] / len(x))
