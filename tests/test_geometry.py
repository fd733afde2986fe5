"""Geometry: distances, classical MDS, refinement, hand choice, Kabsch — checked against independent
computations (scipy, Biopython, biotite, exact reconstructions of real Cα traces)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

from proteinmtp import geometry as G
from proteinmtp import reconstruction as R
from proteinmtp.constants import CA_CA_BOND


def _load(test_data_dir, name: str) -> np.ndarray:
    return np.load(test_data_dir / "geometry" / f"{name}.npz")["ca"].astype(np.float64)


def _breaks(ca: np.ndarray) -> list[int]:
    return [int(i) for i in np.nonzero(np.linalg.norm(np.diff(ca, axis=0), axis=1) > 4.2)[0]]


def _noisy(dist: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = np.triu(rng.normal(scale=sigma, size=dist.shape), 1)
    return np.maximum(dist + n + n.T, 1.0) * (1 - np.eye(len(dist)))


def _rmsd_either_hand(x: np.ndarray, ref: np.ndarray) -> float:
    return min(G.superpose(x, ref)[1], G.superpose(G.mirror(x), ref)[1])


@pytest.fixture(scope="module")
def alpha(test_data_dir):
    return _load(test_data_dir, "alpha_196")


def test_distance_matrix_matches_scipy(alpha):
    np.testing.assert_allclose(G.distance_matrix(alpha), cdist(alpha, alpha), atol=1e-10)
    x = alpha[:5].copy()
    x[2] = np.nan
    d = G.distance_matrix(x)
    assert np.isnan(d[2]).all() and np.isnan(d[:, 2]).all() and np.isfinite(d[0, 1])


@pytest.mark.parametrize("name", ["alpha_196", "beta_200", "mixed_339", "small_114"])
def test_classical_mds_exact_distances_reconstruct_native(test_data_dir, name):
    ca = _load(test_data_dir, name)
    x = G.classical_mds(G.distance_matrix(ca))
    assert x.shape == ca.shape
    np.testing.assert_allclose(G.distance_matrix(x), G.distance_matrix(ca), atol=1e-6)
    assert _rmsd_either_hand(x, ca) < 0.01


def test_classical_mds_uses_no_dense_eigendecomposition(alpha, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("dense eigendecomposition called")

    monkeypatch.setattr(np.linalg, "eigh", forbidden)
    monkeypatch.setattr(np.linalg, "eig", forbidden)
    x = G.classical_mds(G.distance_matrix(alpha))
    assert _rmsd_either_hand(x, alpha) < 0.01


def test_missing_entries_and_all_missing_row(alpha):
    ca = alpha[:120]
    d = G.distance_matrix(ca)
    rng = np.random.default_rng(3)
    mask = np.triu(rng.random(d.shape) > 0.3, 1)
    mask = mask | mask.T
    mask[40, :] = mask[:, 40] = False          # residue 40: no distance known at all
    dn = np.where(mask, d, np.nan)
    x, info = R.reconstruct(dn, mask=mask)
    assert np.isfinite(x).all()
    # 70 % of exact distances + chain geometry pin the structure down, residue 40 included
    assert _rmsd_either_hand(x, ca) < 0.5
    # the unknown residue sits bonded to its neighbours (chain edges are used for it)
    assert abs(np.linalg.norm(x[40] - x[39]) - CA_CA_BOND) < 0.2


def test_nonsymmetric_matrix_is_symmetrised(alpha):
    d = G.distance_matrix(alpha[:60])
    rng = np.random.default_rng(0)
    a = d + rng.normal(scale=0.5, size=d.shape)
    np.fill_diagonal(a, 0)
    a = np.abs(a)
    sym = 0.5 * (a + a.T)
    np.testing.assert_allclose(G.check_distance_matrix(a), sym)
    np.testing.assert_allclose(G.distance_matrix(G.classical_mds(a)), G.distance_matrix(G.classical_mds(sym)),
                               atol=1e-6)


def test_one_sided_known_entries_are_kept():
    d = np.array([[0.0, 3.0, np.nan], [np.nan, 0.0, 4.0], [5.0, np.nan, 0.0]])
    mask = np.isfinite(d)
    out = G.check_distance_matrix(d, mask=mask)
    np.testing.assert_allclose(out, [[0, 3, 5], [3, 0, 4], [5, 4, 0]])
    x = G.classical_mds(d, mask=mask)             # a 3-4-5 right triangle
    np.testing.assert_allclose(G.distance_matrix(x), out, atol=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_raise_clear_error(alpha, bad):
    d = G.distance_matrix(alpha[:30])
    d[3, 7] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite.*\[3, 7\]"):
        R.reconstruct(d)
    with pytest.raises(ValueError, match="NaN or infinite"):
        G.classical_mds(d)


def test_negative_and_nonsquare_raise(alpha):
    d = G.distance_matrix(alpha[:10])
    d[1, 2] = -1
    with pytest.raises(ValueError, match="negative"):
        G.check_distance_matrix(d)
    with pytest.raises(ValueError, match="square"):
        G.check_distance_matrix(np.zeros((3, 4)))


@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_tiny_chains_reconstruct_exactly(alpha, L):
    ca = alpha[:L]
    # refinement pulls bonded pairs to 3.8 Å (native bonds here are 3.77–3.81 Å)
    for method, tol in (("classical", 1e-6), ("refine", 0.05)):
        x, _ = R.reconstruct(G.distance_matrix(ca), method=method)
        assert x.shape == (L, 3) and np.isfinite(x).all()
        np.testing.assert_allclose(G.distance_matrix(x), G.distance_matrix(ca), atol=tol)


def test_coincident_points_give_finite_chain():
    x, info = R.reconstruct(np.zeros((12, 12)))
    assert np.isfinite(x).all()
    bonds = np.linalg.norm(np.diff(x, axis=0), axis=1)
    assert np.abs(bonds - CA_CA_BOND).max() < 0.2


def test_refine_beats_classical_and_keeps_bonds(test_data_dir):
    ca = _load(test_data_dir, "mixed_339")[:200]
    br = _breaks(ca)
    d = G.distance_matrix(ca)
    dn = _noisy(d, 2.0, seed=1)
    x0 = G.classical_mds(dn)
    x1 = G.refine(x0, dn, breaks=br)
    assert _rmsd_either_hand(x1, ca) < _rmsd_either_hand(x0, ca)
    bl = np.linalg.norm(np.diff(x1, axis=0), axis=1)
    ok = np.setdiff1d(np.arange(len(bl)), br)
    assert np.abs(bl[ok] - CA_CA_BOND).max() < 0.1
    # no bond term across a break: the gap keeps (about) its true length
    for b in br:
        assert abs(bl[b] - d[b, b + 1]) < 2.0 and d[b, b + 1] > 6.0


def test_refine_confidence_weights_ignore_corrupted_pairs(alpha):
    ca = alpha[:100]
    d = G.distance_matrix(ca)
    rng = np.random.default_rng(5)
    bad = np.triu(rng.random(d.shape) < 0.1, 2)
    bad = bad | bad.T
    dc = np.where(bad, d + 15.0, d)
    w = np.where(bad, 0.0, 1.0)
    x0 = G.classical_mds(dc)
    xw = G.refine(x0, dc, weights=w)
    xu = G.refine(x0, dc)
    assert _rmsd_either_hand(xw, ca) < 0.2 < _rmsd_either_hand(xu, ca)


def test_ca_dihedrals_match_biopython(alpha):
    from Bio.PDB.vectors import Vector, calc_dihedral

    phi = G.ca_dihedrals(alpha[:20])
    for i in range(0, 17, 4):
        ref = np.degrees(calc_dihedral(*(Vector(*alpha[i + k]) for k in range(4))))
        assert abs(phi[i] - ref) < 1e-6


def test_hand_rule_on_native_and_mirror(alpha):
    x, info = G.choose_hand(alpha)
    assert not info["mirrored"] and info["score"] > 0.5
    np.testing.assert_array_equal(x, alpha)
    x, info = G.choose_hand(G.mirror(alpha))
    assert info["mirrored"]
    np.testing.assert_allclose(x, alpha)
    # a right-handed α-helix has Cα pseudo-dihedrals near +50°
    assert 40 < np.median(G.ca_dihedrals(alpha)[(G.ca_dihedrals(alpha) > 0)]) < 60


@pytest.mark.parametrize("name", ["alpha_196", "beta_200", "mixed_339", "small_114"])
def test_hand_rule_uses_strands_too(test_data_dir, name):
    ca = _load(test_data_dir, name)
    ev = G.hand_evidence(ca)
    # natives: helix dihedrals mostly right-handed, strand dihedrals mostly in −170…−100°
    assert ev["n_helix_right"] >= ev["n_helix_left"]
    assert ev["n_strand_native"] > ev["n_strand_mirror"]
    x, info = G.choose_hand(G.mirror(ca))
    assert info["mirrored"] and G.superpose(x, ca)[1] < 1e-6


def test_reconstruct_picks_native_hand_from_exact_distances(alpha):
    x, info = R.reconstruct(G.distance_matrix(alpha), method="classical")
    assert G.superpose(x, alpha)[1] < 0.01


def test_kabsch_recovers_rotation_and_is_proper(alpha):
    r_true = Rotation.from_rotvec([0.3, -1.2, 0.7]).as_matrix()
    t_true = np.array([5.0, -3.0, 12.0])
    mobile = alpha
    target = alpha @ r_true.T + t_true
    r, t = G.kabsch(mobile, target)
    np.testing.assert_allclose(r, r_true, atol=1e-10)
    np.testing.assert_allclose(t, t_true, atol=1e-8)
    r, _ = G.kabsch(G.mirror(alpha), alpha)       # best proper rotation of a mirror image
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_superpose_rmsd_matches_scipy_and_biotite(test_data_dir):
    import biotite.structure as bs

    ca = _load(test_data_dir, "mixed_339")
    rng = np.random.default_rng(2)
    mob = ca @ Rotation.random(random_state=4).as_matrix().T + rng.normal(scale=1.5, size=ca.shape) + 7.0
    _, ours = G.superpose(mob, ca)
    _, rssd = Rotation.align_vectors(ca - ca.mean(0), mob - mob.mean(0))
    assert ours == pytest.approx(rssd / np.sqrt(len(ca)), abs=0.02)
    fitted, _ = bs.superimpose(ca, mob)
    assert ours == pytest.approx(float(bs.rmsd(ca, fitted)), abs=0.02)


def test_superpose_mask_and_missing_rows(alpha):
    mob = alpha.copy()
    mob[10] = np.nan
    aligned, r = G.superpose(mob, alpha)
    assert r < 1e-8 and np.isnan(aligned[10]).all()
    with pytest.raises(ValueError, match="no residue"):
        G.superpose(mob, alpha, mask=np.eye(len(alpha), dtype=bool)[10])
