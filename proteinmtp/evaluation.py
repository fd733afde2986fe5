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
* ``model_no_templates`` — for a run trained with templates, the same run predicting without them (its
  no-template path), rebuilt and scored like ``model``; each row also names the best template the model
  used (``template_id``, ``template_identity``, ``template_coverage``; ``n_templates`` 0: no hit);
* ``oracle`` — MDS of the true distances (residues with a Cα only): the ceiling of the reconstruction,
  TM ≈ 1 expected.

Residues without a Cα are excluded from every metric by mask. Structure metrics (RMSD, TM, GDT, lDDT)
are computed over the residues with a Cα, with the predicted hand (MDS cannot tell mirror images
apart; ``geometry.choose_hand`` picks one without the native). The TM-score of the better of the two
mirror images is reported only as a diagnostic, under keys that say so.

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from proteinmtp.confidence import ConfidenceStats, predicted_tm
from proteinmtp.eval_figures import FigureData
from proteinmtp.eval_scoring import cb_distances, length_bin, score_baselines, score_prediction
from proteinmtp.fasta import record_stems
from proteinmtp.metrics import lddt_ca_per_residue
from proteinmtp.pool import WorkerPool
from proteinmtp.predict import structure_from_distances
from proteinmtp.reconstruction import DEFAULT_METHOD
from proteinmtp.runcli import run_description
from proteinmtp.secondary import eval_pairs
from proteinmtp.structure_writer import write_pdb
from proteinmtp.writers import write_structure

if TYPE_CHECKING:  # pragma: no cover
    from proteinmtp.dataset import Sample
    from proteinmtp.model import LoadedRun
    from proteinmtp.neighbour import NeighbourSet
    from proteinmtp.prior import SeparationPrior


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
    confidence: ConfidenceStats = field(default_factory=ConfidenceStats)
    ss: list[tuple[str, str]] = field(default_factory=list)   # (true, predicted) ss8 per chain: secondary.ss_block
    confidence_no_templates: ConfidenceStats = field(default_factory=ConfidenceStats)   # model_no_templates
    ss_no_templates: list[tuple[str, str]] = field(default_factory=list)
    templates: dict | None = None    # the run's template database (path, fingerprint, K); None = no templates



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
    prediction_no_templates: object | None = None   # the same run without templates (runs trained with them)


def score_protein(task: _Task) -> dict:
    """One protein: rebuild the model's structure from its predicted distances (as ``infer_distmat.py``
    does), score it and the baselines, the confidence statistics and the figure contribution; write its
    PDBs when asked. Returns {"row", "figure", "confidence"} (small: no L x L matrix beyond the first
    proteins' heatmaps), and "ss" (the (true, predicted) ss8 pair, ``secondary.eval_pairs``)."""
    sample, dp = task.sample, task.prediction
    sp = structure_from_distances(dp, method=task.method)
    extra: dict = {}
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
    used = getattr(dp, "templates", None)
    if used is not None:              # the best template the model used (best first); none: no hit
        best = used[0] if used else {}
        row.update(n_templates=len(used), template_id=best.get("id", ""),
                   template_identity=best.get("identity"), template_coverage=best.get("coverage"))
    nt = task.prediction_no_templates
    if nt is not None:
        sp_nt = structure_from_distances(nt, method=task.method)
        nt_dist = np.asarray(nt.dist, dtype=np.float64)
        row["model_no_templates"] = score_prediction(nt_dist, np.asarray(nt.contact_prob, float), sp_nt.ca_xyz,
                                                     sample, true_dist=true, true_cb_dist=true_cb)
        row["model_no_templates"]["mean_confidence"] = sp_nt.mean_confidence
        perr_nt = getattr(nt, "pair_error_probs", None)
        if predicted_tm(perr_nt) is not None:
            row["model_no_templates"]["ptm"] = predicted_tm(perr_nt)
        conf_nt = ConfidenceStats()
        conf_nt.add_protein(task.index, sp_nt.confidence, lddt_ca_per_residue(sp_nt.ca_xyz, np.asarray(
            sample.ca, dtype=np.float64), sample.mask()), perr_nt, nt_dist, true, sample.mask())
        extra = {"confidence_no_templates": conf_nt, "ss_no_templates": eval_pairs(sample, nt)}
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
    return {"row": row, "figure": fig, "confidence": conf, "ss": eval_pairs(sample, dp), **extra}


class NothingToScore(ValueError):
    """No protein of the evaluated set can be scored (each one's reason in the message)."""


def skip_reason(sample: Sample, max_len: int | None) -> str | None:
    """Why the evaluation skips ``sample`` (longer than the run's ``max_len``, fewer than 2 residues with a
    Cα); None when it is scored."""
    n_present = int(sample.mask().sum())
    if max_len and len(sample.sequence) > max_len:
        return f"length {len(sample.sequence)} > model maximum {max_len}"
    if n_present < 2:
        return f"only {n_present} residue(s) with a Cα"
    return None


def nothing_to_score(skipped: dict[str, str], shown: int = 3) -> str:
    """One line: no protein can be scored, with the first ``shown`` proteins' reasons."""
    first = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"no protein can be scored ({len(skipped)} skipped: {first}{more})"


def evaluate_run(run: LoadedRun, samples: Sequence[Sample], *, method: str = DEFAULT_METHOD, batch_size: int = 1,
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
    with fewer than 2 residues with a Cα are skipped and listed (:func:`skip_reason`); :class:`NothingToScore`
    when every sample is. With ``pdb_dir``, the model's structure
    (confidence in the B-factor column) and the native Cα trace are written as <id>_model.pdb and
    <id>_native.pdb. The first failure (in completion order; a dead worker: ``pool.WorkerDied``) is
    raised, and the proteins no worker started are dropped.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    prior = prior if prior is not None else getattr(run, "prior", None)
    if prior is None:
        raise ValueError("the run has no separation prior (prior.json); retrain with a current train_distmat.py")
    ev = Evaluation(figures=figures or FigureData())
    max_len = getattr(run, "max_len", None)
    todo: list[Sample] = []
    for s in samples:
        why = skip_reason(s, max_len)
        if why is None:
            todo.append(s)
        else:
            ev.skipped[s.id] = why
    if samples and not todo:
        raise NothingToScore(nothing_to_score(ev.skipped))
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
        if "confidence_no_templates" in res:
            ev.confidence_no_templates.merge(res["confidence_no_templates"])
            ev.ss_no_templates.extend(res.get("ss_no_templates", []))
        bar.update(1)

    tmpl = getattr(run, "templates", None)
    if tmpl is not None:
        ev.templates = {**tmpl.db.record(), "k": tmpl.k_use}
        tmpl.hits([s.sequence for s in todo])     # one template search for every chain, before the batches

    def tasks():
        bs = max(1, batch_size)
        for start in range(0, len(todo), bs):
            chunk = todo[start:start + bs]
            seqs = [s.sequence for s in chunk]
            nts = run.predict(seqs, batch_size=len(chunk), use_templates=False) if tmpl is not None else None
            for k, dp in enumerate(run.predict(seqs, batch_size=len(chunk))):
                i = start + k
                yield _Task(i, todo[i], dp, prior, None if nb_of is None else nb_of[todo[i].id], method, params,
                            None if pdb_dir is None else (Path(pdb_dir), stems[i], str(run_dir), model_name),
                            prediction_no_templates=None if nts is None else nts[k])

    pool = WorkerPool(score_protein, workers)
    held: dict[int, dict] = {}   # finished out of order, waiting for an earlier protein
    nxt = 0

    def take(wait_until: int | None) -> None:
        nonlocal nxt
        for i, res in pool.results(wait_until=wait_until):
            if isinstance(res, BaseException):
                raise res
            held[i] = res
        while nxt in held:
            consume(held.pop(nxt))
            nxt += 1

    try:
        for task in tasks():
            pool.submit(task.index, task)
            take(None)
            while pool.in_flight + len(held) > 2 * workers:   # at most 2 x workers predictions held
                take(pool.in_flight - 1)
        take(0)
    except BaseException:
        pool.cancel_waiting()   # the cancel path: what no worker started is dropped
        pool.close(wait=False)
        raise
    finally:
        bar.close()
    pool.close()
    return ev
