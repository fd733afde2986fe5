"""From distances to coordinates: the one registry of reconstruction methods, and the pipeline they share.

    dist [L, L] Å (+ distogram) ──METHODS[name].build──▶ xyz ──final stage: geometry.resolve_clashes, repeated
    stronger until metrics.clash_check passes──▶ geometry.choose_hand ──▶ ca_xyz [L, 3] Å, info

Methods (``METHODS``; ``--mds_method`` of the scripts):

* ``classical``: classical MDS of the distances (``geometry.classical_mds``);
* ``refine`` (``DEFAULT_METHOD``): MDS, then stress + bond + clash refinement (``geometry.refine``), weighted
  by the pair confidence;
* ``distogram``: folding from the predicted distogram (``folding.fold``); it NEEDS the distogram
  (probabilities + bin edges). Without one (a baseline's distances, a head that predicts none) it falls back
  to ``refine``, logged, and ``info["method"]`` says which ran: ``resolve_method`` is that rule's one place.

Every method ends with the same final stage (``final_stage``): whatever the method built is moved to the
nearest structure, in its own distances, whose Cα geometry keeps the bounds of ``metrics.clash_check`` (no
non-bonded pair under 3.5 Å, no i, i+2 under 4.2 Å, bonds 3.8 ± 0.1 Å), with bond and clash terms strong
enough to win over the fit; the stage is repeated ``FINAL_ROUNDS`` times at most, each ten times stronger,
until the check passes. Distances are never capped after the fact. ``final=False`` skips it (the
reconstruction as it was before the stage existed; benchmarks/bench_clashes.py compares both).

A new method is one ``Method`` entry: its name, its build function and what it needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from proteinmtp.constants import CA_CA_BOND
from proteinmtp.folding import fold
from proteinmtp.geometry import (
    _bond_pairs,
    check_distance_matrix,
    choose_hand,
    classical_mds,
    distance_matrix,
    refine,
    resolve_clashes,
)
from proteinmtp.metrics import clash_check

logger = logging.getLogger(__name__)

FINAL_ROUNDS = 4           # final-stage repeats at most, strength 1, 10, 100, 1000
ROUND_JITTER = 0.1         # Å, random kick of the start of every repeat (out of the minimum the last one kept)
GEOMETRY_KEYS = ("clashes", "n_clashes", "n_i2_short", "n_bond_outliers", "min_nonbonded", "min_i2",
                 "max_bond_deviation")   # metrics.clash_check results copied into info["geometry"]


@dataclass(frozen=True)
class Inputs:
    """What a method may read beside the distance matrix ``dist`` [L, L] Å (NaN = unknown pair)."""

    weights: np.ndarray | None = None       # [L, L] ≥ 0 pair confidence (uniform when None)
    breaks: Sequence[int] = ()              # i where residues i and i+1 are not bonded
    distogram: np.ndarray | None = None     # [L, L, n_bins] probabilities
    bin_edges: np.ndarray | None = None     # [n_bins − 1] Å

    def has(self, need: str) -> bool:
        if need == "distogram":
            return self.distogram is not None and self.bin_edges is not None
        raise ValueError(f"unknown reconstruction input {need!r}")  # pragma: no cover - registry typo


@dataclass(frozen=True)
class Method:
    """One reconstruction method: ``build(dist, inputs) -> (xyz [L, 3] Å, extra info)``; ``needs``: inputs
    beyond the distances (see ``Inputs.has``); ``fallback``: the method run when one of them is missing."""

    name: str
    build: Callable[[np.ndarray, Inputs], tuple[np.ndarray, dict]]
    summary: str
    needs: tuple[str, ...] = ()
    fallback: str | None = None


def _classical(d: np.ndarray, inp: Inputs) -> tuple[np.ndarray, dict]:
    return classical_mds(d, mask=np.isfinite(d)), {}


def _refine(d: np.ndarray, inp: Inputs) -> tuple[np.ndarray, dict]:
    xyz = classical_mds(d, mask=np.isfinite(d))
    if len(d) >= 2:
        xyz = refine(xyz, d, inp.weights, breaks=inp.breaks, mask=np.isfinite(d))
    return xyz, {}


def _distogram(d: np.ndarray, inp: Inputs) -> tuple[np.ndarray, dict]:
    xyz, info = fold(d, inp.distogram, inp.bin_edges, inp.weights, breaks=inp.breaks, mask=np.isfinite(d))
    return xyz, {"energy": info["energy"], "start": info["start"]}


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("classical", _classical, "classical MDS of the distances (top-3 eigenpairs)"),
    Method("refine", _refine, "MDS, then L-BFGS on the stress of the distances (pair confidence as weights) "
                              "+ Cα–Cα bond + clash terms"),
    Method("distogram", _distogram, "folding from the predicted distogram (−log p(d) restraints, several MDS "
                                    "starts)", needs=("distogram",), fallback="refine"),
)}
DEFAULT_METHOD = "refine"


def method_names() -> tuple[str, ...]:
    """The registered method names, in registry order (``--mds_method`` choices)."""
    return tuple(METHODS)


def methods_help() -> str:
    """One line per registered method for a ``--mds_method`` help text: name, what it does, what it needs."""
    return "; ".join(f"{m.name}: {m.summary}" + (f" (needs the {', '.join(m.needs)}; without it: {m.fallback})"
                                                  if m.needs else "") for m in METHODS.values())


def resolve_method(method: str, inputs: Inputs) -> str:
    """The method that will run for ``method`` given ``inputs``: itself, or its fallback (logged) when an input
    it needs is missing. ``ValueError`` for an unknown name."""
    if method not in METHODS:
        raise ValueError(f"reconstruction method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    m = METHODS[method]
    missing = [n for n in m.needs if not inputs.has(n)]
    if missing and m.fallback is not None:
        logger.info("reconstruction %r needs %s, which this prediction lacks (a baseline, or a head without one): "
                    "%r instead", method, " and ".join(missing), m.fallback)
        return resolve_method(m.fallback, inputs)
    if missing:  # pragma: no cover - every method with needs has a fallback
        raise ValueError(f"reconstruction method {method!r} needs {', '.join(missing)}")
    return method


def final_stage(xyz: np.ndarray, breaks: Sequence[int] = (), *, rounds: int = FINAL_ROUNDS
                ) -> tuple[np.ndarray, dict]:
    """The clash-resolving final stage: ``geometry.resolve_clashes`` at strength 1, 10, 100, … (at most
    ``rounds`` runs; every repeat starts ``ROUND_JITTER`` Å off where the last one stopped), stopping at the
    first structure ``metrics.clash_check`` passes. Returns (xyz [L, 3] Å,
    {"final_rounds": runs made, "geometry_ok": bool}); a structure still out of bounds after every round is
    returned as it is, with a warning (the writers flag it)."""
    x = np.asarray(xyz, dtype=np.float64)
    n = 0
    ok = clash_check(x, breaks)["ok"]             # a structure already in bounds is left as it is
    while not ok and n < rounds:
        x = resolve_clashes(x, breaks, strength=10.0 ** n, jitter=ROUND_JITTER if n else 0.0, seed=n)
        n += 1
        ok = clash_check(x, breaks)["ok"]
    if not ok:
        logger.warning("reconstruction: the final stage left Cα geometry out of bounds after %d rounds "
                       "(clash_check: %s)", n, {k: v for k, v in clash_check(x, breaks).items() if k != "ok"})
    return x, {"final_rounds": n, "geometry_ok": bool(ok)}


def reconstruct(
    dist: np.ndarray,
    weights: np.ndarray | None = None,
    method: str = DEFAULT_METHOD,
    breaks: Sequence[int] = (),
    *,
    mask: np.ndarray | None = None,
    hand: bool = True,
    distogram: np.ndarray | None = None,
    bin_edges: np.ndarray | None = None,
    final: bool = True,
) -> tuple[np.ndarray, dict]:
    """Distances -> coordinates. ``dist`` [L, L] Å -> (``xyz`` [L, 3] Å, info dict).

    ``method``: a ``METHODS`` name (module docstring); ``weights`` [L, L] ≥ 0 pair confidence; ``breaks``
    chain breaks; ``mask`` [L, L] bool, False = unknown pair; ``distogram`` [L, L, n_bins] with ``bin_edges``
    [n_bins − 1] Å for "distogram". ``final``: run the clash-resolving final stage (default; False gives the
    method's own output). ``hand``: apply ``geometry.choose_hand``.

    info: method (the one that ran), mirrored, hand_score, stress_rmse (Å, over known pairs, against
    ``dist``), bond_mean/bond_max_dev (Å), geometry (``metrics.clash_check`` of the result: clashes per 100
    residues, counts, minima), final_rounds and geometry_ok (with ``final``), seconds; with "distogram" also
    energy and start. Raises ``ValueError`` on invalid input; the output is always finite.
    """
    inputs = Inputs(weights=weights, breaks=tuple(int(b) for b in breaks), distogram=distogram,
                    bin_edges=bin_edges)
    method = resolve_method(method, inputs)
    t0 = time.perf_counter()
    d = check_distance_matrix(dist, mask=mask)
    L = d.shape[0]
    info: dict = {"method": method, "mirrored": False, "hand_score": 0.0}
    xyz, extra = METHODS[method].build(d, inputs)
    info.update(extra)
    if final:
        xyz, fin = final_stage(xyz, inputs.breaks)
        info.update(fin)
    if hand:
        xyz, h = choose_hand(xyz, breaks=inputs.breaks)
        info["mirrored"], info["hand_score"] = h["mirrored"], h["score"]
    if not np.isfinite(xyz).all():  # pragma: no cover - guarded above, kept as a last line of defence
        raise ValueError("reconstruct: produced non-finite coordinates; check the distance matrix")
    known = np.isfinite(d)
    iu = np.triu_indices(L, 1)
    sel = known[iu]
    dd = distance_matrix(xyz)
    info["stress_rmse"] = float(np.sqrt(np.mean((dd[iu][sel] - d[iu][sel]) ** 2))) if sel.any() else 0.0
    bonds = _bond_pairs(L, inputs.breaks) if L > 1 else np.zeros(0, int)
    if len(bonds):
        bl = dd[bonds, bonds + 1]
        info["bond_mean"] = float(bl.mean())
        info["bond_max_dev"] = float(np.abs(bl - CA_CA_BOND).max())
    check = clash_check(xyz, inputs.breaks)
    info["geometry"] = {k: check[k] for k in GEOMETRY_KEYS}
    info["seconds"] = time.perf_counter() - t0
    return xyz, info
