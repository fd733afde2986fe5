"""What the evaluation figures need, accumulated protein by protein in bounded memory (``FigureData``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from proteinmtp.dataset import Sample


@dataclass
class FigureData:
    """What the figures need, in memory independent of the number of proteins: per-separation error sums
    over every pair, the pair samples (signed errors per method, model-vs-true scatter) of at most
    ``max_sample_proteins`` proteins (``max_pairs_per_protein`` pairs each; the proteins chosen by a
    seeded key per protein index, so any number of workers picks the same), and the first ``n_heatmaps``
    proteins' matrices and views. Filled by merging per-protein ``contribution``s in protein order."""

    max_sep: int = 2048
    max_pairs_per_protein: int = 3000
    max_sample_proteins: int = 200
    n_heatmaps: int = 3
    seed: int = 0
    sep_abs_sum: dict[str, np.ndarray] = field(default_factory=dict)
    sep_count: np.ndarray | None = None
    samples: list[tuple[float, int, dict[str, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]] = \
        field(default_factory=list)
    heatmaps: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)
    views: list[tuple[str, np.ndarray, np.ndarray, str, np.ndarray]] = field(default_factory=list)
    n_added: int = 0

    def contribution(self, index: int, sample: Sample, preds: dict[str, np.ndarray], model_xyz: np.ndarray,
                     confidence: np.ndarray, true_dist: np.ndarray | None = None) -> dict:
        """One protein's part (small arrays; the matrices only for the first ``n_heatmaps`` indices)."""
        true = sample.distances() if true_dist is None else true_dist
        L = len(true)
        iu, ju = np.triu_indices(L, 1)
        ok = np.isfinite(true[iu, ju])
        iu, ju = iu[ok], ju[ok]
        sep = np.minimum(ju - iu, self.max_sep - 1)
        t = true[iu, ju]
        rng = np.random.default_rng(self.seed + index)
        pick = rng.choice(len(t), min(len(t), self.max_pairs_per_protein), replace=False) if len(t) else []
        c: dict = {"index": index, "sep_count": np.bincount(sep, minlength=self.max_sep), "sep_abs_sum": {},
                   "errors": {}, "key": float(np.random.default_rng([self.seed, index]).random())}
        for name, dist in preds.items():
            err = dist[iu, ju] - t
            c["sep_abs_sum"][name] = np.bincount(sep, weights=np.abs(err), minlength=self.max_sep)
            c["errors"][name] = err[pick]
        c["scatter"] = (preds["model"][iu, ju][pick], t[pick], (ju - iu)[pick])
        if index < self.n_heatmaps:
            c["heatmap"] = (sample.id, preds["model"], true)
            c["view"] = (sample.id, model_xyz, np.asarray(sample.ca, float), sample.sequence, confidence)
        return c

    def merge(self, c: dict) -> None:
        """Add one protein's ``contribution`` (call in protein order)."""
        if self.sep_count is None:
            self.sep_count = np.zeros(self.max_sep)
        self.sep_count += c["sep_count"]
        for name, v in c["sep_abs_sum"].items():
            self.sep_abs_sum.setdefault(name, np.zeros(self.max_sep))
            self.sep_abs_sum[name] += v
        self.samples.append((c["key"], c["index"], c["errors"], c["scatter"]))
        if len(self.samples) > self.max_sample_proteins:
            self.samples.remove(max(self.samples, key=lambda s: (s[0], s[1])))
        if "heatmap" in c and len(self.heatmaps) < self.n_heatmaps:
            self.heatmaps.append(c["heatmap"])
        if "view" in c and len(self.views) < self.n_heatmaps:
            self.views.append(c["view"])
        self.n_added += 1

    def add(self, sample: Sample, preds: dict[str, np.ndarray], model_xyz: np.ndarray,
            confidence: np.ndarray) -> None:
        """Contribution and merge of the next protein in one call."""
        self.merge(self.contribution(self.n_added, sample, preds, model_xyz, confidence))

    @property
    def errors(self) -> dict[str, list[np.ndarray]]:
        """Signed pair errors (Å) per method of the sampled proteins, in protein order."""
        out: dict[str, list[np.ndarray]] = {}
        for _, _, err, _ in sorted(self.samples, key=lambda s: s[1]):
            for name, v in err.items():
                out.setdefault(name, []).append(v)
        return out

    @property
    def scatter(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(model Å, true Å, separation) of the sampled proteins' pairs, in protein order."""
        return [s[3] for s in sorted(self.samples, key=lambda s: s[1])]

    def mae_by_separation(self) -> dict[str, np.ndarray]:
        cnt = self.sep_count if self.sep_count is not None else np.zeros(self.max_sep)
        last = int(np.flatnonzero(cnt)[-1]) + 1 if cnt.any() else 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return {k: np.where(cnt[:last] > 0, v[:last] / cnt[:last], np.nan) for k, v in self.sep_abs_sum.items()}

