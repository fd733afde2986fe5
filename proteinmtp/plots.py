"""Figures (matplotlib, Agg backend): distance heatmaps, error distributions, metrics vs length, training curves.

Every function takes plain arrays (distances in Å) and writes one PNG atomically. Figures have a fixed
size in pixels (``figsize * dpi``; no tight bounding box), so a caller knows what it gets.

    from proteinmtp import plots
    plots.distance_heatmaps([("1ABC:A", pred_dist, true_dist)], "visualizations/heatmaps.png")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from proteinmtp.constants import SEPARATION_RANGES  # noqa: E402
from proteinmtp.fileio import atomic_open  # noqa: E402

DPI = 100
RANGE_COLORS = {"local": "#1b9e77", "short": "#d95f02", "medium": "#7570b3", "long": "#e7298a"}


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Save ``fig`` as PNG atomically (tmp file + os.replace) and close it."""
    path = Path(path)
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def separation_range_of(sep: np.ndarray) -> np.ndarray:
    """Name of the separation range ("local"/"short"/"medium"/"long", "" for 0) of each |i - j| in ``sep``."""
    out = np.full(sep.shape, "", dtype=object)
    for name, (lo, hi) in SEPARATION_RANGES.items():
        sel = sep >= lo if hi is None else (sep >= lo) & (sep <= hi)
        out[sel] = name
    return out


def distance_heatmaps(items: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path,
                      max_proteins: int = 4) -> Path:
    """Predicted (left) and true (right) distance matrices side by side, one row per protein.

    items: (name, pred_dist [L, L] Å, true_dist [L, L] Å with NaN where a Cα is missing). Both panels of a
    row share one colour scale (Å); missing pairs are drawn grey.
    """
    items = list(items)[:max_proteins]
    if not items:
        raise ValueError("distance_heatmaps: no proteins to draw")
    n = len(items)
    fig, axes = plt.subplots(n, 2, figsize=(9, 4.2 * n), squeeze=False, layout="constrained")
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="0.85")
    for row, (name, pred, true) in enumerate(items):
        vmax = float(np.nanmax(np.concatenate([np.ravel(pred), np.ravel(true)])))
        for col, (mat, label) in enumerate(((pred, "predicted"), (true, "true"))):
            ax = axes[row, col]
            im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{name} — {label} (L={len(mat)})", fontsize=10)
            ax.set_xlabel("residue j")
            ax.set_ylabel("residue i")
        fig.colorbar(im, ax=axes[row, :], label="Cα–Cα distance (Å)", shrink=0.9)
    return _save(fig, path)


def error_histogram(errors: Mapping[str, np.ndarray], path: str | Path, bins: int = 60) -> Path:
    """Histogram of signed distance errors (predicted − true, Å) over all evaluated pairs, one curve per method.

    errors: {"model": err [N] Å, "prior": err [M] Å, ...}; NaN entries are ignored.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    finite = [np.asarray(e, float)[np.isfinite(e)] for e in errors.values()]
    allv = np.concatenate(finite) if finite else np.zeros(0)
    lim = float(np.percentile(np.abs(allv), 99.5)) if allv.size else 1.0
    edges = np.linspace(-lim, lim, bins + 1)
    for (name, _), e in zip(errors.items(), finite):
        if e.size == 0:
            continue
        ax.hist(e, bins=edges, histtype="step", linewidth=1.6, density=True,
                label=f"{name}: mean |err| {np.mean(np.abs(e)):.2f} Å over {e.size} pairs")
    ax.axvline(0.0, color="k", linewidth=0.8)
    ax.set_xlabel("predicted − true distance (Å)")
    ax.set_ylabel("density")
    ax.set_title("Distance error over evaluated pairs (pooled over proteins)")
    ax.legend(fontsize=9)
    return _save(fig, path)


def error_by_separation(mae_by_sep: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Mean absolute distance error (Å) against sequence separation |i − j|, one line per method.

    mae_by_sep: {"model": mae [S], "prior": mae [S]} where index s is the separation (index 0 unused;
    NaN where no pair had that separation). Range boundaries (short/medium/long) are marked.
    """
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for name, mae in mae_by_sep.items():
        mae = np.asarray(mae, float)
        sep = np.arange(len(mae))
        ok = np.isfinite(mae) & (sep > 0)
        ax.plot(sep[ok], mae[ok], label=name, linewidth=1.4)
    for rname, (lo, _) in SEPARATION_RANGES.items():
        if lo > 1:
            ax.axvline(lo, color="0.6", linestyle=":", linewidth=0.9)
            ax.text(lo, 1.0, f" {rname}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    ax.set_xscale("log")
    ticks = [1, 2, 6, 12, 24, 50, 100, 200, 500, 1000]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlim(left=1)
    ax.set_xlabel("sequence separation |i − j| (log scale)")
    ax.set_ylabel("mean absolute error (Å)")
    ax.set_title("Distance error by sequence separation")
    ax.legend()
    return _save(fig, path)


def scatter_by_range(pred: np.ndarray, true: np.ndarray, sep: np.ndarray, path: str | Path,
                     max_points: int = 20000, seed: int = 0) -> Path:
    """Predicted vs true distance (Å) for pairs, coloured by separation range (local/short/medium/long).

    pred, true, sep: [N] (already restricted to evaluated pairs i < j); at most ``max_points`` drawn
    (uniform random subset, fixed seed).
    """
    pred, true, sep = (np.asarray(a).ravel() for a in (pred, true, sep))
    ok = np.isfinite(pred) & np.isfinite(true) & (sep > 0)
    pred, true, sep = pred[ok], true[ok], sep[ok]
    if pred.size > max_points:
        idx = np.random.default_rng(seed).choice(pred.size, max_points, replace=False)
        pred, true, sep = pred[idx], true[idx], sep[idx]
    names = separation_range_of(sep)
    fig, ax = plt.subplots(figsize=(6, 6), layout="constrained")
    hi = float(max(np.max(pred, initial=1.0), np.max(true, initial=1.0)))
    for rname in SEPARATION_RANGES:
        sel = names == rname
        if sel.any():
            ax.scatter(true[sel], pred[sel], s=3, alpha=0.35, color=RANGE_COLORS[rname],
                       label=f"{rname} (n={int(sel.sum())})", rasterized=True)
    ax.plot([0, hi], [0, hi], color="k", linewidth=0.8)
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("true Cα–Cα distance (Å)")
    ax.set_ylabel("predicted distance (Å)")
    ax.set_title("Predicted vs true distance")
    ax.legend(markerscale=4, fontsize=9)
    return _save(fig, path)


def metrics_vs_length(lengths: np.ndarray, metrics: Mapping[str, Mapping[str, np.ndarray]],
                      path: str | Path) -> Path:
    """One panel per metric: per-protein value against chain length, one marker series per method.

    lengths: [P] residues; metrics: {"mae": {"model": [P], "prior": [P]}, "tm_score": {...}, ...}.
    """
    names = list(metrics)
    if not names:
        raise ValueError("metrics_vs_length: no metrics to draw")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False, layout="constrained")
    lengths = np.asarray(lengths, float)
    markers = "os^vD"
    for ax, mname in zip(axes[0], names):
        for k, (method, vals) in enumerate(metrics[mname].items()):
            ax.scatter(lengths, np.asarray(vals, float), s=18, alpha=0.75, marker=markers[k % len(markers)],
                       label=method)
        ax.set_xlabel("chain length (residues)")
        ax.set_ylabel(mname)
        ax.set_title(f"{mname} vs length")
        ax.legend(fontsize=8)
    return _save(fig, path)


def confidence_calibration(conf: Mapping, ptm: np.ndarray, tm: np.ndarray, path: str | Path) -> Path:
    """Three panels from the ``confidence`` block of eval_results.json (``confidence.ConfidenceStats.summary``):
    binned per-residue confidence vs mean true per-residue lDDT-Cα, the pair error classes' reliability
    (largest class probability vs how often that class is the true one), and pTM vs true TM per protein."""
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.2), layout="constrained")

    def f(v):
        return np.nan if v is None else float(v)

    def rel(ax, block, scale, xlabel, ylabel, title):
        mc = np.array([f(v) for v in block["mean_confidence"]]) / scale
        mo = np.array([f(v) for v in block["mean_outcome"]])
        n = np.asarray(block["count"], float)
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=1, linestyle="--", label="perfect calibration")
        ok = n > 0
        ax.plot(mc[ok], mo[ok], "o-", label="binned")
        for x, y, c in zip(mc[ok], mo[ok], n[ok]):
            ax.annotate(f"{int(c)}", (x, y), fontsize=6, xytext=(2, -8), textcoords="offset points")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left")

    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    rel(axes[0], conf["residue_reliability"], 100.0, "per-residue confidence / 100 (B-factor)",
        "mean true per-residue lDDT-Cα",
        f"Residue confidence: Pearson {fmt(conf.get('residue_lddt_pearson'))}, "
        f"Spearman {fmt(conf.get('residue_lddt_spearman'))}")
    rel(axes[1], conf["pair_reliability"], 1.0, "largest pair error-class probability",
        "fraction where that class is the true one", f"Pair error classes: ECE {fmt(conf.get('pair_ece'))}")
    ax = axes[2]
    ptm, tm = np.asarray(ptm, float), np.asarray(tm, float)
    ok = np.isfinite(ptm) & np.isfinite(tm)
    if ok.any():
        ax.scatter(ptm[ok], tm[ok], s=12, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=1, linestyle="--")
    else:
        ax.text(0.5, 0.5, "no pTM (the head predicts no pair error classes)", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted TM-score (pTM)")
    ax.set_ylabel("true TM-score (hand chosen without the native)")
    ax.set_title(f"pTM vs TM: Pearson {fmt(conf.get('ptm_pearson'))}", fontsize=10)
    return _save(fig, path)


def contact_precision(blocks: Mapping[str, Mapping], path: str | Path) -> Path:
    """Top-L/5 and top-L contact precision per separation range and method, against Cα–Cα < 8 Å (solid)
    and Cβ–Cβ < 8 Å, Cα for glycine (hatched). ``blocks``: {method: eval_results block}."""
    ranges = ("short", "medium", "long")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    methods = [m for m, b in blocks.items() if b]
    width = 0.8 / max(2 * len(methods), 1)
    for ax, k in zip(axes, ("L5", "L")):
        for mi, m in enumerate(methods):
            for di, (suffix, hatch, lab) in enumerate((("", None, "Cα"), ("_cb", "//", "Cβ"))):
                vals = [blocks[m].get(f"precision_{k}_{r}{suffix}") for r in ranges]
                x = np.arange(len(ranges)) + (2 * mi + di) * width - 0.4 + width / 2
                ax.bar(x, [np.nan if v is None else v for v in vals], width, hatch=hatch,
                       color=f"C{mi}", alpha=0.9 if di == 0 else 0.55, label=f"{m} ({lab} truth)")
        ax.set_xticks(np.arange(len(ranges)), ranges)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"precision of the top {k.replace('L5', 'L/5')} pairs")
        ax.set_title(f"Contacts (< 8 Å), top {k.replace('L5', 'L/5')}: Cα vs Cβ truth", fontsize=10)
    axes[1].legend(fontsize=7, ncol=2)
    return _save(fig, path)


def read_train_log(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines training log; a torn last line (training still writing) is skipped."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def training_curves(rows: Sequence[Mapping], path: str | Path) -> Path:
    """Training loss, learning rate and validation metrics (``eval_*`` keys) against step.

    rows: train_log.jsonl rows ({"step", "loss", "learning_rate"} per logged step; {"step", "eval_mae", ...}
    per evaluation). Panels: loss (log scale), learning rate, eval_mae (Å), every other numeric eval_* key.
    """
    train = [r for r in rows if "loss" in r and "step" in r]
    evals = [r for r in rows if "eval_mae" in r and "step" in r]
    eval_keys = sorted({k for r in evals for k, v in r.items()
                        if k.startswith("eval_") and k != "eval_mae" and isinstance(v, (int, float))
                        and not isinstance(v, bool) and k not in ("eval_runtime", "eval_steps_per_second",
                                                                  "eval_samples_per_second")})
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    ax = axes[0]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], linewidth=1.2, label="train loss")
        if all(float(r["loss"]) > 0 for r in train):
            ax.set_yscale("log")
    if evals and any("eval_loss" in r for r in evals):
        ev = [r for r in evals if "eval_loss" in r]
        ax.plot([r["step"] for r in ev], [r["eval_loss"] for r in ev], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    if train or evals:
        ax.legend(fontsize=8)
    ax = axes[1]
    lr = [r for r in train if "learning_rate" in r]
    if lr:
        ax.plot([r["step"] for r in lr], [r["learning_rate"] for r in lr], linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate")
    ax = axes[2]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_mae"] for r in evals], "o-", label="eval_mae (Å)")
        for k in eval_keys:
            if k == "eval_loss" or not k.startswith("eval_mae"):
                continue
            ev = [r for r in evals if k in r]
            ax.plot([r["step"] for r in ev], [r[k] for r in ev], ".--", linewidth=1, label=k)
    else:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("validation MAE (Å)")
    ax.set_title("Validation")
    if evals:
        ax.legend(fontsize=8)
    return _save(fig, path)
