"""From distances to coordinates: distance matrices, classical MDS, refinement, the clash-resolving final
stage, hand choice, Kabsch.

The pieces ``proteinmtp.reconstruction`` assembles (its registry names the methods)::

    dist [L, L] Å ──check_distance_matrix──▶ classical_mds (top-3 eigenpairs) ──▶ refine (stress + bonds
    + clashes, L-BFGS) ──▶ resolve_clashes (strong bond + clash terms) ──▶ choose_hand ──▶ ca_xyz [L, 3] Å

Choices (measured in ``benchmarks/reconstruction_study.py``, written up in DISCUSSION.md):

* Non-symmetric input is symmetrised, ``(D + Dᵀ) / 2``, and the diagonal set to 0; a model's two
  triangles are two estimates of the same distance. NaN/inf (outside the ``mask``) and negative
  distances raise ``ValueError``.
* Missing entries (``mask`` False) are filled, for MDS only, by shortest paths over the known
  entries plus the chain edges ``i, i+1`` at 3.8 Å (upper bounds by the triangle inequality); the
  refinement then ignores them (weight 0), so they only steer the starting point.
* Refinement uses uniform weights unless confidence weights are given (1/d² and short-range
  weighting were worse on noisy natives); the predicted distance of a chain-consecutive pair is
  replaced by the bond term (3.8 Å), which is not applied across ``breaks``.
* Every reconstruction ends with ``resolve_clashes``: the weak clash term of ``refine`` (one pair weighs
  like one pair's stress) let a compressed fit put non-bonded Cα atoms within 1 Å of each other (the
  prior's distances: ~100 pairs under 3.5 Å per 100 residues). The final stage keeps the structure's own
  distances as targets and makes the bond and clash terms (onsets 4.0 Å, i, i+2 4.6 Å, above the bounds
  3.5 / 4.2 Å of ``metrics.clash_check``) win; ``reconstruction.final_stage`` repeats it stronger until
  the check passes. Measured before → after in ``benchmarks/bench_clashes.py``.
* The hand is chosen from Cα pseudo-dihedrals (i, i+1, i+2, i+3): a right-handed α-helix sits near
  +50° (its mirror near −50°), native strands near −100…−170° (weaker evidence). Structures
  without secondary structure (a weak model's output) give no signal (``info["score"]`` ≈ 0).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
from scipy.optimize import minimize
from scipy.sparse.linalg import eigsh

from proteinmtp.constants import CA_CA_BOND, CHAIN_BREAK_CA_CA

logger = logging.getLogger(__name__)

# Refinement defaults (relative weights of the energy terms; see ``refine``).
BOND_WEIGHT = 30.0        # one bond weighs as much as this many residues' share of the stress
CLASH_DISTANCE = 4.0      # Å, non-consecutive Cα closer than this are penalised
CLASH_WEIGHT = 1.0
HELIX_WINDOW = (20.0, 80.0)  # degrees: Cα pseudo-dihedral range of a right-handed α-helix
# The final clash-resolving stage (``resolve_clashes``): penalty onsets above the bounds it must reach
# (constants.CLASH_MIN_CA_CA 3.5 Å, I2_MIN_CA_CA 4.2 Å), and the strength of its bond + clash terms.
FINAL_CLASH_DISTANCE = 4.0   # Å
FINAL_I2_DISTANCE = 4.6      # Å (natives: i, i+2 ≥ 4.4 Å)
FINAL_BOND_WEIGHT = 3000.0   # 100 × BOND_WEIGHT: a bond or a clash outweighs the whole stress
FINAL_MAX_ITER = 100         # L-BFGS iterations per round (200 gained nothing on noisy natives, cost 2x)
STRAND_WINDOW = (-170.0, -100.0)  # degrees: Cα pseudo-dihedrals of native strands / extended segments
STRAND_WEIGHT = 0.5          # weight of the strand evidence relative to the helix evidence


# ----------------------------------------------------------------------------- distances

def distance_matrix(xyz: np.ndarray) -> np.ndarray:
    """Euclidean distances. ``xyz`` [L, 3] Å -> [L, L] Å; a NaN row in xyz gives NaN row/column."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"distance_matrix: expected coordinates of shape [L, 3], got {xyz.shape}")
    diff = xyz[:, None, :] - xyz[None, :, :]
    return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))


def chain_breaks(ca: np.ndarray, max_step: float = CHAIN_BREAK_CA_CA) -> tuple[int, ...]:
    """Indices i with |Cα(i+1) − Cα(i)| > ``max_step`` (4.2 Å). ``ca`` [L, 3] Å; a pair with a missing
    (NaN) Cα is not a break.

    >>> chain_breaks(np.array([[0.0, 0, 0], [3.8, 0, 0], [12.0, 0, 0], [np.nan, 0, 0], [20.0, 0, 0]]))
    (1,)
    """
    ca = np.asarray(ca, dtype=np.float64)
    if len(ca) < 2:
        return ()
    step = np.linalg.norm(np.diff(ca, axis=0), axis=1)
    with np.errstate(invalid="ignore"):
        return tuple(int(i) for i in np.flatnonzero(step > max_step))


def check_distance_matrix(
    dist: np.ndarray, *, name: str = "distance matrix", mask: np.ndarray | None = None
) -> np.ndarray:
    """Validate and clean a distance matrix; returns a new symmetric float64 [L, L] array (Å).

    Rules: must be square 2-D; entries where ``mask`` is True (all entries when ``mask`` is None)
    must be finite and ≥ 0, else ``ValueError`` naming the first bad entry. A non-symmetric
    matrix is symmetrised as (D + Dᵀ)/2 (where only one of (i, j), (j, i) is known, that one is
    used); the diagonal is set to 0. Masked-out entries are returned as NaN.
    """
    d = np.array(dist, dtype=np.float64, copy=True)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"{name}: expected a square [L, L] matrix, got shape {d.shape}")
    L = d.shape[0]
    if mask is None:
        m = np.ones((L, L), dtype=bool)
    else:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (L, L):
            raise ValueError(f"{name}: mask shape {m.shape} does not match matrix shape {(L, L)}")
    np.fill_diagonal(m, True)
    np.fill_diagonal(d, 0.0)
    bad = m & ~np.isfinite(d)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}: {int(bad.sum())} entries are NaN or infinite (first at [{i}, {j}] = {d[i, j]}); "
            "pass a mask marking the missing entries, or fix the input"
        )
    neg = m & (d < 0)
    if neg.any():
        i, j = np.argwhere(neg)[0]
        raise ValueError(f"{name}: negative distance at [{i}, {j}] = {d[i, j]:.3f} Å")
    both = m & m.T
    out = np.full((L, L), np.nan)
    out[both] = 0.5 * (d + d.T)[both]
    only_ij = m & ~m.T                                   # (i, j) known, (j, i) not: use (i, j)
    out[only_ij] = d[only_ij]
    out[only_ij.T] = d.T[only_ij.T]
    np.fill_diagonal(out, 0.0)
    return out


def _fill_missing(dist: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill unknown entries by shortest paths over known entries + chain edges (3.8 Å)."""
    from scipy.sparse.csgraph import shortest_path

    L = dist.shape[0]
    graph = np.where(known, dist, 0.0)
    idx = np.arange(L - 1)
    chain_missing = ~known[idx, idx + 1]
    graph[idx[chain_missing], idx[chain_missing] + 1] = CA_CA_BOND
    graph[idx[chain_missing] + 1, idx[chain_missing]] = CA_CA_BOND
    # zero entries of a dense graph are "no edge": nudge genuine zero distances (coincident points)
    graph[known & (graph == 0)] = 1e-6
    np.fill_diagonal(graph, 0.0)
    sp = shortest_path(graph, method="D", directed=False)
    out = np.where(known, dist, sp)
    return out


# ----------------------------------------------------------------------------- MDS

def classical_mds(dist: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Classical (Torgerson) MDS into 3-D using only the top-3 eigenpairs.

    ``dist`` [L, L] Å (symmetrised, see ``check_distance_matrix``); ``mask`` [L, L] bool, True
    where the entry is known (None: all known). Returns ``xyz`` [L, 3] Å, centred at the origin.

    The Gram matrix is B = −½ J D² J, formed by double centring with row/column means (no L×L
    centring product); its 3 largest eigenpairs come from ``scipy.sparse.linalg.eigsh`` (Lanczos).
    Negative eigenvalues (noise) are clipped to 0. L ≤ 4 is solved on the (≤ 4×4) Gram matrix
    directly.
    """
    d = check_distance_matrix(dist, mask=mask)
    L = d.shape[0]
    if L == 0:
        raise ValueError("classical_mds: empty distance matrix (L = 0)")
    known = np.isfinite(d)
    if not known.all():
        d = _fill_missing(d, known)
        if not np.isfinite(d).all():  # disconnected pieces (only possible without chain edges)
            d[~np.isfinite(d)] = np.nanmax(d[np.isfinite(d)])
    d2 = d * d
    row = d2.mean(axis=1)
    b = -0.5 * (d2 - row[:, None] - row[None, :] + row.mean())
    if not np.abs(b).max() > 1e-12:      # all points coincide: nothing to embed
        return np.zeros((L, 3))
    if L <= 4:
        vals, vecs = np.linalg.eigh(b)
        vals, vecs = vals[::-1][:3], vecs[:, ::-1][:, :3]
        if L < 3:
            vals = np.concatenate([vals, np.zeros(3 - L)])
            vecs = np.concatenate([vecs, np.zeros((L, 3 - L))], axis=1)
    else:
        v0 = np.ones(L) / np.sqrt(L) + np.linspace(-1e-3, 1e-3, L)  # deterministic start vector
        with blas_threads(1):  # Lanczos mat-vecs: 1 BLAS thread is ~5x faster than 2 on this CPU
            vals, vecs = eigsh(b, k=3, which="LA", v0=v0, tol=1e-10)
        order = np.argsort(vals)[::-1]
        vals, vecs = vals[order], vecs[:, order]
    xyz = vecs * np.sqrt(np.clip(vals, 0.0, None))[None, :]
    return xyz - xyz.mean(axis=0)


# ----------------------------------------------------------------------------- refinement

@contextmanager
def blas_threads(n: int):
    """Limit BLAS threads inside the block (threadpoolctl, a declared dependency); without threadpoolctl
    a warning is logged and BLAS keeps its own thread count (slower MDS/refinement, same result)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        logger.warning("threadpoolctl is not installed: BLAS threads are not limited (MDS/refinement slower)")
        yield
        return
    with threadpool_limits(limits=n):
        yield


def _bond_pairs(L: int, breaks: Sequence[int]) -> np.ndarray:
    """Indices i of chain-consecutive pairs (i, i+1), excluding chain breaks. [n_bonds] int."""
    i = np.arange(L - 1)
    if len(breaks):
        b = np.asarray(breaks, dtype=int)
        if ((b < 0) | (b >= max(L - 1, 1))).any():
            raise ValueError(f"breaks must lie in [0, L-2] = [0, {L - 2}], got {list(breaks)}")
        i = np.setdiff1d(i, b)
    return i


def bond_energy(x: np.ndarray, bonds: np.ndarray, coef: float) -> tuple[float, np.ndarray]:
    """Cα–Cα bond term ``coef · Σ (|x_{i+1} − x_i| − 3.8 Å)²`` over ``bonds`` (from ``_bond_pairs``) and its
    gradient [L, 3] (float64 ``x`` [L, 3] Å). Shared by ``refine`` and distogram folding."""
    grad = np.zeros_like(x)
    if not len(bonds):
        return 0.0, grad
    v = x[bonds + 1] - x[bonds]
    bl = np.sqrt((v * v).sum(axis=1))
    br = bl - CA_CA_BOND
    gb = (2.0 * coef) * (br / np.maximum(bl, 1e-12))[:, None] * v
    np.add.at(grad, bonds + 1, gb)
    np.add.at(grad, bonds, -gb)
    return coef * float((br * br).sum()), grad


def clash_onsets(L: int, breaks: Sequence[int], clash_distance: float, i2_distance: float | None = None,
                 *, across_breaks: bool = False) -> np.ndarray:
    """[L, L] float32 distance (Å) below which a pair is penalised by the clash term; 0 = never.

    Pairs |i − j| ≥ 2 get ``clash_distance``; with ``i2_distance``, the i, i+2 pairs inside one chain segment
    (no break at i or i+1) get that instead; with ``across_breaks``, the pairs (i, i+1) across a break (not
    bonded) get ``clash_distance`` too. ``breaks`` as in ``refine``."""
    sep = np.abs(np.arange(L)[:, None] - np.arange(L)[None, :])
    out = np.where(sep >= 2, np.float32(clash_distance), np.float32(0.0)).astype(np.float32)
    brk = np.zeros(max(L - 1, 0), dtype=bool)
    if len(breaks):
        brk[np.asarray(breaks, dtype=int)] = True
    if i2_distance is not None and L > 2:
        i = np.flatnonzero(~brk[:-1] & ~brk[1:])
        out[i, i + 2] = out[i + 2, i] = np.float32(i2_distance)
    if across_breaks and brk.any():
        i = np.flatnonzero(brk)
        out[i, i + 1] = out[i + 1, i] = np.float32(clash_distance)
    return out


class _StressEnergy:
    """Refinement energy E(xyz) and its gradient, for L-BFGS.

    E = Σ_{i<j} w_ij (d_ij − D_ij)² / W                    (stress; W = Σ_{i<j} w_ij)
        + k_b Σ_bonds (d_i,i+1 − 3.8 Å)²                    (bond term)
        + k_c Σ_{i<j} max(0, c_ij − d_ij)²                   (clash term, c_ij from ``clash_onsets``)

    ``refine`` uses k_b = λ_b · 2 / L (each bond weighs λ_b residues' stress) and k_c = λ_c / W (a clash
    weighs like one pair's stress); ``resolve_clashes`` makes both terms strong. The L×L work runs in
    float32 (4–6× faster than float64 here: the matrices stay in cache); energies are summed in float64.
    """

    def __init__(self, dist, weights, bonds, bond_coef, onsets, clash_coef):
        L = dist.shape[0]
        self.L = L
        wsum = max(float(np.triu(weights, 1).sum()), 1e-12)
        self.d_t = dist.astype(np.float32)
        self.w = (weights / wsum).astype(np.float32)
        self.bonds = bonds
        self.bond_coef = float(bond_coef)
        self.onsets = onsets
        self.clash_coef = np.float32(clash_coef)

    def __call__(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        x64 = flat.reshape(self.L, 3)
        x = x64.astype(np.float32)
        sq = (x * x).sum(axis=1)
        g2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
        d = np.sqrt(np.maximum(g2, np.float32(1e-8)))
        r = d - self.d_t
        wr = self.w * r
        e = 0.5 * float((wr * r).sum(dtype=np.float64))     # ordered pairs count each pair twice
        coef = wr
        if self.clash_coef > 0:
            short = np.maximum(self.onsets - d, np.float32(0.0))
            e += 0.5 * float(self.clash_coef) * float((short * short).sum(dtype=np.float64))
            coef = coef - self.clash_coef * short
        c = coef / d
        np.fill_diagonal(c, 0.0)
        grad = 2.0 * (x64 * c.sum(axis=1, dtype=np.float64)[:, None] - (c @ x).astype(np.float64))
        eb, gb = bond_energy(x64, self.bonds, self.bond_coef)
        return e + eb, (grad + gb).ravel()


def _lbfgs(fun, start: np.ndarray, max_iter: int, tol: float, gtol: float) -> np.ndarray:
    """Minimise ``fun`` (energy, gradient) from ``start`` [L, 3] Å with L-BFGS on one BLAS thread; the result
    centred at the origin (``start`` if it went non-finite)."""
    with blas_threads(1):
        res = minimize(fun, start.ravel(), jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "ftol": tol, "gtol": gtol, "maxcor": 20})
    xyz = res.x.reshape(start.shape)
    if not np.isfinite(xyz).all():  # pragma: no cover - L-BFGS keeps the last finite iterate in practice
        xyz = start
    return xyz - xyz.mean(axis=0)


def refine(
    xyz0: np.ndarray,
    dist: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    breaks: Sequence[int] = (),
    mask: np.ndarray | None = None,
    bond_weight: float = BOND_WEIGHT,
    clash_distance: float = CLASH_DISTANCE,
    clash_weight: float = CLASH_WEIGHT,
    max_iter: int = 300,
    tol: float = 1e-9,
) -> np.ndarray:
    """Refine coordinates against target distances (stress + Cα–Cα bond + clash terms; L-BFGS).

    ``xyz0`` [L, 3] Å start (e.g. ``classical_mds``); ``dist`` [L, L] Å targets; ``weights``
    [L, L] ≥ 0 (e.g. predicted pair confidence), uniform when None; ``mask`` [L, L] bool, False =
    unknown target (weight 0). ``breaks``: indices i where residues i and i+1 are not bonded.
    Bonded pairs take the 3.8 Å bond term instead of their target. Returns ``xyz`` [L, 3] Å.
    """
    xyz0 = np.asarray(xyz0, dtype=np.float64)
    d = check_distance_matrix(dist, mask=mask)
    L = d.shape[0]
    if xyz0.shape != (L, 3) or not np.isfinite(xyz0).all():
        raise ValueError(f"refine: start coordinates must be finite [L, 3] = [{L}, 3], got {xyz0.shape}")
    if L < 2:
        return xyz0.copy()
    w = np.ones((L, L)) if weights is None else np.array(weights, dtype=np.float64, copy=True)
    if w.shape != (L, L) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"refine: weights must be finite, ≥ 0 and [L, L] = [{L}, {L}]")
    w = 0.5 * (w + w.T)
    known = np.isfinite(d)
    w[~known] = 0.0
    d = np.where(known, d, 0.0)
    np.fill_diagonal(w, 0.0)
    bonds = _bond_pairs(L, breaks)
    if len(bonds):
        w[bonds, bonds + 1] = 0.0
        w[bonds + 1, bonds] = 0.0
    if w.sum() == 0 and not len(bonds):
        return xyz0.copy()

    wsum = max(float(np.triu(w, 1).sum()), 1e-12)
    onsets = clash_onsets(L, breaks, clash_distance) if clash_weight > 0 else np.zeros((L, L), np.float32)
    fun = _StressEnergy(d, w, bonds, float(bond_weight) * 2.0 / L, onsets, clash_weight / wsum)

    # Coincident start points (degenerate MDS) would give zero-length vectors: jitter them.
    x0 = xyz0.copy()
    if L > 1 and np.min(distance_matrix(x0) + np.eye(L) * 1e9) < 1e-6:
        rng = np.random.default_rng(0)
        x0 = x0 + rng.normal(scale=0.1, size=x0.shape)
    return _lbfgs(fun, x0, max_iter, tol, gtol=1e-6)


def resolve_clashes(
    xyz0: np.ndarray,
    breaks: Sequence[int] = (),
    *,
    strength: float = 1.0,
    clash_distance: float = FINAL_CLASH_DISTANCE,
    i2_distance: float = FINAL_I2_DISTANCE,
    bond_weight: float = FINAL_BOND_WEIGHT,
    max_iter: int = FINAL_MAX_ITER,
    tol: float = 1e-9,
    jitter: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """The final, clash-resolving stage: the structure nearest to ``xyz0`` [L, 3] Å in its own distances
    whose bond and clash terms are strong enough to win (L-BFGS). Returns ``xyz`` [L, 3] Å, centred.

    E = stress against xyz0's own distances (uniform weights, every non-bonded pair: the fold the method
    built is kept, its local geometry gives way) + k Σ_bonds (d − 3.8 Å)² + k Σ max(0, c_ij − d_ij)²,
    with k = ``strength`` · ``bond_weight`` · 2 / L for both terms; c_ij = ``i2_distance`` for i, i+2 in one
    segment, ``clash_distance`` for every other non-bonded pair (|i − j| ≥ 2, and i, i+1 across a break).
    The onsets sit above the bounds ``metrics.clash_check`` tests (3.5 Å, 4.2 Å): the terms are soft, and the
    margin absorbs what the stress still pulls. ``reconstruction`` repeats the stage with a stronger
    ``strength`` until the check passes. ``jitter`` Å (seeded by ``seed``): a random kick of the start, so a
    repeat does not restart from the minimum where the last round got stuck; a start with coincident points
    or a flat (planar, straight) one is always kicked by 0.1 Å.
    """
    x0 = np.asarray(xyz0, dtype=np.float64)
    L = len(x0)
    if x0.shape != (L, 3) or not np.isfinite(x0).all():
        raise ValueError(f"resolve_clashes: coordinates must be finite [L, 3], got {x0.shape}")
    if L < 2:
        return x0 - x0.mean(axis=0) if L else x0.copy()
    d = distance_matrix(x0)
    w = np.ones((L, L))
    np.fill_diagonal(w, 0.0)
    bonds = _bond_pairs(L, breaks)
    if len(bonds):
        w[bonds, bonds + 1] = 0.0
        w[bonds + 1, bonds] = 0.0
    k = float(strength) * float(bond_weight) * 2.0 / L
    onsets = clash_onsets(L, breaks, clash_distance, i2_distance, across_breaks=True)
    fun = _StressEnergy(d, w, bonds, k, onsets, k)
    start = x0
    centred = x0 - x0.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False) if L >= 3 else np.ones(3)
    flat = L >= 3 and sv[-1] < 1e-3 * max(sv[0], 1e-12)
    if jitter > 0 or flat or np.min(d + np.eye(L) * 1e9) < 1e-6:
        # coincident points have no direction to be pushed apart in, and a flat (or straight) start keeps
        # every gradient in its plane (line), where atoms cannot pass each other: a seeded 0.1 Å kick
        start = x0 + np.random.default_rng(seed).normal(scale=max(jitter, 0.1), size=x0.shape)
    return _lbfgs(fun, start, max_iter, tol, gtol=1e-8)


# ----------------------------------------------------------------------------- hand

def ca_dihedrals(xyz: np.ndarray) -> np.ndarray:
    """Cα pseudo-dihedrals (i, i+1, i+2, i+3) in degrees. ``xyz`` [L, 3] -> [L-3] (NaN if undefined)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if len(xyz) < 4:
        return np.zeros(0)
    b0 = xyz[1:-2] - xyz[:-3]
    b1 = xyz[2:-1] - xyz[1:-2]
    b2 = xyz[3:] - xyz[2:-1]
    n1 = np.cross(b0, b1)
    n2 = np.cross(b1, b2)
    b1n = b1 / np.maximum(np.linalg.norm(b1, axis=1, keepdims=True), 1e-12)
    m1 = np.cross(n1, b1n)
    x = (n1 * n2).sum(axis=1)
    y = (m1 * n2).sum(axis=1)
    return -np.degrees(np.arctan2(y, x))  # IUPAC sign: right-handed α-helix ≈ +50°


def mirror(xyz: np.ndarray) -> np.ndarray:
    """Mirror image (x -> −x). [L, 3] -> [L, 3]."""
    out = np.array(xyz, dtype=np.float64, copy=True)
    out[:, 0] *= -1.0
    return out


def hand_evidence(xyz: np.ndarray, breaks: Sequence[int] = (), only: np.ndarray | None = None) -> dict:
    """Counts of Cα pseudo-dihedrals in the windows the hand rule reads (see ``choose_hand``); with
    ``only`` [L] bool, just the quadruples i..i+3 whose four residues are all True."""
    phi = ca_dihedrals(np.asarray(xyz, dtype=np.float64))
    ok = np.isfinite(phi)
    if len(breaks) and len(phi):
        for b in breaks:  # quadruple i..i+3 spans break b if i <= b <= i+2
            ok[max(0, b - 2): b + 1] = False
    if only is not None and len(phi):
        sel = np.asarray(only, dtype=bool)
        ok &= sel[:-3] & sel[1:-2] & sel[2:-1] & sel[3:]
    lo, hi = HELIX_WINDOW
    blo, bhi = STRAND_WINDOW
    ev = {
        "n_helix_right": int((ok & (phi > lo) & (phi < hi)).sum()),
        "n_helix_left": int((ok & (phi < -lo) & (phi > -hi)).sum()),
        "n_strand_native": int((ok & (phi > blo) & (phi < bhi)).sum()),
        "n_strand_mirror": int((ok & (phi < -blo) & (phi > -bhi)).sum()),
    }
    ev["evidence"] = float(ev["n_helix_right"] - ev["n_helix_left"]
                           + STRAND_WEIGHT * (ev["n_strand_native"] - ev["n_strand_mirror"]))
    return ev


MIN_HELIX_QUADRUPLES = 8  # predicted-helical Cα quadruples needed before the hand is read from them alone


def choose_hand(xyz: np.ndarray, breaks: Sequence[int] = (), helix: np.ndarray | None = None
                ) -> tuple[np.ndarray, dict]:
    """Pick the hand of an MDS structure without the native, from Cα pseudo-dihedrals.

    ``helix`` [L] bool (residues the model predicts helical, H/G/I): when at least MIN_HELIX_QUADRUPLES
    (8, about two helical turns) Cα quadruples lie wholly inside predicted helices, the evidence is read
    from those quadruples only (right − left helix window: a right-handed helix gives +50°, its mirror
    −50°); otherwise, or without ``helix``, the all-residue rule below. info ``rule`` says which
    ("predicted_helices" or "all_residues") and ``n_helix_quadruples`` how many were available.

    Native chains put their Cα pseudo-dihedrals (i, i+1, i+2, i+3) in two asymmetric places: α-helices
    near +50° (window +20…+80° holds ~8× more than its mirror −80…−20° on DB5.5 chains) and strands /
    extended segments near −100…−170° (~3× more than the mirror +100…+170°). Evidence = (helix right
    − helix left) + 0.5 · (strand native − strand mirror), the 0.5 ≈ ln 3 / ln 8 log-likelihood ratio;
    quadruples spanning a chain break are skipped. Negative evidence -> return the mirror image.

    info: ``mirrored`` (bool), ``score`` = evidence / number of counted dihedrals of the *input*
    (0 = no signal; sign = its hand) and the four counts. Weakest on small β-rich chains and on
    noisy predictions without secondary structure (a weak model's output): there it is a coin flip.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    rule, n_quad = "all_residues", 0
    if helix is not None:
        sel = np.asarray(helix, dtype=bool)
        if sel.shape != (len(xyz),):
            raise ValueError(f"choose_hand: helix mask must have shape [{len(xyz)}], got {sel.shape}")
        if len(sel) >= 4:
            n_quad = int((sel[:-3] & sel[1:-2] & sel[2:-1] & sel[3:]).sum())
        if n_quad >= MIN_HELIX_QUADRUPLES:
            rule = "predicted_helices"
    if rule == "predicted_helices":
        ev = hand_evidence(xyz, breaks, only=helix)
        ev["evidence"] = float(ev["n_helix_right"] - ev["n_helix_left"])
        tot = ev["n_helix_right"] + ev["n_helix_left"]
    else:
        ev = hand_evidence(xyz, breaks)
        tot = ev["n_helix_right"] + ev["n_helix_left"] + ev["n_strand_native"] + ev["n_strand_mirror"]
    mirrored = ev["evidence"] < 0
    out = mirror(xyz) if mirrored else xyz.copy()
    return out, {"mirrored": bool(mirrored), "score": ev["evidence"] / tot if tot else 0.0, **ev,
                 "rule": rule, "n_helix_quadruples": n_quad}


# ----------------------------------------------------------------------------- superposition

def kabsch_batched(mobile: np.ndarray, target: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal proper rotations (det +1) and translations for S weightings at once:
    ``mobile @ R[s].T + t[s]`` ≈ ``target`` under ``weights[s]``.

    ``mobile``, ``target`` [N, 3] Å (finite); ``weights`` [S, N] ≥ 0 (bool selections work; an all-zero row
    gives some rotation and a translation from the origin). Returns (R [S, 3, 3], t [S, 3]).
    """
    x = np.asarray(mobile, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    n = w.sum(axis=1)
    n = np.where(n > 0, n, 1.0)[:, None]                    # [S, 1]
    cx = (w @ x) / n                                        # [S, 3] weighted centroids
    cy = (w @ y) / n
    xy = (x[:, :, None] * y[:, None, :]).reshape(len(x), 9)  # [N, 9]
    h = (w @ xy).reshape(-1, 3, 3) - n[:, :, None] * cx[:, :, None] * cy[:, None, :]   # weighted covariance
    u, _, vt = np.linalg.svd(h)
    det = np.sign(np.linalg.det(np.matmul(vt.transpose(0, 2, 1), u.transpose(0, 2, 1))))
    det[det == 0] = 1.0
    u[:, :, 2] *= det[:, None]
    r = np.matmul(vt.transpose(0, 2, 1), u.transpose(0, 2, 1))   # [S, 3, 3]
    t = cy - np.matmul(r, cx[:, :, None])[:, :, 0]
    return r, t


def kabsch(mobile: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Optimal proper rotation (det +1) and translation: ``mobile @ R.T + t`` ≈ ``target``.

    ``mobile``, ``target`` [N, 3] Å (N ≥ 1, finite); ``weights`` [N] ≥ 0 optional. Returns
    (R [3, 3], t [3]). One weighting of ``kabsch_batched``.
    """
    a = np.asarray(mobile, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3 or len(a) == 0:
        raise ValueError(f"kabsch: need two [N, 3] arrays of equal shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("kabsch: coordinates contain NaN/inf; pass a mask to superpose instead")
    w = np.ones(len(a)) if weights is None else np.asarray(weights, dtype=np.float64)
    r, t = kabsch_batched(a, b, (w / w.sum())[None])
    return r[0], t[0]


def superpose(
    mobile: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Superpose ``mobile`` [N, 3] on ``target`` [N, 3] by Kabsch over ``mask`` [N] (default: rows
    finite in both). Returns (aligned mobile [N, 3] Å, RMSD over the mask in Å)."""
    a = np.asarray(mobile, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    m = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if mask is not None:
        m &= np.asarray(mask, dtype=bool)
    if not m.any():
        raise ValueError("superpose: no residue has coordinates in both structures")
    r, t = kabsch(a[m], b[m])
    aligned = a @ r.T + t
    rmsd = float(np.sqrt(np.mean(((aligned[m] - b[m]) ** 2).sum(axis=1))))
    return aligned, rmsd
