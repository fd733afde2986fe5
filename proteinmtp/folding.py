"""Folding from a predicted distogram: per-pair −log p(d) potentials + bond + clash terms, several starts.

Used by ``reconstruction.reconstruct(..., method="distogram")``::

    probs [L, L, K], bin_edges [K-1] Å ──check_distogram──▶ DistogramPotential (per-pair spline of −log p)
    starts: MDS of the given distances, of the distogram's expected distance, of its mode (overflow pairs
    filled by shortest paths) ──▶ short L-BFGS "scout" runs ──▶ the lowest-energy one polished ──▶ xyz

The distogram's bins (the model's: K = 42, bin 0 = d ≤ 2 Å, 40 bins of 0.5 Å, bin K−1 = overflow d > 22 Å)
must have uniformly spaced edges. The potential of pair (i, j) at distance d:

* knots at the bin centres c_0 … c_{K−1} (the first and last bins get the interior width h, so the knots are
  uniform); knot value U_k = −log((p_k + ε) / h) for k < K−1, i.e. minus the log of the probability
  density per Å, and U_{K−1} = −log((p_{K−1} + ε) / ``overflow_width``) for the overflow: its mass is read
  as spread over ``overflow_width`` Å beyond the last edge. Each pair's minimum is subtracted (U ≥ 0);
* cubic Hermite interpolation between knots with Catmull–Rom slopes, slope 0 at both end knots, and
  constant beyond them: C¹, and beyond the overflow knot flat, so the overflow bin restrains only from
  below (d > 22 Å is not pulled back); below c_0 only the clash term acts;
* probabilities are symmetrised, (p_ij + p_ji) / 2; ε = ``PROB_FLOOR``; before the log 10 % of each pair's
  mass is spread by a Laplace kernel of 2 Å (``knot_potentials``), so the potential has no flat plateau far
  from the predicted mass: a pair the distogram puts beyond 22 Å is pushed out from any shorter distance.

Energy (L-BFGS, float32 pair work, float64 sums), with W = Σ_{i<j} w_ij over restrained pairs:

    E = Σ_{i<j, not bonded} w_ij U_ij(d_ij) / W + λ_b (2/L) Σ_bonds (d − 3.8 Å)²
        + λ_c Σ_{|i−j| ≥ 2} max(0, 4 Å − d)² / W

the bond and clash terms as in ``geometry.refine`` (same defaults); w_ij = predicted pair confidence
(uniform when None). Bonded pairs (i, i+1 not across a chain break) take the bond term, not the distogram.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize

from proteinmtp.geometry import (
    BOND_WEIGHT,
    CLASH_DISTANCE,
    CLASH_WEIGHT,
    _bond_pairs,
    _fill_missing,
    blas_threads,
    bond_energy,
    check_distance_matrix,
    classical_mds,
)

PROB_FLOOR = 1e-4        # ε added to every bin probability before the log
TAIL_MIX = 0.1           # fraction of each pair's probability spread by a Laplace kernel (no flat plateaus)
TAIL_SCALE = 2.0         # Å, scale of that kernel
OVERFLOW_WIDTH = 20.0    # Å over which the overflow bin's probability is read as spread beyond the last edge
SUM_TOLERANCE = 1e-2     # |Σ_k p_k − 1| allowed per pair (float16 storage rounds to ~1e-3)
SCOUT_ITER = 25          # L-BFGS iterations per start before the lowest-energy start is polished
MAX_ITER = 200           # L-BFGS iterations in all (scouts included) of the start kept
START_NAMES = ("given", "expected", "mode")
DEFAULT_STARTS = ("given", "expected")   # "mode" reached lower energies but worse structures (DISCUSSION.md)


# ----------------------------------------------------------------------------- input

def check_distogram(probs: np.ndarray, bin_edges: np.ndarray, L: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a distogram; returns (symmetrised probabilities [L, L, K] float64, edges [K-1] float64).

    ``probs`` [L, L, K] with K ≥ 3, finite, ≥ 0, each pair summing to 1 (± ``SUM_TOLERANCE``); ``bin_edges``
    [K-1] Å, finite, strictly increasing and uniformly spaced (the potential's knots are uniform). ``L``:
    the expected number of residues (the distance matrix's). Anything else is a ``ValueError`` saying what.
    """
    p = np.asarray(probs, dtype=np.float64)
    e = np.asarray(bin_edges, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] != p.shape[1]:
        raise ValueError(f"distogram: expected probabilities of shape [L, L, n_bins], got {p.shape}")
    if L is not None and p.shape[0] != L:
        raise ValueError(f"distogram: {p.shape[0]} residues but the distance matrix has {L}")
    K = p.shape[2]
    if K < 3:
        raise ValueError(f"distogram: need at least 3 bins (below, interior, overflow), got {K}")
    if e.shape != (K - 1,):
        raise ValueError(f"distogram: bin_edges must have n_bins - 1 = {K - 1} entries, got shape {e.shape}")
    if not np.isfinite(e).all() or (np.diff(e) <= 0).any():
        raise ValueError("distogram: bin_edges must be finite and strictly increasing")
    if K > 3:
        step = np.diff(e)
        if not np.allclose(step, step[0], rtol=1e-4, atol=1e-5):
            raise ValueError(f"distogram: bin_edges must be uniformly spaced, got steps {step.min():.4g}–"
                             f"{step.max():.4g} Å")
    bad = ~np.isfinite(p)
    if bad.any():
        i, j, k = np.argwhere(bad)[0]
        raise ValueError(f"distogram: {int(bad.sum())} probabilities are NaN or infinite (first at "
                         f"[{i}, {j}, {k}])")
    if (p < 0).any():
        i, j, k = np.argwhere(p < 0)[0]
        raise ValueError(f"distogram: negative probability at [{i}, {j}, {k}] = {p[i, j, k]:.3g}")
    s = p.sum(axis=2)
    off = np.abs(s - 1.0) > SUM_TOLERANCE
    if off.any():
        i, j = np.argwhere(off)[0]
        raise ValueError(f"distogram: probabilities must sum to 1 over the bins; {int(off.sum())} pairs do not "
                         f"(first [{i}, {j}] sums to {s[i, j]:.4f})")
    return 0.5 * (p + p.transpose(1, 0, 2)), e


def knot_positions(bin_edges: np.ndarray) -> np.ndarray:
    """Knots of the potential [K] Å: the bin centres, the first and last bins given the interior width."""
    e = np.asarray(bin_edges, dtype=np.float64)
    h = float(e[1] - e[0]) if len(e) > 1 else 1.0
    return np.concatenate([[e[0] - h / 2], 0.5 * (e[1:] + e[:-1]), [e[-1] + h / 2]])


def knot_potentials(probs: np.ndarray, bin_edges: np.ndarray, *, overflow_width: float = OVERFLOW_WIDTH,
                    floor: float = PROB_FLOOR, tail_mix: float = TAIL_MIX, tail_scale: float = TAIL_SCALE
                    ) -> np.ndarray:
    """−log density at the knots, each pair's minimum subtracted. probs [..., K] -> [..., K] (nats ≥ 0).

    Before the log, a fraction ``tail_mix`` of each pair's probability is spread over the knots by a Laplace
    kernel exp(−|c_k − c_l| / ``tail_scale``) (each source bin's mass kept): far from the predicted mass the
    potential then rises linearly (slope ≈ 1/``tail_scale`` per Å) instead of sitting on the flat floor, so
    a pair far from where the distogram puts it still feels a force towards it (a pair certain to be in the
    overflow is pushed out from any d < 22 Å)."""
    e = np.asarray(bin_edges, dtype=np.float64)
    h = float(e[1] - e[0]) if len(e) > 1 else 1.0
    p = np.asarray(probs, dtype=np.float64)
    if tail_mix > 0:
        c = knot_positions(e)
        kern = np.exp(-np.abs(c[:, None] - c[None, :]) / tail_scale)         # [K_from, K_to]
        kern /= kern.sum(axis=1, keepdims=True)
        p = (1.0 - tail_mix) * p + tail_mix * (p.astype(np.float32) @ kern.astype(np.float32))
    width = np.full(p.shape[-1], h)
    width[-1] = overflow_width
    u = -np.log((p + floor) / width)
    return u - u.min(axis=-1, keepdims=True)


def expected_distance(probs: np.ndarray, bin_edges: np.ndarray, beyond: np.ndarray | None = None) -> np.ndarray:
    """Mean distance of a distogram [L, L] Å: bin centres (``knot_positions``) weighted by probability; the
    overflow bin counts at ``beyond`` [L, L] Å where given (clipped to ≥ its knot), else at its knot."""
    c = knot_positions(bin_edges)
    p = np.asarray(probs, dtype=np.float64)
    d = p[..., :-1] @ c[:-1]
    over = np.full(p.shape[:2], c[-1]) if beyond is None else np.maximum(beyond, c[-1])
    out = d + p[..., -1] * over
    np.fill_diagonal(out, 0.0)
    return out


def gaussian_distogram(dist: np.ndarray, sigma: float | np.ndarray, bin_edges: np.ndarray) -> np.ndarray:
    """A distogram from distances and a Gaussian spread: p_k = Φ((hi_k − d)/σ) − Φ((lo_k − d)/σ) over the
    bins of ``bin_edges`` (lo_0 = −∞, hi_{K−1} = +∞), so each pair sums to 1. ``dist`` [L, L] Å, ``sigma``
    Å (scalar or [L, L], > 0) -> [L, L, K]. The bins of a sharp (small σ) distogram hold the true distance."""
    from scipy.special import ndtr

    d = np.asarray(dist, dtype=np.float64)[..., None]
    s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), d.shape[:2])[..., None]
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("gaussian_distogram: sigma must be finite and > 0")
    e = np.asarray(bin_edges, dtype=np.float64)
    cdf = ndtr((e - d) / s)                                            # [L, L, K-1]
    zeros = np.zeros(cdf.shape[:2] + (1,))
    return np.diff(np.concatenate([zeros, cdf, zeros + 1.0], axis=2), axis=2)


# ----------------------------------------------------------------------------- potential

class DistogramEnergy:
    """Energy E(xyz) and gradient of the module docstring, for L-BFGS (``fun(flat) -> (E, grad)``).

    ``u`` [L, L, K] knot potentials (``knot_potentials``), ``knots`` [K] uniform Å, ``weights`` [L, L] ≥ 0
    (0 = pair not restrained by the distogram, still by the clash term), ``bonds`` [n] indices i of bonded
    (i, i+1). The distogram and clash terms run over the pairs i < j that are not bonded: distances from
    the Gram matrix, the gradient as one L×L coefficient matrix times xyz (as ``geometry.refine``); each
    pair's spline is stored as the cubic's 4 coefficients per segment, [P·(K−1), 4] float32, read with one
    ``np.take`` per evaluation (fancy indexing of 2-D arrays is ~30× slower here).
    """

    def __init__(self, u: np.ndarray, knots: np.ndarray, weights: np.ndarray, bonds: np.ndarray, *,
                 bond_weight: float = BOND_WEIGHT, clash_distance: float = CLASH_DISTANCE,
                 clash_weight: float = CLASH_WEIGHT):
        L, _, K = u.shape
        self.L, self.K = L, K
        bonded = np.zeros((L, L), dtype=bool)
        bonded[bonds, bonds + 1] = True
        iu, ju = np.triu_indices(L, 1)
        keep = ~bonded[iu, ju]
        i, j = iu[keep], ju[keep]
        self.flat = (i * L + j).astype(np.int64)
        w = np.asarray(weights, dtype=np.float64)[i, j]
        wsum = max(float(w.sum()), 1e-12)
        self.w = (w / wsum).astype(np.float32)
        uu = u[i, j].astype(np.float64)                                # [P, K]
        m = np.zeros_like(uu)                                          # Catmull–Rom slopes × h, 0 at the ends
        m[:, 1:-1] = 0.5 * (uu[:, 2:] - uu[:, :-2])
        u0, u1, m0, m1 = uu[:, :-1], uu[:, 1:], m[:, :-1], m[:, 1:]   # per segment [P, K-1]
        coef = np.stack([u0, m0, -3 * u0 + 3 * u1 - 2 * m0 - m1, 2 * u0 - 2 * u1 + m0 + m1], axis=-1)
        self.coef = coef.astype(np.float32).reshape(-1, 4)             # [P·(K−1), 4]
        self.base = (np.arange(len(i)) * (K - 1)).astype(np.int64)
        self.c0 = np.float32(knots[0])
        self.h = np.float32(knots[1] - knots[0])
        self.bonds = bonds
        self.bond_coef = float(bond_weight) * 2.0 / L
        self.clash_coef = np.float32(clash_weight / wsum) if clash_weight > 0 else np.float32(0.0)
        self.clash_ok = ((j - i) >= 2).astype(np.float32)
        self.clash_distance = np.float32(clash_distance)
        self.u_end = uu[:, -1].astype(np.float32)                      # flat value beyond the last knot
        self.w_end_total = float(np.dot(self.w.astype(np.float64), uu[:, -1]))
        self.far2 = np.float32(max(float(knots[-1]), float(clash_distance)) ** 2)

    def pair_potential(self, d: np.ndarray, pairs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """U(d) and dU/dd, d [n] Å (float32) of the pairs ``pairs`` [n] (indices into the pair list; all
        pairs when None) -> ([n], [n])."""
        t = (d - self.c0) * (1 / self.h)
        np.clip(t, 0.0, self.K - 1, out=t)
        k = np.minimum(t.astype(np.int64), self.K - 2)
        s = t - k                                                      # in [0, 1]
        base = self.base if pairs is None else self.base[pairs]
        a0, a1, a2, a3 = np.take(self.coef, base + k, axis=0).T        # 4 × [n] (strided views)
        a3s = a3 * s
        val = a0 + s * (a1 + s * (a2 + a3s))
        der = (a1 + s * (2 * a2 + 3 * a3s)) * (1 / self.h)
        return val, der   # beyond the end knots s is 0 or 1 and the end slopes are 0: flat, zero derivative

    def __call__(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        L = self.L
        x64 = flat.reshape(L, 3)
        x = x64.astype(np.float32)
        sq = (x * x).sum(axis=1)
        g2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
        g2p = g2.ravel()[self.flat]                                    # [P] squared distances
        # beyond the last knot a pair's potential is its (flat) end value: only nearer pairs need the spline
        near = np.flatnonzero(g2p < self.far2)
        d = np.sqrt(np.maximum(g2p[near], np.float32(1e-8)))
        w = self.w[near]
        val, der = self.pair_potential(d, near)
        e = self.w_end_total + float(np.dot(w, val - self.u_end[near]))
        coef = w * der
        if self.clash_coef > 0:
            short = np.maximum(self.clash_distance - d, np.float32(0.0)) * self.clash_ok[near]
            e += float(self.clash_coef) * float(np.dot(short, short))
            coef -= (2 * self.clash_coef) * short
        c = np.zeros(L * L, dtype=np.float32)
        c[self.flat[near]] = coef / d
        c = c.reshape(L, L)
        c = c + c.T                                                    # dE/dx_i = Σ_j c_ij (x_i − x_j)
        grad = x64 * c.sum(axis=1, dtype=np.float64)[:, None] - (c @ x).astype(np.float64)
        eb, gb = bond_energy(x64, self.bonds, self.bond_coef)
        return e + eb, (grad + gb).ravel()


# ----------------------------------------------------------------------------- starts and folding

def _mds_start(d: np.ndarray) -> np.ndarray:
    return classical_mds(d)


def mode_start_distances(probs: np.ndarray, bin_edges: np.ndarray) -> np.ndarray:
    """Distances for the "mode" start [L, L] Å: the most probable bin's centre where that bin is not the
    overflow; overflow-mode pairs get shortest paths over the others (≥ the last edge)."""
    c = knot_positions(bin_edges)
    mode = np.argmax(probs, axis=2)
    d = c[mode]
    np.fill_diagonal(d, 0.0)
    known = mode < len(c) - 1
    np.fill_diagonal(known, True)
    if known.all():
        return d
    filled = _fill_missing(np.where(known, d, np.nan), known)
    filled[~np.isfinite(filled)] = c[-1]
    return np.where(known, d, np.maximum(filled, bin_edges[-1]))


def fold(
    dist: np.ndarray,
    probs: np.ndarray,
    bin_edges: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    breaks: Sequence[int] = (),
    mask: np.ndarray | None = None,
    bond_weight: float = BOND_WEIGHT,
    clash_distance: float = CLASH_DISTANCE,
    clash_weight: float = CLASH_WEIGHT,
    overflow_width: float = OVERFLOW_WIDTH,
    starts: Sequence[str] = DEFAULT_STARTS,
    scout_iter: int = SCOUT_ITER,
    max_iter: int = MAX_ITER,
    tol: float = 1e-9,
) -> tuple[np.ndarray, dict]:
    """Fold Cα coordinates from a distogram (module docstring). Returns (``xyz`` [L, 3] Å centred, info).

    ``dist`` [L, L] Å: the model's point estimate (the "given" start, and where the overflow bin's distance
    is read for the "expected" start); ``probs`` [L, L, K], ``bin_edges`` [K-1] Å (``check_distogram``);
    ``weights`` [L, L] ≥ 0 (pair confidence; uniform when None); ``mask`` [L, L] bool, False = pair not
    restrained (weight 0); ``breaks`` as in ``geometry.refine``. ``starts``: any of "given", "expected",
    "mode"; each runs ``scout_iter`` L-BFGS iterations, the lowest energy continues to ``max_iter`` in all.
    info: energy (final), start (chosen), start_energies {name: energy after scouting}, iterations.
    """
    d = check_distance_matrix(dist, mask=mask)
    L = d.shape[0]
    p, e = check_distogram(probs, bin_edges, L)
    if not starts or any(s not in START_NAMES for s in starts):
        raise ValueError(f"fold: starts must be a non-empty subset of {START_NAMES}, got {tuple(starts)}")
    w = np.ones((L, L)) if weights is None else np.array(weights, dtype=np.float64, copy=True)
    if w.shape != (L, L) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"fold: weights must be finite, ≥ 0 and [L, L] = [{L}, {L}]")
    w = 0.5 * (w + w.T)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        w[~(m & m.T)] = 0.0
    known = np.isfinite(d)
    if L < 2:
        xyz = np.zeros((L, 3))
        return xyz, {"energy": 0.0, "start": "given", "start_energies": {}, "iterations": 0}
    bonds = _bond_pairs(L, breaks)
    fun = DistogramEnergy(knot_potentials(p, e, overflow_width=overflow_width), knot_positions(e), w, bonds,
                          bond_weight=bond_weight, clash_distance=clash_distance, clash_weight=clash_weight)

    start_d = {}
    for name in starts:
        if name == "given":
            start_d[name] = d
        elif name == "expected":
            start_d[name] = expected_distance(p, e, beyond=np.where(known, d, e[-1]))
        else:
            start_d[name] = mode_start_distances(p, e)

    def run(x0: np.ndarray, iters: int):
        with blas_threads(1):
            return minimize(fun, x0.ravel(), jac=True, method="L-BFGS-B",
                            options={"maxiter": iters, "ftol": tol, "gtol": 1e-7, "maxcor": 20})

    rng = np.random.default_rng(0)
    scouts, energies = {}, {}
    for name, dd in start_d.items():
        x0 = classical_mds(dd, mask=np.isfinite(dd))
        if np.min(np.linalg.norm(np.diff(x0, axis=0), axis=1)) < 1e-6:   # degenerate MDS: jitter
            x0 = x0 + rng.normal(scale=0.1, size=x0.shape)
        res = run(x0, scout_iter if len(start_d) > 1 else max_iter)
        scouts[name], energies[name] = res, float(res.fun)
    best = min(energies, key=energies.get)
    res = scouts[best]
    iters = int(sum(r.nit for r in scouts.values()))
    if len(start_d) > 1 and max_iter > scout_iter:
        res2 = run(res.x, max_iter - scout_iter)
        iters += int(res2.nit)
        if np.isfinite(res2.x).all() and res2.fun <= res.fun:
            res = res2
    xyz = res.x.reshape(L, 3)
    return xyz - xyz.mean(axis=0), {"energy": float(res.fun), "start": best, "start_energies": energies,
                                    "iterations": iters}


__all__ = ["check_distogram", "gaussian_distogram", "knot_positions", "knot_potentials", "expected_distance", "DistogramEnergy",
           "mode_start_distances", "fold"]
