"""Distogram folding (proteinmtp.folding): folds real natives from their own sharp distograms (TM checked with
proteinmtp.metrics.tm_score, itself checked against tmtools in test_metrics), analytic gradients against
finite differences, the one-sided overflow restraint, input checks, and the reconstruct / predict wiring."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.special import ndtr

from proteinmtp import folding as F
from proteinmtp import geometry as G
from proteinmtp import metrics as M
from proteinmtp import reconstruction as R

EDGES = np.linspace(2.0, 22.0, 41)   # the distance head's bins: ≤ 2 Å, 40 × 0.5 Å, overflow > 22 Å


def _load(test_data_dir, name: str) -> np.ndarray:
    return np.load(test_data_dir / "geometry" / f"{name}.npz")["ca"].astype(np.float64)


def _energy(L: int, dist: np.ndarray, sigma: float = 1.0, bonds=None, **kw) -> F.DistogramEnergy:
    p = F.gaussian_distogram(dist, sigma, EDGES)
    return F.DistogramEnergy(F.knot_potentials(p, EDGES), F.knot_positions(EDGES), np.ones((L, L)),
                             G._bond_pairs(L, ()) if bonds is None else bonds, **kw)


def test_gaussian_distogram_matches_hand_integral():
    d = np.array([[0.0, 7.3], [7.3, 0.0]])
    p = F.gaussian_distogram(d, 0.8, EDGES)
    assert p.shape == (2, 2, 42)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
    # bin 21 holds (12.0, 12.5] ... the bin (7.0, 7.5] is index 1 + (7.0 - 2.0) / 0.5 = 11
    hand = ndtr((7.5 - 7.3) / 0.8) - ndtr((7.0 - 7.3) / 0.8)
    assert p[0, 1, 11] == pytest.approx(hand, abs=1e-12)
    assert p[0, 1, 0] == pytest.approx(ndtr((2.0 - 7.3) / 0.8), abs=1e-15)


@pytest.mark.parametrize("name, n", [("small_114", 114), ("alpha_196", 130)])
def test_sharp_native_distogram_folds_to_native(test_data_dir, name, n):
    ca = _load(test_data_dir, name)[:n]
    d = G.distance_matrix(ca)
    probs = F.gaussian_distogram(d, 0.25, EDGES)    # sharp: nearly all mass in the bin holding the distance
    # the distance estimate the model would give: the distogram's own mean (overflow pairs read as 22 Å),
    # so nothing but the distogram carries information about pairs beyond 22 Å
    dist = F.expected_distance(probs, EDGES)
    xyz, info = R.reconstruct(dist, method="distogram", distogram=probs, bin_edges=EDGES, breaks=G.chain_breaks(ca))
    assert info["method"] == "distogram" and info["start"] in F.START_NAMES
    tm = max(M.tm_score(xyz, ca), M.tm_score(G.mirror(xyz), ca))
    assert tm >= 0.9, f"{name}: TM {tm:.3f}"
    # the folded structure beats MDS of the same distances (the overflow pairs squashed to ~22 Å)
    x_mds = G.classical_mds(dist)
    assert tm > max(M.tm_score(x_mds, ca), M.tm_score(G.mirror(x_mds), ca))


def test_energy_gradient_matches_finite_differences(test_data_dir):
    ca = _load(test_data_dir, "small_114")[:60]
    L = len(ca)
    rng = np.random.default_rng(1)
    noisy = G.distance_matrix(ca + rng.normal(scale=1.5, size=ca.shape))
    fun = _energy(L, noisy, sigma=1.5)
    x = (ca + rng.normal(scale=1.0, size=ca.shape)).ravel()
    x[:3] = x[6:9] + 1.0                 # residue 0 within the clash distance of residue 2: clash term active
    e0, g = fun(x)
    assert np.isfinite(e0) and e0 > 0
    eps = 1e-3
    idx = rng.choice(x.size, 25, replace=False)
    fd = np.array([(fun(x + eps * np.eye(x.size)[k])[0] - fun(x - eps * np.eye(x.size)[k])[0]) / (2 * eps)
                   for k in idx])
    np.testing.assert_allclose(g[idx], fd, rtol=2e-3, atol=2e-5 * np.abs(g).max())


def test_pair_potential_is_the_spline_of_the_knots():
    """At a knot the potential equals the knot value; its derivative equals the centred difference slope."""
    d = np.array([[0.0, 9.6], [9.6, 0.0]])
    fun = _energy(2, d, sigma=1.0, bonds=np.zeros(0, dtype=int), clash_weight=0.0)
    u = F.knot_potentials(F.gaussian_distogram(d, 1.0, EDGES), EDGES)[0, 1]
    c = F.knot_positions(EDGES)
    val, der = fun.pair_potential(c[5:30].astype(np.float32), np.zeros(25, dtype=np.int64))
    np.testing.assert_allclose(val, u[5:30], atol=1e-4)
    np.testing.assert_allclose(der, (u[6:31] - u[4:29]) / (2 * 0.5), atol=1e-3)


def test_overflow_bin_restrains_only_from_below():
    # a pair certain to be beyond 22 Å: flat (zero force) at any d ≥ the last knot, repulsive below 22 Å
    probs = np.zeros((2, 2, 42))
    probs[..., -1] = 1.0
    fun = F.DistogramEnergy(F.knot_potentials(probs, EDGES), F.knot_positions(EDGES), np.ones((2, 2)),
                            np.zeros(0, dtype=int), clash_weight=0.0)

    def energy_grad(dd: float) -> tuple[float, float]:
        x = np.array([[0.0, 0, 0], [dd, 0, 0]])
        e, g = fun(x.ravel())
        return e, g[3]                      # dE/dx of residue 1 (along the pair axis) = dE/dd

    far = [energy_grad(dd) for dd in (22.3, 25.0, 40.0, 100.0)]
    assert all(e == pytest.approx(far[0][0], abs=1e-6) and g == pytest.approx(0.0, abs=1e-7) for e, g in far)
    near = [energy_grad(dd) for dd in (21.9, 20.0, 15.0, 10.0, 5.0)]
    assert all(g < 0 for _, g in near), near          # the force pushes the pair apart from any d < 22 Å ...
    energies = [far[0][0]] + [e for e, _ in near]
    assert all(b > a for a, b in zip(energies, energies[1:])), energies   # ... more the shorter it is
    assert energies[-1] > far[0][0] + 5.0
    # folding three unbonded residues 10 Å apart sends every pair beyond 22 Å
    p3 = np.zeros((3, 3, 42))
    p3[..., -1] = 1.0
    xyz, _ = F.fold(np.full((3, 3), 10.0) * (1 - np.eye(3)), p3, EDGES, breaks=(0, 1))
    assert (G.distance_matrix(xyz) + 100 * np.eye(3)).min() >= 22.0


def _good_inputs(L: int = 6):
    ca = np.cumsum(np.full((L, 3), 2.2), axis=0)
    d = G.distance_matrix(ca)
    return d, F.gaussian_distogram(d, 1.0, EDGES)


@pytest.mark.parametrize("mutate, message", [
    (lambda d, p, e: (d, p[:, :, :-1], e), "n_bins - 1"),
    (lambda d, p, e: (d, p[:4, :4], e), "residues"),
    (lambda d, p, e: (d, p[..., 0], e), "shape"),
    (lambda d, p, e: (d, p * 1.2, e), "sum to 1"),
    (lambda d, p, e: (d, np.where(np.arange(42) == 3, np.nan, p), e), "NaN"),
    (lambda d, p, e: (d, p - 0.02 * (np.arange(42) == 0) + 0.02 * (np.arange(42) == 1), e), "negative"),
    (lambda d, p, e: (d, p, e[::-1]), "increasing"),
    (lambda d, p, e: (d, p, np.concatenate([e[:10], e[10:] + 0.1])), "uniformly"),
    (lambda d, p, e: (d, p, np.where(np.arange(41) == 5, np.inf, e)), "finite"),
])
def test_bad_distogram_raises_clear_value_error(mutate, message):
    d, p = _good_inputs()
    d2, p2, e2 = mutate(d, p, EDGES)
    with pytest.raises(ValueError, match=message):
        R.reconstruct(d2, method="distogram", distogram=p2, bin_edges=e2)


def test_bad_weights_and_starts_raise():
    d, p = _good_inputs()
    with pytest.raises(ValueError, match="weights"):
        F.fold(d, p, EDGES, weights=-np.ones_like(d))
    with pytest.raises(ValueError, match="starts"):
        F.fold(d, p, EDGES, starts=("random",))


def test_reconstruct_without_distogram_falls_back_to_refine(caplog):
    d, _ = _good_inputs()
    with caplog.at_level(logging.INFO, logger="proteinmtp.reconstruction"):
        xyz, info = R.reconstruct(d, method="distogram")
    assert info["method"] == "refine" and "needs distogram" in caplog.text and "'refine' instead" in caplog.text
    ref, _ = R.reconstruct(d, method="refine")
    np.testing.assert_allclose(xyz, ref)


def test_structure_from_distances_uses_the_distogram(test_data_dir, caplog):
    from types import (
        SimpleNamespace as DistancePrediction,  # model.DistancePrediction's fields, without torch
    )

    from proteinmtp.predict import structure_from_distances

    ca = _load(test_data_dir, "small_114")[:40]
    L = len(ca)
    d = G.distance_matrix(ca)
    probs = F.gaussian_distogram(d, 0.5, EDGES)
    common = dict(sequence="A" * L, dist=d, contact_prob=np.zeros((L, L)), pair_confidence=np.ones((L, L)),
                  residue_confidence=np.ones(L))
    no_distogram = dict(distogram_probs=None, bin_edges=None)
    sp = structure_from_distances(DistancePrediction(**common, distogram_probs=probs, bin_edges=EDGES),
                                  method="distogram")
    assert sp.info["method"] == "distogram" and "energy" in sp.info
    assert max(M.tm_score(sp.ca_xyz, ca), M.tm_score(G.mirror(sp.ca_xyz), ca)) > 0.9
    with caplog.at_level(logging.INFO, logger="proteinmtp.reconstruction"):
        sp2 = structure_from_distances(DistancePrediction(**common, **no_distogram), method="distogram")   # coords-head-like
    assert sp2.info["method"] == "refine" and caplog.text.count("'refine' instead") == 1   # said once, in one place
