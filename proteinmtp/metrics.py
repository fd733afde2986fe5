"""Every number in an evaluation: distance errors, contact precision, structure scores.

Definitions: distance and contact metrics use pairs i < j with both residues present; separation ranges from
``constants.SEPARATION_RANGES`` (local 1–5, short 6–11, medium 12–23, long ≥ 24).

* ``tm_score``: residue correspondence fixed (index i ↔ i), maximised over superpositions exactly the
  way the TM-score program searches (seed fragments of length L, L/2, L/4, … ≥ 4 at every offset,
  then up to 20 rounds of "Kabsch on residues within d0_search + 1 Å", d0_search = d0 clipped to
  [4.5, 8] Å), normalised by the native length; d0 = 1.24 (L − 15)^(1/3) − 1.8, 0.5 for L ≤ 21.
  All seeds are iterated together (batched 3×3 SVDs), so the search is vectorised.
* ``gdt``: GDT-TS (1/2/4/8 Å) and GDT-HA (0.5/1/2/4 Å), each cutoff maximised over the superpositions
  visited by the same kind of seeded, iterated search, run once per cutoff as selection threshold
  (every visited superposition scores every cutoff, so a fit found at 4 Å can raise the 2 Å count).
* ``lddt_ca``: Cα pairs within 15 Å in the native (i ≠ j), fraction whose distance is preserved
  within 0.5/1/2/4 Å, averaged over thresholds, pooled over all pairs (biotite's "all" aggregation).
* ``clash_check``: the geometry of ONE structure, no native needed (a reference check, like MolProbity's
  clashscore on Cα): non-bonded Cα pairs under 3.5 Å per 100 residues (``clashes``), i, i+2 pairs under
  4.2 Å, Cα–Cα bonds off 3.8 Å by more than 0.1 Å (``constants``); ``ok`` when none of them occurs.

What each structure score is computed over (the native's residues, as in CASP and OpenStructure: a
native residue the prediction lacks — a NaN row of ``pred_xyz`` — scores 0, it is never left out):

* ``rmsd``: residues present in both (it has no way to count a missing residue; report n_aligned).
* ``tm_score``: sum over residues present in both, divided by the native's present residue count
  (or ``norm_length``); d0 from that same length.
* ``gdt``: residues present in both within each cutoff, divided by the native's present residue count
  (or ``norm_length``).
* ``lddt_ca``: every native pair (both native Cα present, within 15 Å); a pair with a residue the
  prediction lacks counts as not preserved at any threshold. ``lddt_ca_per_residue``: the same pairs,
  averaged per residue (the target a per-residue confidence should predict).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from proteinmtp.constants import (
    BOND_TOLERANCE,
    CA_CA_BOND,
    CLASH_MIN_CA_CA,
    CONTACT_CUTOFF,
    I2_MIN_CA_CA,
    SEPARATION_RANGES,
)
from proteinmtp.geometry import blas_threads, distance_matrix, kabsch_batched, superpose

GDT_TS_CUTOFFS = (1.0, 2.0, 4.0, 8.0)
GDT_HA_CUTOFFS = (0.5, 1.0, 2.0, 4.0)
LDDT_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
LDDT_RADIUS = 15.0
CLASH_SEARCH_RADIUS = 6.0   # Å, pairs searched by clash_check (for min_nonbonded; clashes are < 3.5 Å)


# ----------------------------------------------------------------------------- helpers

def _residue_mask(L: int, mask: np.ndarray | None, *arrays: np.ndarray) -> np.ndarray:
    m = np.ones(L, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).copy()
    if m.shape != (L,):
        raise ValueError(f"mask must have shape [{L}], got {m.shape}")
    return m


def _separation(L: int) -> np.ndarray:
    idx = np.arange(L)
    return np.abs(idx[:, None] - idx[None, :])


def _range_mask(sep: np.ndarray, name: str) -> np.ndarray:
    lo, hi = SEPARATION_RANGES[name]
    return (sep >= lo) & (sep <= hi) if hi is not None else (sep >= lo)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# ----------------------------------------------------------------------------- distances

def distance_metrics(pred_dist: np.ndarray, true_dist: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Distance errors in Å over pairs i < j with both residues present (``mask`` [L] and finite).

    ``pred_dist``, ``true_dist`` [L, L] Å. Keys: mae, rmse, pearson, spearman, n_pairs, and
    mae_<r>, rmse_<r>, pearson_<r>, n_pairs_<r> for r in local/short/medium/long (NaN if empty).
    """
    p = np.asarray(pred_dist, dtype=np.float64)
    t = np.asarray(true_dist, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"distance_metrics: shapes differ or are not square: {p.shape} vs {t.shape}")
    L = p.shape[0]
    m = _residue_mask(L, mask)
    pair = np.triu(m[:, None] & m[None, :], 1) & np.isfinite(t) & np.isfinite(p)
    sep = _separation(L)
    out: dict = {}

    def block(sel: np.ndarray, suffix: str, spearman: bool) -> None:
        a, b = p[sel], t[sel]
        n = len(a)
        out[f"mae{suffix}"] = float(np.abs(a - b).mean()) if n else float("nan")
        out[f"rmse{suffix}"] = float(np.sqrt(((a - b) ** 2).mean())) if n else float("nan")
        out[f"pearson{suffix}"] = _pearson(a, b)
        if spearman:
            out["spearman"] = _pearson(rankdata(a), rankdata(b)) if n > 1 else float("nan")
        out[f"n_pairs{suffix}"] = int(n)

    block(pair, "", True)
    for r in SEPARATION_RANGES:
        block(pair & _range_mask(sep, r), f"_{r}", False)
    return out


def contact_metrics(
    score: np.ndarray,
    true_dist: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    higher_is_contact: bool = True,
    cutoff: float = CONTACT_CUTOFF,
) -> dict:
    """Precision of the top L, L/2, L/5 ranked pairs per separation range (contact: d < cutoff Å).

    ``score`` [L, L]: contact probability (``higher_is_contact=True``) or predicted distance in Å
    (``higher_is_contact=False``). ``true_dist`` [L, L] Å (Cα or Cβ). L is the number of present
    residues. Keys precision_L_<r>, precision_L2_<r>, precision_L5_<r> for r in short/medium/long and
    "all" (separation ≥ 6). Ties are broken by index order (stable sort). NaN if a range is empty.
    """
    s = np.asarray(score, dtype=np.float64)
    t = np.asarray(true_dist, dtype=np.float64)
    if s.shape != t.shape:
        raise ValueError(f"contact_metrics: score {s.shape} and true_dist {t.shape} differ")
    Lfull = s.shape[0]
    m = _residue_mask(Lfull, mask)
    L = int(m.sum())
    pair = np.triu(m[:, None] & m[None, :], 1) & np.isfinite(t) & np.isfinite(s)
    sep = _separation(Lfull)
    key = s if higher_is_contact else -s
    ranges = {"short": _range_mask(sep, "short"), "medium": _range_mask(sep, "medium"),
              "long": _range_mask(sep, "long"), "all": sep >= 6}
    out: dict = {}
    for r, rm in ranges.items():
        sel = pair & rm
        k_scores = key[sel]
        is_contact = t[sel] < cutoff
        order = np.argsort(-k_scores, kind="stable")
        for name, k in (("L", L), ("L2", L // 2), ("L5", L // 5)):
            k = max(k, 1)
            top = is_contact[order[:k]]
            out[f"precision_{name}_{r}"] = float(top.mean()) if len(top) else float("nan")
    return out


# ----------------------------------------------------------------------------- superposition search

def tm_d0(L: int) -> float:
    """TM-score d0 in Å for a native of length L (0.5 Å for L ≤ 21)."""
    if L <= 21:
        return 0.5
    return max(1.24 * (L - 15) ** (1.0 / 3.0) - 1.8, 0.5)


def _seeds(n: int, min_len: int = 4, max_seeds: int | None = None) -> np.ndarray:
    """Seed fragments as in TM-score: lengths n, n/2, n/4, … (≥ min_len), every offset. -> [S, n] bool."""
    min_len = min(min_len, n)
    lengths = []
    k = 0
    while True:
        ln = n // (2 ** k)
        if ln <= min_len:
            lengths.append(min_len)
            break
        lengths.append(ln)
        k += 1
        if k >= 5:
            lengths.append(min_len)
            break
    rows = []
    idx = np.arange(n)
    for ln in dict.fromkeys(lengths):
        starts = np.arange(n - ln + 1)
        if max_seeds is not None and len(starts) > max_seeds:
            starts = np.unique(np.linspace(0, n - ln, max_seeds).round().astype(int))
        rows.append((idx[None, :] >= starts[:, None]) & (idx[None, :] < starts[:, None] + ln))
    return np.concatenate(rows, axis=0)


def _search(x: np.ndarray, y: np.ndarray, score_fn, d_init: float, d_iter: float, n_iter: int = 20,
            max_seeds: int | None = None, chunk: int = 1024):
    """Maximise ``score_fn(dist2 [S, N]) -> [S]`` (or [S, K]: K scores maximised separately; ``dist2``
    are SQUARED distances in Å²) over superpositions from seeded, iterated Kabsch. Returns the max
    (float, or [K] array).

    After each superposition the next selection is the residues closer than d (d_init for the
    seed's first round, d_iter afterwards), widened by 0.5 Å until it holds ≥ 3 residues. A seed stops
    when its selection repeats one already iterated (its own previous one — TM-score's convergence
    test — or another seed's, whose path it would then retrace): every distinct superposition is
    visited once, which is what makes the search fast; the maximum is that of iterating every seed.
    """
    with blas_threads(1):  # small batched linear algebra: one BLAS thread is ~2x faster than two here
        return _search_impl(x, y, score_fn, d_init, d_iter, n_iter, max_seeds, chunk)


def _search_impl(x, y, score_fn, d_init, d_iter, n_iter, max_seeds, chunk):
    n = len(x)
    x = x - x.mean(axis=0)          # centred: the expanded squared distances below keep their precision
    y = y - y.mean(axis=0)
    # |R x + t - y|² = |x|² + |y|² + |t|² + [2 Rᵀt, -2 t, -2 vec(R)] · [x, y, vec(y xᵀ)]: one matrix product
    feats = np.concatenate([x, y, (y[:, :, None] * x[:, None, :]).reshape(n, 9)], axis=1).T   # [15, N]
    base = (x * x).sum(axis=1) + (y * y).sum(axis=1)                                           # [N]
    sel = _seeds(n, max_seeds=max_seeds)
    best = -np.inf
    seen: set[bytes] = set()        # selections iterated (or queued) with d_iter
    d_cut = d_init
    for it in range(n_iter + 1):
        nxt = []
        for c0 in range(0, len(sel), chunk):
            s = sel[c0:c0 + chunk]
            r, t = kabsch_batched(x, y, s)
            coef = np.concatenate([2.0 * np.einsum("sab,sa->sb", r, t), -2.0 * t, -2.0 * r.reshape(-1, 9)], axis=1)
            dist2 = coef @ feats                                                              # [S, N]
            dist2 += base
            dist2 += (t * t).sum(axis=1)[:, None]
            np.maximum(dist2, 0.0, out=dist2)
            best = np.maximum(best, score_fn(dist2).max(axis=0))
            if it == n_iter:
                continue
            new = dist2 < d_cut * d_cut
            thr = np.full(len(s), d_cut)
            few = new.sum(axis=1) < 3
            while few.any() and n > 3:
                thr[few] += 0.5
                new[few] = dist2[few] < (thr[few] * thr[few])[:, None]
                few = new.sum(axis=1) < 3
            nxt.append(new)
        if it == n_iter:
            break
        new = np.concatenate(nxt, axis=0)
        # one key per selection (its bits as bytes): a selection goes on (with d_iter) only the first
        # time it is reached, by any seed in any round
        keep = []
        for i, k in enumerate(np.packbits(new, axis=1).view(f"V{(n + 7) // 8}").ravel().tolist()):
            if k not in seen:
                seen.add(k)
                keep.append(i)
        if not keep:
            break
        sel = new[keep]
        d_cut = d_iter
    return best if np.ndim(best) else float(best)


def _present(pred_xyz: np.ndarray, true_xyz: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(pred_xyz, dtype=np.float64)
    b = np.asarray(true_xyz, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"structure metrics need two [L, 3] arrays of equal shape, got {a.shape} and {b.shape}")
    m = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if mask is not None:
        m &= np.asarray(mask, dtype=bool)
    return a[m], b[m]


# ----------------------------------------------------------------------------- structure scores

def rmsd(pred_xyz: np.ndarray, true_xyz: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Cα RMSD in Å after optimal (proper) superposition over residues present in both."""
    a, b = _present(pred_xyz, true_xyz, mask)
    if len(a) == 0:
        return float("nan")
    return superpose(a, b)[1]


def tm_score(pred_xyz: np.ndarray, true_xyz: np.ndarray, mask: np.ndarray | None = None,
             *, norm_length: int | None = None) -> float:
    """TM-score with fixed correspondence, maximised over superpositions (see module docstring).

    ``pred_xyz``, ``true_xyz`` [L, 3] Å; normalised by ``norm_length`` (default: number of native
    residues with coordinates, i.e. finite rows of ``true_xyz`` inside ``mask``).
    """
    tb = np.asarray(true_xyz, dtype=np.float64)
    if norm_length is None:
        nm = np.isfinite(tb).all(axis=1)
        if mask is not None:
            nm &= np.asarray(mask, dtype=bool)
        norm_length = int(nm.sum())
    a, b = _present(pred_xyz, true_xyz, mask)
    if len(a) == 0 or norm_length == 0:
        return 0.0
    d0 = tm_d0(norm_length)
    d0_search = min(max(d0, 4.5), 8.0)

    def score(dist2: np.ndarray) -> np.ndarray:
        term = dist2 * (1.0 / (d0 * d0))
        term += 1.0
        np.reciprocal(term, out=term)
        return term.sum(axis=1) / norm_length

    if len(a) < 3:
        moved = superpose(a, b)[0]
        return float(score(((moved - b) ** 2).sum(axis=1)[None])[0])
    return _search(a, b, score, d_init=d0_search - 1.0, d_iter=d0_search + 1.0)


def gdt(pred_xyz: np.ndarray, true_xyz: np.ndarray, mask: np.ndarray | None = None,
        *, max_seeds: int = 64, norm_length: int | None = None) -> dict:
    """GDT-TS and GDT-HA (fractions in [0, 1]) over the native's present residues.

    For each cutoff the fraction of residues within it is maximised over the superpositions visited
    by seeded searches iterated on the residues within c, for each cutoff c (every visited
    superposition scores every cutoff; ``max_seeds`` offsets per seed length).
    ``norm_length``: denominator (default: the native's present residues inside ``mask``).
    Returns {"gdt_ts", "gdt_ha", "gdt_<c>" per cutoff}.
    """
    tb = np.asarray(true_xyz, dtype=np.float64)
    nm = np.isfinite(tb).all(axis=1)
    if mask is not None:
        nm &= np.asarray(mask, dtype=bool)
    n_norm = int(nm.sum()) if norm_length is None else int(norm_length)
    a, b = _present(pred_xyz, true_xyz, mask)
    cutoffs = np.array(sorted(set(GDT_TS_CUTOFFS) | set(GDT_HA_CUTOFFS)))
    if len(a) == 0 or n_norm == 0:
        frac = np.zeros(len(cutoffs))
    elif len(a) < 3:
        moved = superpose(a, b)[0]
        frac = (np.linalg.norm(moved - b, axis=1)[:, None] < cutoffs).sum(axis=0) / n_norm
    else:
        def score(dist2: np.ndarray) -> np.ndarray:     # squared distances [S, N] -> [S, n_cutoffs]
            return (dist2[:, :, None] < cutoffs * cutoffs).sum(axis=1) / n_norm

        # every superposition visited by the searches (one per selection threshold) scores every cutoff
        frac = np.zeros(len(cutoffs))
        for c in cutoffs:
            frac = np.maximum(frac, _search(a, b, score, d_init=c, d_iter=c, max_seeds=max_seeds))
    fr = {float(c): float(v) for c, v in zip(cutoffs, frac)}
    out = {f"gdt_{c:g}": v for c, v in fr.items()}
    out["gdt_ts"] = float(np.mean([fr[c] for c in GDT_TS_CUTOFFS]))
    out["gdt_ha"] = float(np.mean([fr[c] for c in GDT_HA_CUTOFFS]))
    return out


def _lddt_preserved(pred_xyz, true_xyz, mask, radius, thresholds):
    """(native residue mask [L], pair selection [n, n], preserved fraction per pair [n, n]) over the
    native's present residues; see :func:`lddt_ca`. None when the native has fewer than 2 residues."""
    a = np.asarray(pred_xyz, dtype=np.float64)
    b = np.asarray(true_xyz, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"structure metrics need two [L, 3] arrays of equal shape, got {a.shape} and {b.shape}")
    native = np.isfinite(b).all(axis=1)
    if mask is not None:
        native &= np.asarray(mask, dtype=bool)
    a, b = a[native], b[native]
    if len(b) < 2:
        return None
    dt = distance_matrix(b)
    sel = (dt < radius) & ~np.eye(len(b), dtype=bool)
    have = np.isfinite(a).all(axis=1)
    dp = np.full_like(dt, np.inf)           # a pair with a missing predicted residue never passes
    if have.any():
        dp[np.ix_(have, have)] = distance_matrix(a[have])
    err = np.abs(dp - dt)
    frac = np.mean([err < t for t in thresholds], axis=0)
    return native, sel, frac


def lddt_ca(pred_xyz: np.ndarray, true_xyz: np.ndarray, mask: np.ndarray | None = None,
            *, radius: float = LDDT_RADIUS, thresholds: tuple[float, ...] = LDDT_THRESHOLDS) -> float:
    """lDDT on Cα over the NATIVE's residues: native pairs i ≠ j (both Cα present in ``true_xyz`` and
    inside ``mask``) within ``radius`` Å; mean over ``thresholds`` of the fraction with
    |d_pred − d_true| < threshold, pooled over all pairs. A pair involving a residue the prediction lacks
    (NaN row of ``pred_xyz``) is not preserved (CASP / OpenStructure). Superposition-free; mirror-invariant.
    NaN when the native has no such pair."""
    got = _lddt_preserved(pred_xyz, true_xyz, mask, radius, thresholds)
    if got is None or not got[1].any():
        return float("nan")
    _, sel, frac = got
    return float(frac[sel].mean())


def lddt_ca_per_residue(pred_xyz: np.ndarray, true_xyz: np.ndarray, mask: np.ndarray | None = None,
                        *, radius: float = LDDT_RADIUS,
                        thresholds: tuple[float, ...] = LDDT_THRESHOLDS) -> np.ndarray:
    """Per-residue lDDT-Cα [L] in [0, 1]: for residue i, the pairs (i, j) of :func:`lddt_ca` (native
    within ``radius`` Å), mean over ``thresholds`` of the fraction preserved (AlphaFold's pLDDT target,
    on Cα). NaN for a residue outside the native (no Cα or outside ``mask``) or without such a pair."""
    L = len(np.asarray(true_xyz))
    out = np.full(L, np.nan)
    got = _lddt_preserved(pred_xyz, true_xyz, mask, radius, thresholds)
    if got is None:
        return out
    native, sel, frac = got
    n = sel.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(n > 0, (frac * sel).sum(axis=1) / n, np.nan)
    out[native] = per
    return out


def clash_check(xyz: np.ndarray, breaks=(), mask: np.ndarray | None = None) -> dict:
    """Cα geometry bounds of one structure ``xyz`` [L, 3] Å (NaN rows = residues not modelled; ``mask`` [L]
    bool further restricts to the residues checked). Residue i is row i: separations are row differences.
    ``breaks``: indices i where residues i and i+1 are NOT bonded (recorded chain breaks).

    * a bond is (i, i+1), both present, i not a break; it is an outlier when |d − 3.8 Å| > 0.1 Å;
    * a non-bonded pair is any other pair of present residues with |i − j| ≥ 2, or (i, i+1) across a break;
      it clashes when d < 3.5 Å;
    * an i, i+2 pair inside one chain segment (no break at i or i+1) is short when d < 4.2 Å.

    Returns {"clashes": clashing pairs per 100 present residues, "n_clashes", "n_i2_short",
    "n_bond_outliers", "min_nonbonded" (Å; NaN when no non-bonded pair is within ``CLASH_SEARCH_RADIUS``),
    "min_i2" (Å), "max_bond_deviation" (Å; NaN without such a pair), "n_residues", "ok" (no clash, no short
    i, i+2, no bond outlier)}. Pairs are found with a k-d tree, so the cost is ~linear in L.
    """
    from scipy.spatial import cKDTree

    x = np.asarray(xyz, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"clash_check: expected coordinates of shape [L, 3], got {x.shape}")
    L = len(x)
    present = np.isfinite(x).all(axis=1)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (L,):
            raise ValueError(f"clash_check: mask must have shape [{L}], got {m.shape}")
        present &= m
    brk = np.zeros(max(L - 1, 0), dtype=bool)
    b = np.asarray(list(breaks), dtype=np.int64)
    if len(b):
        if ((b < 0) | (b >= max(L - 1, 1))).any():
            raise ValueError(f"clash_check: breaks must lie in [0, L-2] = [0, {L - 2}], got {b.tolist()}")
        brk[b] = True
    idx = np.flatnonzero(present)
    n = len(idx)
    out = {"clashes": 0.0, "n_clashes": 0, "n_i2_short": 0, "n_bond_outliers": 0, "min_nonbonded": float("nan"),
           "min_i2": float("nan"), "max_bond_deviation": float("nan"), "n_residues": int(n), "ok": True}
    if n < 2:
        return out

    def dist(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.sqrt(((x[i] - x[j]) ** 2).sum(axis=1))

    i1 = np.flatnonzero(present[:-1] & present[1:] & ~brk)            # bonds (i, i+1)
    if len(i1):
        dev = np.abs(dist(i1, i1 + 1) - CA_CA_BOND)
        out["max_bond_deviation"] = float(dev.max())
        out["n_bond_outliers"] = int((dev > BOND_TOLERANCE).sum())
    if L > 2:
        seg = ~brk[:-1] & ~brk[1:]                                     # i, i+1, i+2 in one segment
        i2 = np.flatnonzero(present[:-2] & present[2:] & seg)
        if len(i2):
            d2 = dist(i2, i2 + 2)
            out["min_i2"] = float(d2.min())
            out["n_i2_short"] = int((d2 < I2_MIN_CA_CA).sum())
    pairs = cKDTree(x[idx]).query_pairs(CLASH_SEARCH_RADIUS, output_type="ndarray")
    pi, pj = idx[pairs[:, 0]], idx[pairs[:, 1]]
    pi, pj = np.minimum(pi, pj), np.maximum(pi, pj)
    nonbonded = (pj - pi >= 2) | ((pj - pi == 1) & brk[np.minimum(pi, L - 2)])
    d = dist(pi[nonbonded], pj[nonbonded])
    n_clash = int((d < CLASH_MIN_CA_CA).sum())
    if len(d):
        out["min_nonbonded"] = float(d.min())
    out["n_clashes"] = n_clash
    out["clashes"] = 100.0 * n_clash / n
    out["ok"] = n_clash == 0 and out["n_i2_short"] == 0 and out["n_bond_outliers"] == 0
    return out


def structure_metrics(pred_xyz: np.ndarray, true_xyz: np.ndarray, mask: np.ndarray | None = None,
                      *, norm_length: int | None = None) -> dict:
    """All structure scores. ``pred_xyz``, ``true_xyz`` [L, 3] Å (NaN rows = missing), ``mask`` [L].

    Keys: rmsd (Å, over residues in both), tm_score, gdt_ts, gdt_ha (normalised by ``norm_length``,
    default the native's present residues), lddt (over the native's pairs; missing predicted residues
    score 0), n_aligned (residues in both), clashes (``clash_check`` of the prediction's residues inside
    ``mask``: non-bonded Cα pairs under 3.5 Å per 100 residues; row i is residue i). See the module docstring.
    """
    a, b = _present(pred_xyz, true_xyz, mask)
    g = gdt(pred_xyz, true_xyz, mask, norm_length=norm_length)
    return {
        "clashes": clash_check(pred_xyz, mask=mask)["clashes"],
        "rmsd": rmsd(pred_xyz, true_xyz, mask),
        "tm_score": tm_score(pred_xyz, true_xyz, mask, norm_length=norm_length),
        "gdt_ts": g["gdt_ts"],
        "gdt_ha": g["gdt_ha"],
        "lddt": lddt_ca(pred_xyz, true_xyz, mask),
        "n_aligned": int(len(a)),
    }
