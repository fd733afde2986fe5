"""Evaluate a trained run on a dataset split: the model beside the separation prior, the nearest
training neighbour and the oracle.

For every protein (chain) of the split, up to four distance matrices are scored the same way:

* ``model``  — the run's prediction, rebuilt into coordinates exactly as ``infer_distmat.py`` does;
* ``prior``  — the run's length-aware ``SeparationPrior`` (prior.json, fitted on its training split)
  predicting a chain of that length, rebuilt with the same MDS + refinement;
* ``neighbour`` — the most similar training chain by an MMseqs2 search (``proteinmtp.neighbour``): its
  Cα distances at locally aligned pairs, the prior's elsewhere, rebuilt like the prior (no pair weights:
  a neighbour has no confidence). Reported when neighbours are given (the CLI computes them from the
  run's training split unless ``--no_neighbour``); the block is null, with the reason, otherwise;
* ``oracle`` — MDS of the true distances (residues with a Cα only): the ceiling of the reconstruction,
  TM ≈ 1 expected.

Residues without a Cα are excluded from every metric by mask. Structure metrics (RMSD, TM, GDT, lDDT)
are computed over the residues with a Cα, with the predicted hand (MDS cannot tell mirror images
apart; ``geometry.choose_hand`` picks one without the native). The TM-score of the better of the two
mirror images is reported only as a diagnostic, under keys that say so.

    python evaluate_distmat_model.py --model_path runs/demo --test_data data/demo/test.json --output_dir eval/
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from proteinmtp.constants import SEPARATION_RANGES
from proteinmtp.fileio import atomic_write, write_json
from proteinmtp.predict import add_prediction_arguments, resolve_device
from proteinmtp.rundir import TRAIN_JSONL

if TYPE_CHECKING:  # pragma: no cover
    from proteinmtp.confidence import ConfidenceStats
    from proteinmtp.dataset import Sample
    from proteinmtp.model import LoadedRun
    from proteinmtp.neighbour import NeighbourSet
    from proteinmtp.prior import SeparationPrior

METHODS = ("model", "prior", "oracle")   # always evaluated
NEIGHBOUR = "neighbour"                    # evaluated when neighbours are given
TABLE_ORDER = ("model", "prior", NEIGHBOUR, "oracle")
NEIGHBOUR_EXTRA_KEYS = ("identity", "aligned_fraction")  # per protein; means in the block
# Keys every method block of eval_results.json holds (means over proteins): docs/contracts.md#evaluation-output-eval_resultsjson.
REQUIRED_KEYS = ("mae", "rmse", "pearson", "mae_short", "mae_medium", "mae_long", "precision_L_long",
                 "precision_L5_long", "rmsd", "tm_score", "gdt_ts", "lddt")
# Length bins (residues, [lo, hi)); label → bounds.
LENGTH_BINS: tuple[tuple[str, int, int | None], ...] = (
    ("<100", 0, 100), ("100-199", 100, 200), ("200-299", 200, 300), (">=300", 300, None))
# Keys of the model block's confidence block: docs/contracts.md#evaluation-output-eval_resultsjson.
CONFIDENCE_KEYS = ("residue_lddt_pearson", "residue_lddt_spearman", "pair_ece", "ptm_pearson")
MIRROR_KEY = "diagnostic_tm_score_best_of_mirrors"
CB_MIN_FRACTION = 0.5   # a chain gets Cβ contact scores when at least this fraction of its Cα residues has a Cβ
CONTACT_DEFINITIONS = {
    "precision_*": "true contact: Ca-Ca distance < 8 A",
    "precision_*_cb": "true contact: Cb-Cb distance < 8 A (Ca for glycine; CASP), over the residues with a Cb "
                      "(L = their number), for chains where at least half the residues with a Ca have one",
    "ranking": "the same scores rank the pairs for both definitions: the model's P(Ca-Ca < 8 A), the "
               "baselines' Ca distances (no method predicts Cb)",
}
RESULTS_FILE = "eval_results.json"
CSV_FILE = "eval_per_protein.csv"


def length_bin(length: int) -> str:
    """Label of the length bin holding ``length`` residues."""
    for label, lo, hi in LENGTH_BINS:
        if length >= lo and (hi is None or length < hi):
            return label
    raise ValueError(f"length {length} is outside every bin")  # pragma: no cover


def oracle_structure(sample: Sample, method: str = "refine") -> np.ndarray:
    """Coordinates [L, 3] Å rebuilt by MDS (+ refinement) from the true distances of the residues with a Cα.

    Rows of residues without a Cα are NaN. Chain breaks among the present residues are passed to the
    refinement so no bond is imposed across a gap.
    """
    from proteinmtp.geometry import chain_breaks, distance_matrix, reconstruct

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
    from proteinmtp.geometry import distance_matrix

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
    Returns distance, contact and structure metrics plus the mirror diagnostic (MIRROR_KEY) and
    ``hand_correct`` (1.0 when the chosen hand scores at least as well as its mirror).

    Contacts are counted two ways: ``precision_*`` against Cα–Cα < 8 Å (the quantity predicted) and
    ``precision_*_cb`` against Cβ–Cβ < 8 Å, Cα for glycine (CASP's definition; ``true_cb_dist``, default
    from ``sample.cb``; absent when the sample has no Cβ). The same scores rank the pairs for both (the
    model predicts Cα distances); the Cβ scores are over the residues with a Cβ (L = their number) and
    only for a chain where at least ``CB_MIN_FRACTION`` of the residues with a Cα have one (Cα-only
    entries have none; their mean is over the chains that have).
    """
    from proteinmtp.geometry import mirror
    from proteinmtp.metrics import contact_metrics, distance_metrics, structure_metrics, tm_score

    mask = sample.mask()
    true = sample.distances() if true_dist is None else true_dist
    true_cb = cb_distances(sample) if true_cb_dist is None else true_cb_dist
    out: dict[str, float] = {}
    out.update(distance_metrics(pred_dist, true, mask))
    out.update(contact_metrics(contact_score, true, mask, higher_is_contact=higher_is_contact))
    if true_cb is not None:
        has_cb = mask & (np.isfinite(true_cb).sum(axis=1) > 1)   # a residue with a Cβ has finite distances
        if has_cb.sum() >= CB_MIN_FRACTION * mask.sum():
            cb = contact_metrics(contact_score, true_cb, has_cb, higher_is_contact=higher_is_contact)
            out.update({f"{k}_cb": v for k, v in cb.items()})
    ca = np.asarray(sample.ca, dtype=np.float64)[mask]
    x = np.asarray(xyz, dtype=np.float64)[mask]
    s = structure_metrics(x, ca)
    out.update(s)
    tm_m = float(tm_score(mirror(x), ca))
    out["tm_score_mirror"] = tm_m
    out[MIRROR_KEY] = max(float(s["tm_score"]), tm_m)
    out["hand_correct"] = float(float(s["tm_score"]) >= tm_m)
    return {k: _num(v) for k, v in out.items() if _is_number(v)}


def score_baselines(sample: Sample, prior: SeparationPrior, *, neighbour=None, method: str = "refine",
                    true_dist: np.ndarray | None = None,
                    true_cb_dist: np.ndarray | None = None) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Scores of one chain's reference predictions, each rebuilt with ``method`` and scored by
    :func:`score_prediction`: the separation prior, the nearest training neighbour (a
    ``neighbour.Neighbour``, when given; the prior fills its unaligned pairs) and the oracle.

    Returns ({"prior"|"neighbour"|"oracle": metrics}, {"prior"|"neighbour": [L, L] Å distances}).
    """
    from proteinmtp.geometry import reconstruct

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


def _nanmean(vals: Sequence[float]) -> float | None:
    a = np.asarray([v for v in vals if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def _methods(rows: Sequence[dict]) -> tuple[str, ...]:
    """The methods the rows hold, in table order (the neighbour only when it was evaluated)."""
    return tuple(m for m in TABLE_ORDER if m in METHODS or (rows and all(m in r for r in rows)))


# ----------------------------------------------------------------------------- accumulation for figures

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


# ----------------------------------------------------------------------------- evaluation

@dataclass
class Evaluation:
    """Per-protein rows ({"id", "length", "n_present", "length_bin", "model": {...}, "prior": {...},
    "oracle": {...}, and with neighbours "neighbour": {...}, "neighbour_id"}), proteins skipped
    (id → reason), the figure data, the confidence statistics (``confidence.ConfidenceStats``), and how the
    neighbours were found (``neighbour_info``: the NeighbourSet's info with "status": "ok", or
    {"status": "skipped", "reason": ...}; None = not asked)."""

    rows: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    figures: FigureData = field(default_factory=FigureData)
    neighbour_info: dict | None = None
    confidence: ConfidenceStats = field(default_factory=lambda: _new_confidence_stats())
    ss: list[tuple[str, str]] = field(default_factory=list)   # (true, predicted) ss8 per chain: secondary.ss_block


def _new_confidence_stats():
    from proteinmtp.confidence import ConfidenceStats

    return ConfidenceStats()


@dataclass
class _Task:
    """Everything one protein's CPU scoring needs (sent to a worker process when --workers > 1)."""

    index: int
    sample: Sample
    prediction: object            # model.DistancePrediction
    prior: object                 # prior.SeparationPrior
    neighbour: object | None      # neighbour.Neighbour
    method: str
    figures: FigureData           # only its parameters are used
    pdb: tuple[Path, str, str, str] | None = None   # (directory, file stem, run directory, model name)


def score_protein(task: _Task) -> dict:
    """One protein: rebuild the model's structure from its predicted distances (as ``infer_distmat.py``
    does), score it and the baselines, the confidence statistics and the figure contribution; write its
    PDBs when asked. Returns {"row", "figure", "confidence"} (small: no L x L matrix beyond the first
    proteins' heatmaps), and "ss" (the (true, predicted) ss8 pair, ``secondary.eval_pairs``)."""
    from proteinmtp.confidence import ConfidenceStats, predicted_tm
    from proteinmtp.metrics import lddt_ca_per_residue
    from proteinmtp.predict import structure_from_distances, write_structure
    from proteinmtp.structure import write_pdb

    sample, dp = task.sample, task.prediction
    sp = structure_from_distances(dp, method=task.method)
    L = len(sample.sequence)
    mask = sample.mask()
    row = {"id": sample.id, "length": L, "n_present": int(mask.sum()), "length_bin": length_bin(L)}
    true = sample.distances()
    true_cb = cb_distances(sample)
    model_dist = np.asarray(dp.dist, dtype=np.float64)
    row["model"] = score_prediction(model_dist, np.asarray(dp.contact_prob, float), sp.ca_xyz, sample,
                                    true_dist=true, true_cb_dist=true_cb)
    row["model"]["mean_confidence"] = sp.mean_confidence
    perr = getattr(dp, "pair_error_probs", None)
    ptm = predicted_tm(perr)
    if ptm is not None:
        row["model"]["ptm"] = ptm
    scores, preds = score_baselines(sample, task.prior, neighbour=task.neighbour, method=task.method,
                                    true_dist=true, true_cb_dist=true_cb)
    row.update(scores)
    if task.neighbour is not None:
        row["neighbour_id"] = task.neighbour.neighbour_id or ""
    ca = np.asarray(sample.ca, dtype=np.float64)
    conf = ConfidenceStats()
    conf.add_protein(task.index, sp.confidence, lddt_ca_per_residue(sp.ca_xyz, ca, mask), perr, model_dist,
                     true, mask)
    fig = task.figures.contribution(task.index, sample, {"model": model_dist, **preds}, sp.ca_xyz,
                                    sp.confidence, true_dist=true)
    if task.pdb is not None:
        d, stem, run_dir, model_name = task.pdb
        write_structure(d / f"{stem}_model.pdb", sp, run_dir=run_dir, model_name=model_name, record_id=sample.id)
        nums = [r for r, ok in zip(sample.residue_ids, mask) if ok] if sample.residue_ids else None
        write_pdb(d / f"{stem}_native.pdb", ca[mask], "".join(c for c, ok in zip(sample.sequence, mask) if ok),
                  residue_numbers=nums, model_name="native", method="experimental", remarks=[f"NATIVE {sample.id}"])
    from proteinmtp.secondary import eval_pairs

    return {"row": row, "figure": fig, "confidence": conf, "ss": eval_pairs(sample, dp)}


def _worker_init() -> None:
    """A scoring worker uses one BLAS/OpenMP thread (the pool is the parallelism)."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    except ImportError:  # pragma: no cover
        pass


def evaluate_run(run: LoadedRun, samples: Sequence[Sample], *, method: str = "refine", batch_size: int = 1,
                 prior: SeparationPrior | None = None, progress: bool = True, pdb_dir: str | Path | None = None,
                 figures: FigureData | None = None, run_dir: str | Path = "",
                 neighbours: NeighbourSet | None = None, workers: int = 1) -> Evaluation:
    """Score the run, the separation prior, the oracle and (with ``neighbours``) the nearest training
    neighbour on ``samples``.

    Streaming: the model's forward pass runs in this process, batch by batch; each protein's prediction
    is scored (:func:`score_protein`) and only its row, running sums and bounded figure samples are kept,
    so memory does not grow with the predictions. ``workers`` > 1 scores proteins in that many worker
    processes (at most 2 x workers predictions in flight); rows, figures and statistics are merged in
    the order of ``samples`` whatever the number of workers, so the results are the same.

    ``neighbours``: from ``proteinmtp.neighbour.find_neighbours(train, samples)``, computed once and
    reusable for every run evaluated on the same samples (the run's own prior fills unaligned pairs);
    ValueError before any prediction when a sample has no neighbour record or another sequence.
    ``prior`` defaults to ``run.prior`` (the run's prior.json). Proteins longer than ``run.max_len`` or
    with fewer than 2 residues with a Cα are skipped and listed. With ``pdb_dir``, the model's structure
    (confidence in the B-factor column) and the native Cα trace are written as <id>_model.pdb and
    <id>_native.pdb. The first failure is raised.
    """
    from collections import deque

    from tqdm.auto import tqdm

    from proteinmtp.predict import record_stems, run_description

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    prior = prior if prior is not None else getattr(run, "prior", None)
    if prior is None:
        raise ValueError("the run has no separation prior (prior.json); retrain with a current train_distmat.py")
    ev = Evaluation(figures=figures or FigureData())
    max_len = getattr(run, "max_len", None)
    todo: list[Sample] = []
    for s in samples:
        n_present = int(s.mask().sum())
        if max_len and len(s.sequence) > max_len:
            ev.skipped[s.id] = f"length {len(s.sequence)} > model maximum {max_len}"
        elif n_present < 2:
            ev.skipped[s.id] = f"only {n_present} residue(s) with a Cα"
        else:
            todo.append(s)
    nb_of = {s.id: neighbours.for_sample(s) for s in todo} if neighbours is not None else None
    if neighbours is not None:
        ev.neighbour_info = {"status": "ok", **neighbours.info}
    stems = record_stems([s.id for s in todo])
    model_name = run_description(run.config)["model_name"]
    params = FigureData(max_sep=ev.figures.max_sep, max_pairs_per_protein=ev.figures.max_pairs_per_protein,
                        max_sample_proteins=ev.figures.max_sample_proteins, n_heatmaps=ev.figures.n_heatmaps,
                        seed=ev.figures.seed)
    bar = tqdm(total=len(todo), desc="evaluate", unit="protein", disable=not progress)

    def consume(res: dict) -> None:
        ev.rows.append(res["row"])
        ev.figures.merge(res["figure"])
        ev.confidence.merge(res["confidence"])
        ev.ss.extend(res.get("ss", []))
        bar.update(1)

    def tasks():
        bs = max(1, batch_size)
        for start in range(0, len(todo), bs):
            chunk = todo[start:start + bs]
            for k, dp in enumerate(run.predict([s.sequence for s in chunk], batch_size=len(chunk))):
                i = start + k
                yield _Task(i, todo[i], dp, prior, None if nb_of is None else nb_of[todo[i].id], method, params,
                            None if pdb_dir is None else (Path(pdb_dir), stems[i], str(run_dir), model_name))

    try:
        if workers == 1:
            for task in tasks():
                consume(score_protein(task))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init) as pool:
                pending: deque = deque()
                try:
                    for task in tasks():
                        pending.append(pool.submit(score_protein, task))
                        while len(pending) > 2 * workers:
                            consume(pending.popleft().result())
                    while pending:
                        consume(pending.popleft().result())
                except BaseException:
                    for f in pending:
                        f.cancel()
                    raise
    finally:
        bar.close()
    return ev


# ----------------------------------------------------------------------------- aggregation

def _mean_block(rows: Sequence[dict], method: str) -> dict:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r[method] if k not in keys)
    block: dict = {k: _nanmean([r[method].get(k) for r in rows]) for k in keys}
    block["n_proteins"] = len(rows)
    return block


def summarize(ev: Evaluation) -> dict:
    """eval_results.json content: ``model``/``prior``/``neighbour``/``oracle`` blocks of means over proteins
    with ``by_range`` and ``by_length`` breakdowns, ``n_proteins``, ``skipped`` and a ``diagnostics`` note.

    The ``neighbour`` block has the prior's keys plus ``identity`` (mean MMseqs2 identity over the chains
    with a hit), ``aligned_fraction`` (mean over all chains) and ``n_without_hit``; it is null when no
    neighbours were evaluated, and ``neighbour_search`` then says why (else how they were found).
    """
    rows = ev.rows
    methods = _methods(rows)
    out: dict = {}
    for method in methods:
        block = _mean_block(rows, method) if rows else {k: None for k in REQUIRED_KEYS} | {"n_proteins": 0}
        by_range = {}
        for r in SEPARATION_RANGES:
            sub = {k: block.get(f"{k}_{r}") for k in ("mae", "rmse", "pearson", "spearman")}
            sub.update({k: block.get(f"{k}_{r}") for k in ("precision_L", "precision_L2", "precision_L5")
                        if f"{k}_{r}" in block})
            sub = {k: v for k, v in sub.items() if f"{k}_{r}" in block}
            sub.update({f"{k}_cb": block[f"{k}_{r}_cb"] for k in ("precision_L", "precision_L2", "precision_L5")
                        if f"{k}_{r}_cb" in block})
            by_range[r] = sub
        block["by_range"] = by_range
        by_len = {}
        for label, _, _ in LENGTH_BINS:
            sub_rows = [r for r in rows if r["length_bin"] == label]
            if sub_rows:
                by_len[label] = _mean_block(sub_rows, method)
        block["by_length"] = by_len
        if method == NEIGHBOUR:
            block["n_without_hit"] = sum(1 for r in rows if not r.get("neighbour_id"))
        if method == "model":
            col = lambda k: np.array([np.nan if r["model"].get(k) is None else r["model"][k]  # noqa: E731
                                      for r in rows], dtype=np.float64)
            block["confidence"] = ev.confidence.summary(col("ptm"), col("tm_score"), col(MIRROR_KEY))
        out[method] = block
    if NEIGHBOUR not in methods:
        out[NEIGHBOUR] = None
    out["neighbour_search"] = ev.neighbour_info or {"status": "skipped", "reason": "no neighbours were given"}
    if out.get("model") is not None:
        from proteinmtp.secondary import ss_block

        out["model"]["ss"] = ss_block(ev.ss)   # q3, q8, q3_majority; None without SS head or labels
    out["n_proteins"] = len(rows)
    out["contact_definitions"] = CONTACT_DEFINITIONS
    out["length_bins"] = {label: [lo, hi] for label, lo, hi in LENGTH_BINS}
    out["skipped"] = dict(ev.skipped)
    out["diagnostics"] = {
        "note": (f"'{MIRROR_KEY}' is the TM-score of the better of the two mirror images, chosen WITH the "
                 "native: a diagnostic of how much the hand choice costs, not a result. 'tm_score' uses the "
                 "hand chosen without the native. 'hand_correct' is the fraction where that choice was the "
                 "better one."),
        "tm_score_best_of_mirrors": {m: out[m].get(MIRROR_KEY) for m in methods},
    }
    return _json_safe(out)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def per_protein_csv(ev: Evaluation) -> str:
    """CSV text: one row per protein (id, length, n_present, length_bin, [neighbour_id,] then
    <method>_<metric> columns; the neighbour's include neighbour_identity and neighbour_aligned_fraction)."""
    methods = _methods(ev.rows)
    cols: list[str] = []
    for method in methods:
        for r in ev.rows:
            cols.extend(f"{method}_{k}" for k in r[method] if f"{method}_{k}" not in cols)
    fixed = ["id", "length", "n_present", "length_bin"] + (["neighbour_id"] if NEIGHBOUR in methods else [])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*fixed, *cols])
    for r in ev.rows:
        vals = []
        for c in cols:
            method, key = c.split("_", 1)
            v = r[method].get(key)
            vals.append("" if v is None or not math.isfinite(v) else f"{v:.6g}")
        w.writerow([*(r[c] for c in fixed), *vals])
    return buf.getvalue()


def write_figures(ev: Evaluation, vis_dir: str | Path, run_dir: str | Path | None = None) -> list[Path]:
    """Draw the evaluation figures (and training curves when ``run_dir`` has train_log.jsonl) into vis_dir."""
    from proteinmtp import plots
    from proteinmtp.predict import record_stems
    from proteinmtp.runs import replace_written
    from proteinmtp.viewer import write_viewer_html

    vis = Path(vis_dir)
    fd = ev.figures
    paths: list[Path] = []
    if not ev.rows:
        replace_written(vis, [])           # no figure of an earlier evaluation stays beside these results
        return paths
    paths.append(plots.distance_heatmaps(fd.heatmaps, vis / "distance_heatmaps.png"))
    # pairs pooled over proteins (at most FigureData.max_pairs_per_protein from each)
    paths.append(plots.error_histogram({k: np.concatenate(v) for k, v in fd.errors.items()},
                                       vis / "error_histogram.png"))
    paths.append(plots.error_by_separation(fd.mae_by_separation(), vis / "error_by_separation.png"))
    pred, true, sep = (np.concatenate([s[k] for s in fd.scatter]) for k in range(3))
    paths.append(plots.scatter_by_range(pred, true, sep, vis / "pred_vs_true_scatter.png"))
    lengths = np.array([r["length"] for r in ev.rows])
    metrics = {m: {meth: np.array([np.nan if r[meth].get(m) is None else r[meth][m] for r in ev.rows])
                   for meth in _methods(ev.rows) if not (meth == "oracle" and m == "mae")}
               for m in ("mae", "tm_score", "lddt")}
    paths.append(plots.metrics_vs_length(lengths, metrics, vis / "metrics_vs_length.png"))
    results = summarize(ev)
    conf = results["model"]["confidence"]
    col = lambda k: np.array([np.nan if r["model"].get(k) is None else r["model"][k] for r in ev.rows])  # noqa: E731
    paths.append(plots.confidence_calibration(conf, col("ptm"), col("tm_score"), vis / "confidence.png"))
    paths.append(plots.contact_precision({m: results[m] for m in TABLE_ORDER if results.get(m)},
                                         vis / "contact_precision.png"))
    stems = record_stems([v[0] for v in fd.views])
    for stem, (sid, xyz, ca, seq, conf) in zip(stems, fd.views):
        row = next(r for r in ev.rows if r["id"] == sid)
        summary = (f"Model TM-score {row['model'].get('tm_score', float('nan')):.3f}, lDDT "
                   f"{row['model'].get('lddt', float('nan')):.3f} (hand chosen without the native).")
        paths.append(write_viewer_html(vis / f"view_{stem}.html", xyz, ca, seq, title=f"{sid}: predicted vs native",
                                       confidence=conf, summary=summary))
    if run_dir is not None and (Path(run_dir) / TRAIN_JSONL).is_file():
        rows = plots.read_train_log(Path(run_dir) / TRAIN_JSONL)
        if rows:
            paths.append(plots.training_curves(rows, vis / "training_curves.png"))
    replace_written(vis, [Path(p).name for p in paths])   # drop what an earlier evaluation wrote and this one did not
    return paths


def write_results(ev: Evaluation, output_dir: str | Path, config: dict | None = None) -> dict:
    """Write eval_results.json (with ``config``) and eval_per_protein.csv into output_dir; returns the results."""

    out = Path(output_dir)
    results = summarize(ev)
    if config:
        results["config"] = _json_safe(config)
    write_json(out / RESULTS_FILE, results)
    atomic_write(out / CSV_FILE, per_protein_csv(ev))
    return results


def format_summary(results: dict) -> str:
    """A small text table of the headline metrics for model / prior / neighbour / oracle."""
    keys = ("mae", "mae_short", "mae_medium", "mae_long", "precision_L5_long", "precision_L5_long_cb", "rmsd",
            "tm_score", "gdt_ts", "lddt")
    lines = [f"{'':10}" + "".join(f"{k:>21}" for k in keys)]
    for m in TABLE_ORDER:
        if not results.get(m):
            continue
        vals = [results[m].get(k) for k in keys]
        lines.append(f"{m:10}" + "".join(f"{v:21.3f}" if v is not None else f"{'n/a':>21}" for v in vals))
    lines.append("contacts: precision_* against Ca-Ca < 8 A, precision_*_cb against Cb-Cb < 8 A (Ca for Gly); "
                 "both ranked by the predicted Ca distances/probabilities")
    conf = (results.get("model") or {}).get("confidence")
    if conf:
        f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"confidence: per-residue vs true lDDT-Ca Pearson {f(conf.get('residue_lddt_pearson'))}, "
                     f"Spearman {f(conf.get('residue_lddt_spearman'))}; pair error classes ECE "
                     f"{f(conf.get('pair_ece'))}; pTM mean {f(conf.get('ptm_mean'))}, Pearson with TM "
                     f"{f(conf.get('ptm_pearson'))}")
    nb = results.get(NEIGHBOUR)
    if nb:
        ident = nb.get("identity")
        lines.append(f"neighbour: nearest training chain by MMseqs2, mean identity "
                     f"{'n/a' if ident is None else f'{ident:.3f}'} (chains with a hit), mean aligned fraction "
                     f"{nb.get('aligned_fraction') or 0.0:.3f}; {nb.get('n_without_hit', 0)} chain(s) without a hit "
                     "use the prior")
    elif NEIGHBOUR in results:
        reason = (results.get("neighbour_search") or {}).get("reason", "not computed")
        lines.append(f"neighbour: skipped ({reason})")
    ss = (results.get("model") or {}).get("ss")
    if ss:
        lines.append(f"secondary structure (DSSP, held-out): Q3 {ss['q3']:.3f} (majority class "
                     f"{ss['q3_majority']:.3f}), Q8 {ss['q8']:.3f} over {ss['n_residues']} residues")
    lines.append(f"n_proteins = {results['n_proteins']}" +
                 (f" (skipped {len(results['skipped'])})" if results.get("skipped") else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line (model mode)

def add_model_arguments(parser) -> None:
    """Flags of the model-evaluation mode of evaluate_distmat_model.py."""
    g = parser.add_argument_group("model evaluation (--model_path + --test_data)")
    g.add_argument("--model_path", help="run directory written by train_distmat.py")
    g.add_argument("--test_data", help="dataset split to evaluate on (JSON or .json.gz from create_distmat_data.py)")
    g.add_argument("--num_samples", type=int, default=None,
                   help="evaluate only the first N proteins of the split (None = all)")
    g.add_argument("--output_dir", default=None,
                   help="where eval_results.json, eval_per_protein.csv and visualizations/ go "
                        "(None = the experiment record directory)")
    g.add_argument("--save_pdbs", action="store_true",
                   help="also write <id>_model.pdb (confidence in B-factor) and <id>_native.pdb into OUTPUT_DIR/pdbs/")
    g.add_argument("--experiment_name", default=None,
                   help="record the run in EXPERIMENTS_ROOT/<YYYY-MM-DD>_<name>/ (None: OUTPUT_DIR is the record "
                        "when given, else EXPERIMENTS_ROOT/<YYYY-MM-DD>_<run directory name>/); a record of another "
                        "run is never reused: the first free <name>_2, _3, ... is taken, while the same run "
                        "(re-evaluated, or recorded by its training) keeps its record")
    g.add_argument("--experiments_root", default="experiments", help="root directory of experiment records")
    add_prediction_arguments(g, "reconstruction used for model, prior and oracle")
    g.add_argument("--no_figures", action="store_true", help="skip the figures and HTML views")
    g.add_argument("--workers", type=int, default=1,
                   help="processes scoring proteins (reconstruction, metrics) while the model's forward pass runs "
                        "in the main process; 1 = score in the main process. Results are identical for any N")
    g.add_argument("--train_data", default=None,
                   help="training split searched for each chain's nearest neighbour (dataset JSON or .json.gz; "
                        "None = train_data of the run's training_config.json; a missing file there skips the "
                        "neighbour with a warning, a missing file given here is an error)")
    g.add_argument("--no_neighbour", action="store_true",
                   help="skip the nearest-training-neighbour baseline (its block in eval_results.json is null)")


class EvaluationInputError(ValueError):
    """Bad arguments or input files for the model evaluation (reported as one line)."""


def run_neighbours(args, run_config: dict, samples: Sequence[Sample]) -> tuple[NeighbourSet | None, dict]:
    """Nearest training neighbours of ``samples`` for the CLI: (NeighbourSet or None, info for the results).

    The training split is ``args.train_data``, else the run's training_config.json ``train_data`` (as
    recorded: absolute, or relative to the working directory). When that recorded file is missing or
    unreadable, or MMseqs2 fails, a one-line warning goes to stderr and the neighbour is skipped (None,
    {"status": "skipped", "reason": ...}): the model's own evaluation still runs. A ``--train_data`` that
    does not exist or cannot be read is an :class:`EvaluationInputError`.
    """
    import sys

    from proteinmtp.dataio import open_dataset
    from proteinmtp.neighbour import find_neighbours
    from proteinmtp.splits import MMseqsError

    def skip(reason: str, warn: bool = True) -> tuple[None, dict]:
        if warn:
            print(f"warning: nearest-neighbour baseline skipped: {reason}", file=sys.stderr)
        return None, {"status": "skipped", "reason": reason}

    if args.no_neighbour:
        return skip("--no_neighbour", warn=False)
    explicit = bool(args.train_data)
    path = args.train_data or run_config.get("train_data")
    if not path:
        return skip("the run's training_config.json names no train_data; pass --train_data")
    where = "--train_data" if explicit else "train_data in the run's training_config.json"
    if not Path(path).is_file():
        if explicit:
            raise EvaluationInputError(f"--train_data {path} does not exist")
        return skip(f"training data {path} ({where}) not found; pass --train_data")
    try:
        train = open_dataset(path)
    except (ValueError, OSError) as e:
        msg = f"cannot read training data {path} ({where}): {e}".splitlines()[0]
        if explicit:
            raise EvaluationInputError(msg) from None
        return skip(msg)
    try:
        nbs = find_neighbours(train.samples, samples)
    except MMseqsError as e:
        return skip(f"MMseqs2 search failed: {e}".splitlines()[0])
    nbs.info["train_data"] = str(path)
    return nbs, {"status": "ok", **nbs.info}


def run_model_mode(args) -> int:
    """Model evaluation from parsed ``args`` (see :func:`add_model_arguments`). Prints the summary table.

    Raises :class:`EvaluationInputError` (one-line message) for a missing/corrupt run directory or
    dataset, before anything is written.
    """
    from proteinmtp import runs

    if not args.model_path or not args.test_data:
        raise EvaluationInputError("model evaluation needs both --model_path and --test_data")
    if args.num_samples is not None and args.num_samples < 1:
        raise EvaluationInputError(f"--num_samples must be ≥ 1, got {args.num_samples}")
    if args.batch_size < 1:
        raise EvaluationInputError(f"--batch_size must be ≥ 1, got {args.batch_size}")
    if getattr(args, "workers", 1) < 1:
        raise EvaluationInputError(f"--workers must be ≥ 1, got {args.workers}")
    run_dir = Path(args.model_path)
    if not run_dir.is_dir():
        raise EvaluationInputError(f"run directory {run_dir} does not exist; pass the --output_dir of train_distmat.py")
    if not Path(args.test_data).is_file():
        raise EvaluationInputError(f"test data {args.test_data} does not exist")
    from proteinmtp.dataio import open_dataset

    try:
        data = open_dataset(args.test_data)
    except (ValueError, OSError) as e:
        raise EvaluationInputError(f"cannot read test data {args.test_data}: {e}".splitlines()[0]) from None
    samples = list(data.samples)[: args.num_samples] if args.num_samples else list(data.samples)
    if not samples:
        raise EvaluationInputError(f"test data {args.test_data} holds no protein")
    device = resolve_device(args.device)
    from proteinmtp.model import load_run
    from proteinmtp.predict import load_error_message, quiet_transformers, run_description

    quiet_transformers()
    try:
        run = load_run(run_dir, device=device, trust_remote_code=args.trust_remote_code)
    except Exception as e:  # noqa: BLE001 - any failure to load is reported as one line
        raise EvaluationInputError(load_error_message(run_dir, e)) from None
    if getattr(run, "prior", None) is None:
        raise EvaluationInputError(f"run {run_dir} has no prior.json (the separation prior); retrain it")
    neighbours, neighbour_info = run_neighbours(args, run.config, samples)

    # The record: EXPERIMENTS_ROOT/<date>_<name>/ when named; else OUTPUT_DIR itself; else <date>_<run name>.
    if args.experiment_name or not args.output_dir:
        exp_dir = runs.experiment_dir(args.experiment_name or run_dir.resolve().name, root=args.experiments_root,
                                      run_dir=run_dir)
    else:
        exp_dir = Path(args.output_dir)
    out = Path(args.output_dir) if args.output_dir else exp_dir
    out.mkdir(parents=True, exist_ok=True)
    ev = evaluate_run(run, samples, method=args.mds_method, batch_size=args.batch_size,
                      pdb_dir=(out / "pdbs") if args.save_pdbs else None, run_dir=run_dir,
                      progress=not getattr(args, "quiet", False), neighbours=neighbours,
                      workers=getattr(args, "workers", 1))
    ev.neighbour_info = neighbour_info
    config = {"model_path": str(run_dir), "test_data": str(args.test_data), "num_samples": args.num_samples,
              "mds_method": args.mds_method, "n_in_split": len(data.samples), "workers": getattr(args, "workers", 1),
              **run_description(run.config), "max_len": getattr(run, "max_len", None),
              "git_commit": run.config.get("git_commit"), "max_steps": run.config.get("max_steps")}
    results = write_results(ev, out, config)
    if not args.no_figures:
        write_figures(ev, out / runs.VIS_DIR, run_dir=run_dir)
    else:
        runs.replace_written(out / runs.VIS_DIR, [])   # figures of an earlier evaluation would not match these results
    runs.record_training(run_dir, exp_dir)
    runs.record_evaluation(exp_dir, out)
    print(format_summary(results))
    print(f"wrote {out / RESULTS_FILE} and {out / CSV_FILE}; experiment record {exp_dir}")
    return 0
