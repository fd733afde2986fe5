"""From the model's distances to structures: reconstruction, hand choice, per-residue confidence.

Shared by ``infer_distmat.py`` and the evaluator, so both rebuild coordinates the same way::

    from proteinmtp.model import load_run
    from proteinmtp.predict import predict_structures
    from proteinmtp.writers import write_structure
    run = load_run("runs/demo")
    [sp] = predict_structures(run, ["MKTAYIAKQR"], method="refine")
    write_structure("pred.pdb", sp, run_dir="runs/demo", model_name=run.config.get("model_name", ""))

Choices:

* Refinement is weighted by the model's pair confidence; the hand is chosen from
  helix handedness without any native (``geometry.choose_hand``), and reported.
* Per-residue confidence written to the B-factor column is ``100 * residue_confidence`` (0–100, higher is
  better, like pLDDT).

This module never imports torch: reconstruction workers take a prediction's plain arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from proteinmtp.geometry import choose_hand
from proteinmtp.reconstruction import DEFAULT_METHOD, reconstruct
from proteinmtp.secondary import probs_to_ss8

if TYPE_CHECKING:  # pragma: no cover
    from proteinmtp.model import DistancePrediction, LoadedRun

logger = logging.getLogger(__name__)

HAND_RULES = ("all_residues", "predicted_helices")   # structure_from_distances(hand_rule=...)


@dataclass
class StructurePrediction:
    """One predicted structure.

    ca_xyz [L, 3] Å; confidence [L] 0–100 (per residue, higher is better); distances: the model output
    (``DistancePrediction``: dist [L, L] Å, contact_prob, pair/residue confidence, distogram);
    info: reconstruction info (method, mirrored, hand_score, stress_rmse Å, bond_mean Å, seconds).
    """

    sequence: str
    ca_xyz: np.ndarray
    confidence: np.ndarray
    distances: DistancePrediction
    info: dict = field(default_factory=dict)

    @property
    def mean_confidence(self) -> float:
        return float(np.mean(self.confidence)) if len(self.confidence) else 0.0

    @property
    def hand(self) -> str:
        """Which hand reconstruction kept: "mirrored" or "as built" (MDS cannot tell; see choose_hand)."""
        return "mirrored" if self.info.get("mirrored") else "as built"


def residue_confidence_100(residue_confidence: np.ndarray) -> np.ndarray:
    """Per-residue confidence [L] in [0, 1] → [L] in [0, 100] (NaN → 0, clipped)."""
    c = np.nan_to_num(np.asarray(residue_confidence, dtype=np.float64), nan=0.0)
    return np.clip(100.0 * c, 0.0, 100.0)


def predicted_ss8(pred: DistancePrediction) -> str | None:
    """Most probable DSSP 8-state letter per residue from the model's ``ss_probs`` (None without them)."""
    probs = getattr(pred, "ss_probs", None)
    if probs is None:
        return None
    return probs_to_ss8(probs)


def predicted_helix_mask(pred: DistancePrediction) -> np.ndarray | None:
    """[L] bool, residues predicted H/G/I (None when the run has no secondary-structure head)."""
    ss8 = predicted_ss8(pred)
    return None if ss8 is None else np.array([c in "HGI" for c in ss8], dtype=bool)


def structure_from_distances(pred: DistancePrediction, method: str = DEFAULT_METHOD,
                             use_confidence: bool = True, hand_rule: str = "all_residues") -> StructurePrediction:
    """Rebuild coordinates from one ``DistancePrediction`` (``reconstruction.reconstruct``: "refine" = MDS →
    stress refinement, "distogram" = folding from the distogram, "classical" = MDS only; pair confidence as
    the weights; hand chosen). "distogram" on a prediction without a distogram (e.g. the coords head) falls
    back to "refine", logged, and ``info["method"]`` says which ran.

    ``hand_rule``: "all_residues" (default: ``geometry.choose_hand`` over every Cα quadruple) or
    "predicted_helices" (read the hand from the residues the secondary-structure head predicts helical, when
    there are enough). The default is the measured better one: with today's head (held-out Q3 0.46) the
    helix rule picked the better hand less often on chains whose two hands differ (0.500 vs 0.577 of 52,
    DISCUSSION.md "Secondary structure"); ``info["hand_rule"]`` says which rule decided."""
    weights = None
    if use_confidence and pred.pair_confidence is not None:
        w = np.nan_to_num(np.asarray(pred.pair_confidence, dtype=np.float64), nan=0.0)
        weights = np.clip(w, 0.0, None)
        if not (weights > 0).any():
            weights = None
    probs, edges = getattr(pred, "distogram_probs", None), getattr(pred, "bin_edges", None)
    if hand_rule not in HAND_RULES:
        raise ValueError(f"hand_rule must be one of {', '.join(HAND_RULES)}, got {hand_rule!r}")
    helix = predicted_helix_mask(pred) if hand_rule == "predicted_helices" else None
    xyz, info = reconstruct(np.asarray(pred.dist, dtype=np.float64), weights=weights, method=method,
                            distogram=probs, bin_edges=edges, hand=helix is None)
    info["hand_rule"] = "all_residues"
    if helix is not None:  # the hand from the predicted helices' handedness (geometry.choose_hand)
        xyz, h = choose_hand(xyz, helix=helix)
        info.update(mirrored=h["mirrored"], hand_score=h["score"], hand_rule=h["rule"])
    return StructurePrediction(sequence=pred.sequence, ca_xyz=xyz,
                               confidence=residue_confidence_100(pred.residue_confidence),
                               distances=pred, info=info)


def iter_predictions(run: LoadedRun, sequences: Sequence[str], *, method: str = DEFAULT_METHOD, batch_size: int = 1,
                     progress: bool = False) -> Iterator[tuple[int, StructurePrediction | Exception]]:
    """Yield (index, prediction) for ``sequences`` (already cleaned) as each structure is ready.

    A batch whose forward pass fails yields (index, exception) for each of its sequences, and a
    reconstruction that fails yields (index, exception) for that sequence; the others go on.
    KeyboardInterrupt and other BaseExceptions propagate.
    """
    bs = max(1, batch_size)
    bar = tqdm(total=len(sequences), desc="predict", unit="seq", disable=not progress)
    try:
        for start in range(0, len(sequences), bs):
            chunk = list(sequences[start:start + bs])
            try:
                preds = run.predict(chunk, batch_size=len(chunk))
            except Exception as e:  # noqa: BLE001 - reported per sequence by the caller
                for k in range(len(chunk)):
                    bar.update(1)
                    yield start + k, e
                continue
            for k, dp in enumerate(preds):
                try:
                    res: StructurePrediction | Exception = structure_from_distances(dp, method=method)
                except Exception as e:  # noqa: BLE001
                    res = e
                bar.update(1)
                yield start + k, res
    finally:
        bar.close()


def predict_structures(run: LoadedRun, sequences: Sequence[str], *, method: str = DEFAULT_METHOD,
                       batch_size: int = 1, progress: bool = False,
                       on_result: Callable[[int, StructurePrediction], None] | None = None
                       ) -> list[StructurePrediction]:
    """Predict distances for ``sequences`` (already cleaned) in batches, then rebuild each structure.

    ``on_result(index, prediction)`` is called as each structure is ready (e.g. to write it at once).
    The first failure is raised (see :func:`iter_predictions` to go on past failures).
    """
    out: list[StructurePrediction] = []
    for i, sp in iter_predictions(run, sequences, method=method, batch_size=batch_size, progress=progress):
        if isinstance(sp, Exception):
            raise sp
        out.append(sp)
        if on_result is not None:
            on_result(i, sp)
    return out

