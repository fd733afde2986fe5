"""How far to believe a prediction: the predicted TM-score (pTM) from the pair error classes, and the
calibration statistics an evaluation reports, accumulated protein by protein in bounded memory.

* ``predicted_tm``: AlphaFold's pTM adapted to this model's pair confidence. The head predicts, for every
  pair, the probabilities of 5 classes of |predicted − true Cα–Cα distance| (``ERROR_EDGES``: < 0.5, < 1,
  < 2, < 4, ≥ 4 Å). Each class stands for a representative error ``ERROR_REPRESENTATIVE`` (the class
  centres 0.25, 0.75, 1.5, 3 Å; 8 Å for the open class, the next doubling), the expected TM term of pair
  (i, j) is Σ_c p_ijc / (1 + (e_c / d0)²) with d0 = ``metrics.tm_d0(L)``, the term of (i, i) is 1, and
  pTM = max over anchor residues i of the mean over j. AlphaFold's errors are positions in residue i's
  frame; these are distance errors, which cannot see a mirror image: pTM predicts the TM-score of the
  better hand, not of the hand chosen.
* ``ReliabilityBins``: running per-bin sums of (confidence, outcome) → reliability curve and the expected
  calibration error ECE = Σ_b (n_b / N) |mean outcome_b − mean confidence_b|.
* ``ConfidenceStats``: what an evaluation collects per protein and merges in order (mergeable, so workers
  can each fill one): per-residue confidence vs true per-residue lDDT-Cα (running Pearson sums, a reliability
  curve, and a bounded deterministic sample for the Spearman rank correlation) and the pair error classes'
  top-label calibration (confidence = the largest class probability, outcome = that class is the true one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from proteinmtp.constants import ERROR_EDGES
from proteinmtp.metrics import tm_d0

ERROR_REPRESENTATIVE = (0.25, 0.75, 1.5, 3.0, 8.0)  # Å, one per error class (ERROR_EDGES + the open class)
RESIDUE_SAMPLE = 200_000   # residues kept for the Spearman correlation (exact below this many)
N_BINS = 10


def predicted_tm(pair_error_probs: np.ndarray | None, mask: np.ndarray | None = None) -> float | None:
    """pTM in [0, 1] from ``pair_error_probs`` [L, L, 5] (see the module docstring) over the residues in
    ``mask`` [L] (default all); None without error classes (a head that predicts none) or residues."""
    if pair_error_probs is None:
        return None
    p = np.asarray(pair_error_probs, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] != p.shape[1] or p.shape[2] != len(ERROR_REPRESENTATIVE):
        raise ValueError(f"pair_error_probs must be [L, L, {len(ERROR_REPRESENTATIVE)}], got {p.shape}")
    m = np.ones(len(p), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    p = p[np.ix_(m, m)]
    n = len(p)
    if n == 0:
        return None
    d0 = tm_d0(n)
    term = p @ (1.0 / (1.0 + (np.asarray(ERROR_REPRESENTATIVE) / d0) ** 2))   # [n, n]
    np.fill_diagonal(term, 1.0)
    return float(term.mean(axis=1).max())


def error_classes(pred_dist: np.ndarray, true_dist: np.ndarray) -> np.ndarray:
    """Class of |pred − true| (Å) per pair: 0 for ≤ 0.5 Å … 4 for > 4 Å, as the head's training targets
    (``torch.bucketize`` on ``ERROR_EDGES``)."""
    err = np.abs(np.asarray(pred_dist, dtype=np.float64) - np.asarray(true_dist, dtype=np.float64))
    return np.searchsorted(np.asarray(ERROR_EDGES), err, side="left")


@dataclass
class ReliabilityBins:
    """Equal-width bins of a confidence in [lo, hi]: count, sum of confidences, sum of outcomes."""

    lo: float = 0.0
    hi: float = 1.0
    n_bins: int = N_BINS
    count: np.ndarray = field(default=None)  # type: ignore[assignment]
    conf_sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    outcome_sum: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        for name in ("count", "conf_sum", "outcome_sum"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.n_bins))

    def add(self, conf: np.ndarray, outcome: np.ndarray) -> None:
        c = np.asarray(conf, dtype=np.float64).ravel()
        o = np.asarray(outcome, dtype=np.float64).ravel()
        ok = np.isfinite(c) & np.isfinite(o)
        c, o = c[ok], o[ok]
        b = np.clip(((c - self.lo) / (self.hi - self.lo) * self.n_bins).astype(int), 0, self.n_bins - 1)
        self.count += np.bincount(b, minlength=self.n_bins)
        self.conf_sum += np.bincount(b, weights=c, minlength=self.n_bins)
        self.outcome_sum += np.bincount(b, weights=o, minlength=self.n_bins)

    def merge(self, other: ReliabilityBins) -> None:
        self.count += other.count
        self.conf_sum += other.conf_sum
        self.outcome_sum += other.outcome_sum

    def ece(self, conf_scale: float = 1.0) -> float | None:
        """Σ_b (n_b / N) |mean outcome − mean confidence / conf_scale|; None when empty."""
        n = self.count.sum()
        if n == 0:
            return None
        ok = self.count > 0
        gap = np.abs(self.outcome_sum[ok] / self.count[ok] - self.conf_sum[ok] / self.count[ok] / conf_scale)
        return float((self.count[ok] * gap).sum() / n)

    def as_dict(self) -> dict:
        """{"bin_edges", "count", "mean_confidence", "mean_outcome"} (None in empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mc = np.where(self.count > 0, self.conf_sum / self.count, np.nan)
            mo = np.where(self.count > 0, self.outcome_sum / self.count, np.nan)
        nan_none = lambda a: [None if not np.isfinite(v) else float(v) for v in a]  # noqa: E731
        return {"bin_edges": np.linspace(self.lo, self.hi, self.n_bins + 1).tolist(),
                "count": [int(v) for v in self.count], "mean_confidence": nan_none(mc), "mean_outcome": nan_none(mo)}


@dataclass
class ConfidenceStats:
    """Confidence statistics over proteins (see the module docstring); ``add_protein`` then ``merge``."""

    residue_bins: ReliabilityBins = field(default_factory=lambda: ReliabilityBins(0.0, 100.0))
    pair_bins: ReliabilityBins = field(default_factory=ReliabilityBins)
    sums: np.ndarray = field(default_factory=lambda: np.zeros(6))  # n, Σx, Σy, Σx², Σy², Σxy (residues)
    sample_key: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sample: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    cap: int = RESIDUE_SAMPLE

    def add_protein(self, index: int, residue_conf_100: np.ndarray, residue_lddt: np.ndarray,
                    pair_error_probs: np.ndarray | None = None, pred_dist: np.ndarray | None = None,
                    true_dist: np.ndarray | None = None, mask: np.ndarray | None = None, seed: int = 0) -> None:
        """One protein (``index``: its position in the evaluation, which seeds its residues' sample keys).

        residue_conf_100 [L] 0–100, residue_lddt [L] 0–1 (NaN = no value); with ``pair_error_probs``
        [L, L, 5], ``pred_dist`` and ``true_dist`` [L, L] Å: pairs i < j with both residues in ``mask``
        and a finite true distance enter the pair calibration.
        """
        x = np.asarray(residue_conf_100, dtype=np.float64)
        y = np.asarray(residue_lddt, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        self.sums += np.array([len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])
        self.residue_bins.add(x, y)
        key = np.random.default_rng([seed, index]).random(len(x))
        self._keep(key, np.stack([x, y], axis=1))
        if pair_error_probs is not None and pred_dist is not None and true_dist is not None:
            t = np.asarray(true_dist, dtype=np.float64)
            L = len(t)
            m = np.ones(L, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
            pair = np.triu(m[:, None] & m[None, :], 1) & np.isfinite(t)
            p = np.asarray(pair_error_probs, dtype=np.float64)[pair]                # [n, 5]
            cls = error_classes(np.asarray(pred_dist)[pair], t[pair])
            self.pair_bins.add(p.max(axis=1), p.argmax(axis=1) == cls)

    def _keep(self, key: np.ndarray, vals: np.ndarray) -> None:
        k = np.concatenate([self.sample_key, key])
        v = np.concatenate([self.sample, vals], axis=0)
        if len(k) > self.cap:
            top = np.argsort(k, kind="stable")[: self.cap]
            k, v = k[top], v[top]
        self.sample_key, self.sample = k, v

    def merge(self, other: ConfidenceStats) -> None:
        self.residue_bins.merge(other.residue_bins)
        self.pair_bins.merge(other.pair_bins)
        self.sums += other.sums
        self._keep(other.sample_key, other.sample)

    def residue_pearson(self) -> float | None:
        n, sx, sy, sxx, syy, sxy = self.sums
        if n < 2:
            return None
        vx, vy = sxx - sx * sx / n, syy - sy * sy / n
        if vx <= 0 or vy <= 0:
            return None
        return float((sxy - sx * sy / n) / np.sqrt(vx * vy))

    def residue_spearman(self) -> float | None:
        if len(self.sample) < 2:
            return None
        from scipy.stats import spearmanr

        r = spearmanr(self.sample[:, 0], self.sample[:, 1]).statistic
        return float(r) if np.isfinite(r) else None

    def summary(self, ptm: np.ndarray | None = None, tm: np.ndarray | None = None,
                tm_best_of_mirrors: np.ndarray | None = None) -> dict:
        """The ``confidence`` block of eval_results.json (``ptm``, ``tm`` per protein, NaN = none)."""
        out = {"residue_lddt_pearson": self.residue_pearson(), "residue_lddt_spearman": self.residue_spearman(),
               "pair_ece": self.pair_bins.ece(), "ptm_pearson": None}
        for name, ref in (("ptm_pearson", tm), ("ptm_pearson_best_of_mirrors", tm_best_of_mirrors)):
            if ptm is not None and ref is not None:
                a, b = np.asarray(ptm, float), np.asarray(ref, float)
                ok = np.isfinite(a) & np.isfinite(b)
                r = np.corrcoef(a[ok], b[ok])[0, 1] if ok.sum() > 2 and a[ok].std() > 0 and b[ok].std() > 0 else None
                out[name] = None if r is None else float(r)
        ok_ptm = np.asarray(ptm, float)[np.isfinite(np.asarray(ptm, float))] if ptm is not None else np.zeros(0)
        out["ptm_mean"] = float(ok_ptm.mean()) if ok_ptm.size else None
        out["residue_lddt_calibration_error"] = self.residue_bins.ece(conf_scale=100.0)
        out["n_residues"] = int(self.sums[0])
        out["n_residues_spearman"] = int(len(self.sample))
        out["n_pairs"] = int(self.pair_bins.count.sum())
        out["residue_reliability"] = self.residue_bins.as_dict()
        out["pair_reliability"] = self.pair_bins.as_dict()
        out["definitions"] = {
            "residue": "model confidence (0-100, the B-factor) vs the true per-residue lDDT-Ca of the model's "
                       "structure (metrics.lddt_ca_per_residue), pooled over residues; Spearman on at most "
                       f"{self.cap} residues (a seeded sample; all when fewer)",
            "pair_ece": "top-label expected calibration error of the 5 pair error classes (|pred - true Ca-Ca "
                        "distance| < 0.5, 1, 2, 4, >= 4 A) over pairs i < j, 10 equal-width bins",
            "ptm": "predicted TM-score per protein (confidence.predicted_tm); ptm_pearson: its Pearson r with "
                   "the model's TM-score (hand chosen without the native) over proteins",
        }
        return out


__all__ = ["ERROR_REPRESENTATIVE", "predicted_tm", "error_classes", "ReliabilityBins", "ConfidenceStats"]
