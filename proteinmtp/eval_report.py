"""The reports of an evaluation: eval_results.json (means over proteins with per-range and per-length
breakdowns), the per-protein CSV, the console table and the figures."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from proteinmtp.constants import SEPARATION_RANGES
from proteinmtp.eval_scoring import LENGTH_BINS, METHODS, MIRROR_KEY, NEIGHBOUR
from proteinmtp.experiments import replace_written
from proteinmtp.fasta import record_stems
from proteinmtp.fileio import atomic_write, write_json
from proteinmtp.metric_registry import keys, ranged
from proteinmtp.rundir import TRAIN_JSONL
from proteinmtp.secondary import ss_block
from proteinmtp.viewer import write_viewer_html

if TYPE_CHECKING:  # pragma: no cover
    from proteinmtp.evaluation import Evaluation

NO_TEMPLATES = "model_no_templates"     # a run trained with templates, predicting without them
TABLE_ORDER = ("model", NO_TEMPLATES, "prior", NEIGHBOUR, "oracle")
TEMPLATE_COLUMNS = ("n_templates", "template_id", "template_identity", "template_coverage")
# Keys of the model block's confidence block: docs/contracts.md#evaluation-output-eval_resultsjson.
CONFIDENCE_KEYS = ("residue_lddt_pearson", "residue_lddt_spearman", "pair_ece", "ptm_pearson")
CONTACT_DEFINITIONS = {
    "precision_*": "true contact: Ca-Ca distance < 8 A",
    "precision_*_cb": "true contact: Cb-Cb distance < 8 A (Ca for glycine; CASP), over the residues with a Cb "
                      "(L = their number), for chains where at least half the residues with a Ca have one",
    "ranking": "the same scores rank the pairs for both definitions: the model's P(Ca-Ca < 8 A), the "
               "baselines' Ca distances (no method predicts Cb)",
}
RESULTS_FILE = "eval_results.json"
CSV_FILE = "eval_per_protein.csv"


def _nanmean(vals: Sequence[float]) -> float | None:
    a = np.asarray([v for v in vals if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def _methods(rows: Sequence[dict]) -> tuple[str, ...]:
    """The methods the rows hold, in table order (the neighbour only when it was evaluated)."""
    return tuple(m for m in TABLE_ORDER if m in METHODS or (rows and all(m in r for r in rows)))


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
        block = _mean_block(rows, method) if rows else {k: None for k in keys("required")} | {"n_proteins": 0}
        by_range = {}
        for r in SEPARATION_RANGES:
            sub = {m.name: block[f"{m.name}_{r}"] for m in ranged(r) if f"{m.name}_{r}" in block}
            sub.update({f"{m.name}_cb": block[f"{m.name}_{r}_cb"] for m in ranged(r) if f"{m.name}_{r}_cb" in block})
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
        if method in ("model", NO_TEMPLATES):
            col = lambda k, m=method: np.array([np.nan if r[m].get(k) is None else r[m][k]  # noqa: E731
                                                for r in rows], dtype=np.float64)
            stats = ev.confidence if method == "model" else ev.confidence_no_templates
            block["confidence"] = stats.summary(col("ptm"), col("tm_score"), col(MIRROR_KEY))
        out[method] = block
    if NEIGHBOUR not in methods:
        out[NEIGHBOUR] = None
    out["neighbour_search"] = ev.neighbour_info or {"status": "skipped", "reason": "no neighbours were given"}
    if out.get("model") is not None:
        out["model"]["ss"] = ss_block(ev.ss)   # q3, q8, q3_majority; None without SS head or labels
    if out.get(NO_TEMPLATES) is not None:
        out[NO_TEMPLATES]["ss"] = ss_block(ev.ss_no_templates)
    if ev.templates is not None:               # the database and how many chains found a template in it
        hit = [r for r in rows if r.get("n_templates")]
        ids = [r["template_identity"] for r in hit if r.get("template_identity") is not None]
        out["templates"] = {**ev.templates, "n_with_hit": len(hit), "n_without_hit": len(rows) - len(hit),
                            "mean_best_identity": float(np.mean(ids)) if ids else None}
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
    cols: list[tuple[str, str]] = []           # (method, metric): a method's name may hold "_"
    for method in methods:
        for r in ev.rows:
            cols.extend((method, k) for k in r[method] if (method, k) not in cols)
    fixed = ["id", "length", "n_present", "length_bin"] + (["neighbour_id"] if NEIGHBOUR in methods else [])
    fixed += [c for c in TEMPLATE_COLUMNS if ev.rows and all(c in r for r in ev.rows)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*fixed, *(f"{m}_{k}" for m, k in cols)])
    fmt = lambda v: "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else (  # noqa: E731
        f"{v:.6g}" if isinstance(v, float) else v)
    for r in ev.rows:
        vals = []
        for method, key in cols:
            v = r[method].get(key)
            vals.append("" if v is None or not math.isfinite(v) else f"{v:.6g}")
        w.writerow([*(fmt(r[c]) for c in fixed), *vals])
    return buf.getvalue()


def write_figures(ev: Evaluation, vis_dir: str | Path, run_dir: str | Path | None = None) -> list[Path]:
    """Draw the evaluation figures (and training curves when ``run_dir`` has train_log.jsonl) into vis_dir."""
    from proteinmtp import plots  # matplotlib: only when figures are drawn

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


def _comparison(results: dict, ref: str, metrics: tuple[str, ...]) -> str | None:
    """One line: the headline metrics on which the model is better than ``ref`` (distance errors and RMSD:
    lower; the rest: higher), and those on which it is not."""
    model, other = results.get("model") or {}, results.get(ref) or {}
    both = [k for k in metrics if model.get(k) is not None and other.get(k) is not None]
    if not both:
        return None
    lower = lambda k: k.startswith(("mae", "rmsd"))  # noqa: E731
    better = [k for k in both if (model[k] < other[k]) == lower(k) and model[k] != other[k]]
    worse = [k for k in both if k not in better]
    return (f"model vs {ref}: better on {len(better)}/{len(both)}" + (f" ({', '.join(better)})" if better else "")
            + (f"; not on {', '.join(worse)}" if worse else ""))


def format_summary(results: dict) -> str:
    """A small text table of the headline metrics for model / prior / neighbour / oracle."""
    headline = keys("headline")
    shown = [m for m in TABLE_ORDER if results.get(m)]
    wd = max([10, *(len(m) + 1 for m in shown)])
    lines = [f"{'':{wd}}" + "".join(f"{k:>21}" for k in headline)]
    for m in shown:
        vals = [results[m].get(k) for k in headline]
        lines.append(f"{m:{wd}}" + "".join(f"{v:21.3f}" if v is not None else f"{'n/a':>21}" for v in vals))
    lines.append("contacts: precision_* against Ca-Ca < 8 A, precision_*_cb against Cb-Cb < 8 A (Ca for Gly); "
                 "both ranked by the predicted Ca distances/probabilities")
    lines += [line for line in (_comparison(results, ref, headline) for ref in ("prior", NEIGHBOUR)) if line]
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
    tm = results.get("templates")
    if tm:
        ident = tm.get("mean_best_identity")
        lines.append(f"templates: K={tm.get('k')} from {tm.get('path')}; {tm.get('n_with_hit', 0)} chain(s) with a "
                     f"template (mean best identity {'n/a' if ident is None else f'{ident:.3f}'}), "
                     f"{tm.get('n_without_hit', 0)} without a hit (predicted on the no-template path)")
        conf_nt = (results.get(NO_TEMPLATES) or {}).get("confidence") or {}
        v = conf_nt.get("residue_lddt_spearman")
        lines.append(f"model_no_templates: per-residue confidence vs true lDDT-Ca Spearman "
                     f"{'n/a' if v is None else f'{v:.3f}'}")
    ss = (results.get("model") or {}).get("ss")
    if ss:
        lines.append(f"secondary structure (DSSP, held-out): Q3 {ss['q3']:.3f} (majority class "
                     f"{ss['q3_majority']:.3f}), Q8 {ss['q8']:.3f} over {ss['n_residues']} residues")
    lines.append(f"n_proteins = {results['n_proteins']}" +
                 (f" (skipped {len(results['skipped'])})" if results.get("skipped") else ""))
    return "\n".join(lines)


