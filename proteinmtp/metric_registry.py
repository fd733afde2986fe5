"""The one list of evaluation metrics. Everything that reports a metric derives from :data:`METRICS`:

* the per-protein scores (``eval_scoring.score_prediction``: each kind's functions are called, their keys
  become the row, hence eval_results.json's means and the per-protein CSV's columns);
* ``by_range`` of eval_results.json (the metrics with ``ranges``);
* the keys every method block of eval_results.json holds (``required``; docs/contracts.md lists them and
  a test compares);
* the console table (``headline``);
* in-training evaluation (``training``: ``training.EVAL_KEYS``);
* pair-mode scoring (``pairs``: ``scoring``'s rows, means and console line).

A new metric is one :class:`Metric` here (plus its function in ``proteinmtp.metrics``). A function may
compute several metrics (``distance_metrics`` gives mae, rmse, pearson, …); it is called once per kind.

Function signatures by kind:

* ``distance``: ``fn(pred_dist [L, L] Å, true_dist [L, L] Å, mask [L]) -> dict``
* ``contact``: ``fn(score [L, L], true_dist [L, L] Å, mask [L], *, higher_is_contact) -> dict``
* ``structure``: ``fn(pred_xyz [L, 3] Å, true_xyz [L, 3] Å, mask [L] or None) -> dict`` (row i = residue i;
  ``mask``: the residues scored, those with a native Cα)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from proteinmtp.metrics import contact_metrics, distance_metrics, structure_metrics

KINDS = ("distance", "contact", "structure")
CONTACT_RANGES = ("short", "medium", "long", "all")          # contact_metrics' ranges ("all": separation ≥ 6)
DISTANCE_RANGES = ("local", "short", "medium", "long")        # constants.SEPARATION_RANGES


@dataclass(frozen=True)
class Metric:
    """One metric: its key in the reports, the function computing it, and where it is reported.

    ``ranges``: the separation ranges it is also reported for, as ``<name>_<range>`` (and in ``by_range``);
    ``headline``/``required``/``training``: which of its keys (``name`` itself or ``<name>_<range>``) are
    in the console table / every block of eval_results.json / in-training evaluation; ``pairs``: reported by
    pair-mode scoring, with ``label``, ``unit`` and ``digits`` on its console line.
    """

    name: str
    kind: str
    fn: Callable[..., dict]
    ranges: tuple[str, ...] = ()
    headline: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    training: tuple[str, ...] = ()
    pairs: bool = False
    label: str = ""
    unit: str = ""
    digits: int = 4
    description: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        own = {self.name} | {f"{self.name}_{r}" for r in self.ranges}
        for what in ("headline", "required", "training"):
            bad = [k for k in getattr(self, what) if k.removesuffix("_cb") not in own]
            if bad:
                raise ValueError(f"metric {self.name}: {what} names keys it does not have: {bad}")


def _r(name: str, *ranges: str) -> tuple[str, ...]:
    return tuple(name if r == "" else f"{name}_{r}" for r in ranges)


METRICS: tuple[Metric, ...] = (
    Metric("mae", "distance", distance_metrics, DISTANCE_RANGES, headline=_r("mae", "", "short", "medium", "long"),
           required=_r("mae", "", "short", "medium", "long"),
           training=_r("mae", "", "local", "short", "medium", "long"), description="mean |d_pred - d_true|, Å"),
    Metric("rmse", "distance", distance_metrics, DISTANCE_RANGES, required=("rmse",), training=("rmse",),
           description="root mean square distance error, Å"),
    Metric("pearson", "distance", distance_metrics, DISTANCE_RANGES, required=("pearson",), training=("pearson",),
           description="Pearson correlation of predicted and true distances"),
    Metric("spearman", "distance", distance_metrics, description="Spearman correlation, all pairs"),
    Metric("precision_L", "contact", contact_metrics, CONTACT_RANGES, required=("precision_L_long",),
           training=("precision_L_long",), description="precision of the top L pairs (Cα–Cα < 8 Å)"),
    Metric("precision_L2", "contact", contact_metrics, CONTACT_RANGES, training=("precision_L2_long",),
           description="precision of the top L/2 pairs"),
    Metric("precision_L5", "contact", contact_metrics, CONTACT_RANGES,
           headline=("precision_L5_long", "precision_L5_long_cb"), required=("precision_L5_long",),
           training=("precision_L5_medium", "precision_L5_long"), description="precision of the top L/5 pairs"),
    Metric("rmsd", "structure", structure_metrics, headline=("rmsd",), required=("rmsd",), pairs=True,
           label="RMSD", unit=" Å", digits=3, description="Cα RMSD after superposition, Å"),
    Metric("tm_score", "structure", structure_metrics, headline=("tm_score",), required=("tm_score",), pairs=True,
           label="TM", description="TM-score (normalised by the native's residues)"),
    Metric("gdt_ts", "structure", structure_metrics, headline=("gdt_ts",), required=("gdt_ts",), pairs=True,
           label="GDT-TS", description="GDT total score"),
    Metric("gdt_ha", "structure", structure_metrics, pairs=True, label="GDT-HA", description="GDT high accuracy"),
    Metric("lddt", "structure", structure_metrics, headline=("lddt",), required=("lddt",), pairs=True,
           label="lDDT", description="lDDT-Cα over the native's pairs within 15 Å"),
    Metric("clashes", "structure", structure_metrics, required=("clashes",),
           description="non-bonded Cα pairs (|i − j| ≥ 2) under 3.5 Å per 100 residues (metrics.clash_check)"),
)


def keys(what: str) -> tuple[str, ...]:
    """The keys of every metric's ``what`` ("required", "headline" or "training"), in registry order."""
    return tuple(k for m in METRICS for k in getattr(m, what))


def pair_metrics() -> tuple[Metric, ...]:
    """The metrics pair-mode scoring reports, in registry order."""
    return tuple(m for m in METRICS if m.pairs)


# Consumers call the functions (read at use, so the registry is the only list); these name today's sets.
REQUIRED_KEYS = keys("required")     # every method block of eval_results.json (docs/contracts.md lists them)
TRAINING_KEYS = keys("training")     # in-training evaluation (training.EVAL_KEYS, fixed at import)


def functions(kind: str, *, pairs: bool = False) -> tuple[Callable[..., dict], ...]:
    """The distinct functions computing the metrics of ``kind`` (only pair-mode ones with ``pairs``), in order."""
    out: list[Callable[..., dict]] = []
    for m in METRICS:
        if m.kind == kind and (m.pairs or not pairs) and m.fn not in out:
            out.append(m.fn)
    return tuple(out)


def ranged(r: str) -> tuple[Metric, ...]:
    """Metrics reported for separation range ``r``."""
    return tuple(m for m in METRICS if r in m.ranges)


def distance_scores(pred_dist: np.ndarray, contact_score: np.ndarray, true_dist: np.ndarray, mask: np.ndarray,
                    *, higher_is_contact: bool = True) -> dict:
    """Every distance and contact metric of one chain (the keys of the registered functions)."""
    out: dict = {}
    for fn in functions("distance"):
        out.update(fn(pred_dist, true_dist, mask))
    out.update(contact_scores(contact_score, true_dist, mask, higher_is_contact=higher_is_contact))
    return out


def contact_scores(score: np.ndarray, true_dist: np.ndarray, mask: np.ndarray, *,
                   higher_is_contact: bool = True) -> dict:
    out: dict = {}
    for fn in functions("contact"):
        out.update(fn(score, true_dist, mask, higher_is_contact=higher_is_contact))
    return out


def structure_scores(pred_xyz: np.ndarray, true_xyz: np.ndarray, mask: np.ndarray | None = None, *,
                     pairs: bool = False) -> dict:
    """Every structure metric (only the pair-mode ones with ``pairs``) of coordinates over the same rows
    (``mask`` [L]: the residues scored; row i is residue i, so separations are the chain's)."""
    out: dict = {}
    for fn in functions("structure", pairs=pairs):
        out.update(fn(pred_xyz, true_xyz, mask))
    return out
