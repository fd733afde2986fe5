"""Scores of one protein's predictions: distance, contact and structure metrics of the model's and the
baselines' (separation prior, nearest training neighbour, oracle) distance matrices and coordinates.

Residues without a Cα are excluded from every metric by mask. Structure metrics (RMSD, TM, GDT, lDDT)
are computed over the residues with a Cα, with the predicted hand (MDS cannot tell mirror images
apart; ``geometry.choose_hand`` picks one without the native). The TM-score of the better of the two
mirror images is reported only as a diagnostic, under keys that say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from proteinmtp.geometry import chain_breaks, distance_matrix, mirror
from proteinmtp.metric_registry import contact_scores, distance_scores, structure_scores
from proteinmtp.metrics import tm_score
from proteinmtp.reconstruction import DEFAULT_METHOD, reconstruct

if TYPE_CHECKING:  # pragma: no cover
    from proteinmtp.dataset import Sample
    from proteinmtp.prior import SeparationPrior

METHODS = ("model", "prior", "oracle")   # always evaluated
NEIGHBOUR = "neighbour"                    # evaluated when neighbours are given
NEIGHBOUR_EXTRA_KEYS = ("identity", "aligned_fraction")  # per protein; means in the block
# Length bins (residues, [lo, hi)); label → bounds.
LENGTH_BINS: tuple[tuple[str, int, int | None], ...] = (
    ("<100", 0, 100), ("100-199", 100, 200), ("200-299", 200, 300), (">=300", 300, None))
MIRROR_KEY = "diagnostic_tm_score_best_of_mirrors"
CB_MIN_FRACTION = 0.5   # a chain gets Cβ contact scores when at least this fraction of its Cα residues has a Cβ


def length_bin(length: int) -> str:
    """Label of the length bin holding ``length`` residues."""
    for label, lo, hi in LENGTH_BINS:
        if length >= lo and (hi is None or length < hi):
            return label
    raise ValueError(f"length {length} is outside every bin")  # pragma: no cover


def oracle_structure(sample: Sample, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Coordinates [L, 3] Å rebuilt by MDS (+ refinement) from the true distances of the residues with a Cα.

    Rows of residues without a Cα are NaN. Chain breaks among the present residues are passed to the
    refinement so no bond is imposed across a gap.
    """
    mask = sample.mask()
    ca = np.asarray(sample.ca, dtype=np.float64)
    sub = ca[mask]
    d = distance_matrix(sub) if len(sub) else np.zeros((0, 0))
    xyz = np.full((len(ca), 3), np.nan)
    if len(sub) >= 1:
        xyz[mask], _ = reconstruct(d, method=method, breaks=chain_breaks(sub))
    return xyz


def cb_distances(sample: Sample) -> np.ndarray | None:
    """[L, L] Å Cβ–Cβ distances (Cα for glycine: ``Sample.cb``), NaN where a Cβ is missing; None when the
    sample has no Cβ coordinates."""
    if sample.cb is None:
        return None
    d = distance_matrix(np.asarray(sample.cb, dtype=np.float64))
    np.fill_diagonal(d, 0.0)
    return d


def score_prediction(pred_dist: np.ndarray, contact_score: np.ndarray, xyz: np.ndarray, sample: Sample,
                     *, higher_is_contact: bool = True, true_dist: np.ndarray | None = None,
                     true_cb_dist: np.ndarray | None = None) -> dict[str, float]:
    """Every metric of one prediction of one protein.

    pred_dist [L, L] Å; contact_score [L, L] (probability, or a distance with ``higher_is_contact=False``);
    xyz [L, 3] Å reconstructed coordinates (rows of residues without a native Cα are ignored).
    Returns the registered metrics (``metric_registry``: distance, contact, structure) plus the mirror diagnostic (MIRROR_KEY) and
    ``hand_correct`` (1.0 when the chosen hand scores at least as well as its mirror).

    Contacts are counted two ways: ``precision_*`` against Cα–Cα < 8 Å (the quantity predicted) and
    ``precision_*_cb`` against Cβ–Cβ < 8 Å, Cα for glycine (CASP's definition; ``true_cb_dist``, default
    from ``sample.cb``; absent when the sample has no Cβ). The same scores rank the pairs for both (the
    model predicts Cα distances); the Cβ scores are over the residues with a Cβ (L = their number) and
    only for a chain where at least ``CB_MIN_FRACTION`` of the residues with a Cα have one (Cα-only
    entries have none; their mean is over the chains that have).
    """
    mask = sample.mask()
    true = sample.distances() if true_dist is None else true_dist
    true_cb = cb_distances(sample) if true_cb_dist is None else true_cb_dist
    out: dict[str, float] = {}
    out.update(distance_scores(pred_dist, contact_score, true, mask, higher_is_contact=higher_is_contact))
    if true_cb is not None:
        has_cb = mask & (np.isfinite(true_cb).sum(axis=1) > 1)   # a residue with a Cβ has finite distances
        if has_cb.sum() >= CB_MIN_FRACTION * mask.sum():
            cb = contact_scores(contact_score, true_cb, has_cb, higher_is_contact=higher_is_contact)
            out.update({f"{k}_cb": v for k, v in cb.items()})
    ca = np.asarray(sample.ca, dtype=np.float64)[mask]
    x = np.asarray(xyz, dtype=np.float64)[mask]
    s = structure_scores(np.asarray(xyz, dtype=np.float64), np.asarray(sample.ca, dtype=np.float64), mask)
    out.update(s)
    tm_m = float(tm_score(mirror(x), ca))
    out["tm_score_mirror"] = tm_m
    out[MIRROR_KEY] = max(float(s["tm_score"]), tm_m)
    out["hand_correct"] = float(float(s["tm_score"]) >= tm_m)
    return {k: _num(v) for k, v in out.items() if _is_number(v)}


def score_baselines(sample: Sample, prior: SeparationPrior, *, neighbour=None, method: str = DEFAULT_METHOD,
                    true_dist: np.ndarray | None = None,
                    true_cb_dist: np.ndarray | None = None) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Scores of one chain's reference predictions, each rebuilt with ``method`` and scored by
    :func:`score_prediction`: the separation prior, the nearest training neighbour (a
    ``neighbour.Neighbour``, when given; the prior fills its unaligned pairs) and the oracle.

    Returns ({"prior"|"neighbour"|"oracle": metrics}, {"prior"|"neighbour": [L, L] Å distances}).
    """
    true = sample.distances() if true_dist is None else true_dist
    true_cb = cb_distances(sample) if true_cb_dist is None else true_cb_dist
    prior_dist = np.asarray(prior.predict(len(sample.sequence)), dtype=np.float64)
    dists = {"prior": prior_dist}
    if neighbour is not None:
        dists[NEIGHBOUR] = neighbour.filled(prior_dist)
    scores = {}
    for name, dist in dists.items():
        xyz, _ = reconstruct(dist, method=method)
        scores[name] = score_prediction(dist, dist, xyz, sample, higher_is_contact=False, true_dist=true,
                                        true_cb_dist=true_cb)
    if neighbour is not None:
        if neighbour.identity is not None:  # no hit: no identity (the mean is over chains with a hit)
            scores[NEIGHBOUR]["identity"] = float(neighbour.identity)
        scores[NEIGHBOUR]["aligned_fraction"] = neighbour.aligned_fraction
    oracle_xyz = oracle_structure(sample, method=method)
    oracle_dist = np.where(np.isfinite(true), true, 0.0)
    scores["oracle"] = score_prediction(oracle_dist, oracle_dist, np.nan_to_num(oracle_xyz), sample,
                                        higher_is_contact=False, true_dist=true, true_cb_dist=true_cb)
    return scores, dists


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _num(v: object) -> float:
    return float(v)  # type: ignore[arg-type]

