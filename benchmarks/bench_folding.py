"""Distogram folding vs single-distance refinement on the same predictions, and on noisy natives.

    python benchmarks/bench_folding.py --run_dir runs/ref --data build/full/test.json.gz   # all test chains
    python benchmarks/bench_folding.py --quick                                             # 20 chains, smoke

(a) Model predictions: every chain of ``--data`` (or ``--n_chains`` drawn with ``--seed``) is predicted once by
    the run in ``--run_dir`` (cached as .npz under ``--pred_cache``, so a rerun or an interrupted run does
    not predict again) and rebuilt by ``predict.structure_from_distances`` with each method (``refine``:
    MDS + stress on the regressed distance; ``distogram``: ``proteinmtp.folding``), hand chosen the same way.
    TM-score, RMSD, lDDT-Cα and GDT-TS (``proteinmtp.metrics``, residues with a native Cα) per chain; the
    per-chain paired differences (distogram − refine) with a bootstrap 95 % interval (resampling chains);
    seconds per chain of each reconstruction.
(b) Noisy natives (``reconstruction_study``): native Cα distances + Gaussian noise; refine fits the noisy
    distance, distogram folds a distogram synthesised from it (``reconstruction_study.synthetic_distogram``).
(c) Speed at L = 300 on one thread: refine and distogram on the same prediction (a chain of ≥ 300 residues
    cropped to 300, else the longest), interleaved, median of ``--repeats``; the ratio is the target (≤ 2).
Writes benchmarks/results/folding.json (or ``--output``) and prints the tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")       # one core: the speed target is a one-thread ratio
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reconstruction_study as RS  # noqa: E402

from proteinmtp import metrics as M  # noqa: E402
from proteinmtp.fileio import atomic_open, write_json  # noqa: E402
from proteinmtp.geometry import mirror  # noqa: E402

METHODS = ("refine", "distogram")
METRICS = ("tm_score", "rmsd", "lddt", "gdt_ts")


# ----------------------------------------------------------------------------- (a) predictions

def cached_predictions(run_dir: str, samples: list, cache: Path, device: str = "cpu") -> list:
    """DistancePrediction of every sample: read from ``cache``/<index>_<id>.npz when there (and for the
    same sequence), else predicted by the run and written there (atomically). Probabilities are stored as
    float16 and renormalised on reading."""
    from proteinmtp.fasta import record_stems
    from proteinmtp.model import DistancePrediction

    cache.mkdir(parents=True, exist_ok=True)
    stems = record_stems([s.id for s in samples])
    out: list = [None] * len(samples)
    todo = []
    for k, (s, stem) in enumerate(zip(samples, stems)):
        f = cache / f"{stem}.npz"
        if f.is_file():
            with np.load(f) as z:
                if str(z["sequence"]) == s.sequence:
                    p = z["distogram_probs"].astype(np.float64)
                    out[k] = DistancePrediction(
                        sequence=s.sequence, dist=z["dist"].astype(np.float64), contact_prob=z["contact_prob"],
                        pair_confidence=z["pair_confidence"].astype(np.float64),
                        residue_confidence=z["residue_confidence"], distogram_probs=p / p.sum(-1, keepdims=True),
                        bin_edges=z["bin_edges"].astype(np.float64))
                    continue
        todo.append(k)
    if todo:
        import torch

        from proteinmtp.model import load_run

        torch.set_num_threads(1)
        run = load_run(run_dir, device=device)
        for k in tqdm(todo, desc="predict", unit="chain"):
            [dp] = run.predict([samples[k].sequence])
            with atomic_open(cache / f"{stems[k]}.npz", "wb") as fh:
                np.savez_compressed(fh, sequence=np.array(dp.sequence), dist=dp.dist.astype(np.float32),
                                    contact_prob=dp.contact_prob.astype(np.float32),
                                    pair_confidence=dp.pair_confidence.astype(np.float32),
                                    residue_confidence=dp.residue_confidence.astype(np.float32),
                                    distogram_probs=dp.distogram_probs.astype(np.float16),
                                    bin_edges=dp.bin_edges.astype(np.float32))
            out[k] = dp
    return out


def score_chain(xyz: np.ndarray, sample) -> dict:
    mask = sample.mask()
    ca = np.asarray(sample.ca, dtype=np.float64)[mask]
    x = np.asarray(xyz, dtype=np.float64)[mask]
    s = M.structure_metrics(x, ca)
    out = {k: float(s[k]) for k in METRICS}
    out["hand_correct"] = float(out["tm_score"] >= M.tm_score(mirror(x), ca))
    return out


def bootstrap_ci(diff: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``diff`` over ``n_boot`` resamples of its entries."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_table(rows: list[dict], methods: tuple[str, ...], n_boot: int, seed: int) -> dict:
    """Means per method, and the paired difference methods[1] − methods[0] with its bootstrap interval."""
    a, b = methods
    out: dict = {m: {} for m in methods} | {"difference": {}}
    for k in (*METRICS, "seconds", "hand_correct"):
        va = np.array([r[a][k] for r in rows], dtype=np.float64)
        vb = np.array([r[b][k] for r in rows], dtype=np.float64)
        out[a][k], out[b][k] = float(va.mean()), float(vb.mean())
        if k in METRICS:
            diff = vb - va
            lo, hi = bootstrap_ci(diff, n_boot, seed)
            better = diff < 0 if k == "rmsd" else diff > 0
            out["difference"][k] = {"mean": float(diff.mean()), "ci95": [lo, hi],
                                    f"fraction_{b}_better": float(better.mean())}
    return out


def run_predictions(a, samples: list) -> tuple[dict, list[dict], list]:
    from proteinmtp.predict import structure_from_distances

    preds = cached_predictions(a.run_dir, samples, Path(a.pred_cache), a.device)
    rows = []
    for s, dp in tqdm(list(zip(samples, preds)), desc="fold", unit="chain"):
        row = {"id": s.id, "L": len(s.sequence), "n_present": int(s.mask().sum())}
        for m in METHODS:
            sp = structure_from_distances(dp, method=m)
            row[m] = score_chain(sp.ca_xyz, s) | {"seconds": float(sp.info["seconds"])}
            if m == "distogram":
                row[m]["start"] = sp.info.get("start")
        rows.append(row)
    return paired_table(rows, METHODS, a.n_boot, a.seed), rows, preds


# ----------------------------------------------------------------------------- (c) speed

def speed_at(preds: list, L: int, repeats: int) -> dict:
    """Median seconds of refine and distogram reconstruction of one prediction cropped to L residues."""
    from proteinmtp.model import DistancePrediction
    from proteinmtp.predict import structure_from_distances

    dp = max(preds, key=lambda p: (len(p.sequence) >= L, -abs(len(p.sequence) - L) if len(p.sequence) < L else 0))
    n = min(L, len(dp.sequence))
    crop = DistancePrediction(sequence=dp.sequence[:n], dist=dp.dist[:n, :n], contact_prob=dp.contact_prob[:n, :n],
                              pair_confidence=dp.pair_confidence[:n, :n], residue_confidence=dp.residue_confidence[:n],
                              distogram_probs=dp.distogram_probs[:n, :n], bin_edges=dp.bin_edges)
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(repeats):
        for m in METHODS:
            t0 = time.perf_counter()
            structure_from_distances(crop, method=m)
            times[m].append(time.perf_counter() - t0)
    med = {m: float(np.median(v)) for m, v in times.items()}
    return {"L": n, "threads": 1, "repeats": repeats, "seconds": med, "all_seconds": times,
            "ratio_distogram_over_refine": med["distogram"] / med["refine"]}


# ----------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--run_dir", default="runs/ref", help="trained run directory (or a checkpoint-<step>/)")
    ap.add_argument("--data", default="build/full/test.json.gz", help="dataset split to predict (.json[.gz])")
    ap.add_argument("--n_chains", type=int, default=0, help="chains drawn from --data with --seed (0 = all)")
    ap.add_argument("--pred_cache", default="build/folding_predictions",
                    help="folder caching each chain's prediction (.npz); reused when present")
    ap.add_argument("--device", default="cpu", help="torch device for the forward passes")
    ap.add_argument("--structures", default="../shared/data/structures/db5.5",
                    help="(b) folder of native structures for the noisy-native comparison")
    ap.add_argument("--study_chains", type=int, default=20, help="(b) number of native chains (0 = skip (b))")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="(b) noise σ, Å")
    ap.add_argument("--speed_len", type=int, default=300, help="(c) chain length of the timing, residues")
    ap.add_argument("--repeats", type=int, default=5, help="(c) timing repeats (median)")
    ap.add_argument("--n_boot", type=int, default=2000, help="bootstrap resamples of the paired differences")
    ap.add_argument("--seed", type=int, default=0, help="seed of the chain draw, the noise and the bootstrap")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 chains, 5 natives, 2 timing repeats")
    ap.add_argument("--output", default="benchmarks/results/folding.json", help="JSON output")
    a = ap.parse_args()
    if a.quick:
        a.n_chains, a.study_chains, a.repeats = a.n_chains or 20, min(a.study_chains, 5), min(a.repeats, 2)
    from proteinmtp.dataio import open_dataset

    t_start = time.perf_counter()
    if not Path(a.data).is_file():
        sys.exit(f"error: {a.data}: no such dataset (pass --data)")
    samples = [s for s in open_dataset(a.data).samples if s.mask().sum() >= 2]
    from proteinmtp.runcli import run_max_len

    max_len = run_max_len(a.run_dir)
    skipped = [s.id for s in samples if max_len and len(s.sequence) > max_len]
    samples = [s for s in samples if not (max_len and len(s.sequence) > max_len)]
    if a.n_chains and a.n_chains < len(samples):
        idx = np.sort(np.random.default_rng(a.seed).choice(len(samples), a.n_chains, replace=False))
        samples = [samples[i] for i in idx]
    print(f"(a) {len(samples)} chains of {a.data} (lengths {min(len(s.sequence) for s in samples)}–"
          f"{max(len(s.sequence) for s in samples)}; {len(skipped)} longer than the run's {max_len} skipped)")
    table, rows, preds = run_predictions(a, samples)
    speed = speed_at(preds, a.speed_len, a.repeats)
    study = None
    if a.study_chains:
        study = RS.compare(Path(a.structures), a.study_chains, a.sigmas, ("refine", "distogram"), a.seed)
    result = {
        "command": "python benchmarks/bench_folding.py " + " ".join(sys.argv[1:]),
        "config": {k: v for k, v in vars(a).items() if k not in ("output", "pred_cache", "device")},
        "threads": 1, "n_chains": len(rows), "skipped_too_long": skipped,
        "predictions": table, "speed": speed, "noisy_natives": study,
        "per_chain": rows, "total_seconds": time.perf_counter() - t_start,
    }
    write_json(Path(a.output), result)

    print(f"\n(a) model predictions, {len(rows)} chains; mean per chain, paired difference distogram − refine "
          f"with bootstrap 95 % interval ({a.n_boot} resamples)")
    print(f"{'metric':>10} {'refine':>9} {'distogram':>10} {'diff':>8} {'95% CI':>20} {'dg better':>9}")
    for k in METRICS:
        d = table["difference"][k]
        print(f"{k:>10} {table['refine'][k]:9.4f} {table['distogram'][k]:10.4f} {d['mean']:+8.4f} "
              f"[{d['ci95'][0]:+8.4f}, {d['ci95'][1]:+8.4f}] {d['fraction_distogram_better']:9.2f}")
    print(f"{'s/chain':>10} {table['refine']['seconds']:9.3f} {table['distogram']['seconds']:10.3f}   (1 thread)")
    print(f"\n(c) L = {speed['L']}, 1 thread, median of {a.repeats}: refine {speed['seconds']['refine']:.3f} s, "
          f"distogram {speed['seconds']['distogram']:.3f} s, ratio {speed['ratio_distogram_over_refine']:.2f}")
    if study is not None:
        RS.print_table(study["table"])
    print(f"total {result['total_seconds']:.0f} s -> {a.output}")


if __name__ == "__main__":
    main()
