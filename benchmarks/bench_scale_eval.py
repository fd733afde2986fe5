"""Evaluation memory and time vs number of proteins: ``evaluate_distmat_model.py`` (model mode, figures on,
no neighbour search) on the first N chains of a split, N = 25, 50, 100, 200, one fresh process each.

Peak RSS: the largest resident set of any process of the evaluation (``ru_maxrss`` of its children,
read in a fresh intermediate process so runs do not mask each other) and, with psutil, the peak of the
sum over the evaluation's process tree (main + workers) sampled every 0.1 s. Seconds: wall clock of
the whole command (model load included). The model is ``--model_path``, or (default) a tiny
random-initialised backbone (``python -m proteinmtp.tiny``) trained 5 steps on the first chains of
``--train_data``: memory and time of the evaluation, not of a good model. The N proteins are the first
``--distinct`` chains of 30–``--max_len`` residues of the split (in split order) repeated under new ids,
so every N has the same longest chain and the same per-protein work: what changes is only the number of
proteins (peak RSS is otherwise set by the longest chain's forward pass and search). Growth per protein
is the least-squares slope of peak RSS over N.

    python benchmarks/bench_scale_eval.py [--quick] [--out benchmarks/results/scale_eval.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_RUSAGE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
           "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def measure(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd``; {"seconds", "peak_rss_mb_max_process", "peak_rss_mb_tree" (None without psutil), "rc"}."""
    try:
        import psutil
    except ImportError:  # pragma: no cover
        psutil = None
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        p = subprocess.Popen([sys.executable, "-c", _RUSAGE, *cmd], stdout=subprocess.PIPE, stderr=fh, text=True,
                             env=env, cwd=REPO)
        peak = 0
        while p.poll() is None:
            if psutil is not None:
                try:
                    root = psutil.Process(p.pid)
                    procs = [root, *root.children(recursive=True)]
                    tot = 0
                    for q in procs:
                        try:
                            tot += q.memory_info().rss
                        except psutil.Error:
                            pass
                    peak = max(peak, tot)
                except psutil.Error:
                    pass
            time.sleep(0.1)
        out = p.stdout.read() if p.stdout else ""
    secs = time.perf_counter() - t0
    kb = [int(line.split()[1]) for line in out.splitlines() if line.startswith("MAXRSS_KB")]
    return {"seconds": secs, "peak_rss_mb_max_process": kb[-1] / 1024 if kb else None,
            "peak_rss_mb_tree": peak / 2**20 if psutil is not None else None, "rc": p.returncode}


def tiny_run(work: Path, train_data: str) -> Path:
    """A tiny backbone trained 5 steps on the first 64 chains of ``train_data`` (reused when present)."""
    import os

    from proteinmtp.dataio import open_dataset
    from proteinmtp.dataset import save_dataset

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = work / "tiny_run"
    if (run / "head.safetensors").is_file():
        return run
    work.mkdir(parents=True, exist_ok=True)
    data = open_dataset(train_data)
    save_dataset(work / "train_small.json", list(data.samples)[:64], data.global_stats, {})
    subprocess.run([sys.executable, "-m", "proteinmtp.tiny", str(work / "backbone")], check=True, cwd=REPO, env=env)
    subprocess.run([sys.executable, str(REPO / "train_distmat.py"), "--train_data", str(work / "train_small.json"),
                    "--model_name", str(work / "backbone"), "--finetune", "full", "--output_dir", str(run),
                    "--max_steps", "5", "--logging_steps", "1", "--save_steps", "5", "--eval_steps", "1000",
                    "--max_seq_len", "128", "--max_eval_len", "512", "--warmup_steps", "1", "--templates", "0", "--no_tqdm"],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL, env=env)
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="build/full/test.json.gz", help="split whose chains are evaluated")
    ap.add_argument("--train_data", default="build/full/train.json.gz",
                    help="split the tiny model trains on (ignored with --model_path)")
    ap.add_argument("--model_path", default=None, help="run directory to evaluate (default: a tiny model, see above)")
    ap.add_argument("--counts", default="25,50,100,200", help="numbers of proteins, comma-separated")
    ap.add_argument("--distinct", type=int, default=25, help="distinct chains, repeated to make up each count")
    ap.add_argument("--max_len", type=int, default=300, help="longest chain taken (residues)")
    ap.add_argument("--workers", default="1", help="--workers values of the evaluation, comma-separated")
    ap.add_argument("--code_dir", default=str(REPO),
                    help="repository whose evaluate_distmat_model.py is measured (e.g. an older checkout)")
    ap.add_argument("--work_dir", default="build/bench_scale_eval", help="scratch directory (subsets, outputs, logs)")
    ap.add_argument("--mds_method", default="refine", choices=("classical", "refine"),
                    help="reconstruction of the evaluation (classical: MDS only, far cheaper; memory is what is measured)")
    ap.add_argument("--quick", action="store_true", help="counts 10,20,40 (smoke run)")
    ap.add_argument("--out", default="benchmarks/results/scale_eval.json", help="JSON output path")
    args = ap.parse_args(argv)
    import os

    from proteinmtp.dataio import open_dataset
    from proteinmtp.dataset import save_dataset
    from proteinmtp.fileio import write_json

    counts = [10, 20, 40] if args.quick else [int(v) for v in args.counts.split(",")]
    workers = [int(v) for v in args.workers.split(",")]
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    run = Path(args.model_path).resolve() if args.model_path else tiny_run(work, args.train_data)
    data = open_dataset(args.data)
    import dataclasses

    base = [s for s in data.samples if 30 <= len(s.sequence) <= args.max_len][: args.distinct]
    if len(base) < args.distinct:
        raise SystemExit(f"{args.data} has only {len(base)} chains of 30-{args.max_len} residues")
    pool = [dataclasses.replace(base[i % len(base)], id=f"{base[i % len(base)].id}#{i // len(base)}")
            for i in range(max(counts))]
    code = Path(args.code_dir).resolve()
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    same = Path(args.code_dir).resolve() == REPO
    conditions = {"model": "tiny (5 steps)" if not args.model_path else Path(args.model_path).name,
                  "data": Path(args.data).name, "code": "this checkout" if same else Path(args.code_dir).name,
                  "threads_per_process": 1, "neighbour": False, "figures": True, "mds_method": args.mds_method,
                  "distinct_chains": args.distinct, "max_len": args.max_len}
    rows = []
    for n in counts:
        subset = work / f"subset_{n}.json"
        save_dataset(subset, pool[:n], data.global_stats, {})
        residues = sum(len(s.sequence) for s in pool[:n])
        for w in workers:
            out = work / f"eval_{n}_w{w}"
            cmd = [str(code / "evaluate_distmat_model.py"), "--model_path", str(run), "--test_data", str(subset),
                   "--output_dir", str(out), "--experiments_root", str(work / "experiments"), "--no_neighbour",
                   "--quiet", "--mds_method", args.mds_method]
            if w != 1:
                cmd += ["--workers", str(w)]
            m = measure([sys.executable, *cmd], work / f"eval_{n}_w{w}.log", env=env)
            if m["rc"] != 0:
                raise SystemExit(f"evaluation of {n} proteins failed (rc {m['rc']}); see {work}/eval_{n}_w{w}.log")
            res = json.loads((out / "eval_results.json").read_text())
            rows.append({"n_proteins": n, "n_evaluated": res["n_proteins"], "residues": residues, "workers": w, **m})
            write_json(Path(args.out), {"conditions": conditions, "rows": rows, "complete": False})  # so far
            print(f"n={n} workers={w}: {m['seconds']:.1f} s, peak RSS {m['peak_rss_mb_max_process']:.0f} MB "
                  f"(largest process), tree {m['peak_rss_mb_tree'] or float('nan'):.0f} MB", flush=True)
    slopes = {}
    for w in workers:
        sub = [r for r in rows if r["workers"] == w]
        if len(sub) >= 2:
            x = np.array([r["n_proteins"] for r in sub], float)
            for key in ("peak_rss_mb_max_process", "seconds"):
                y = np.array([r[key] for r in sub], float)
                slopes[f"{key}_per_protein_w{w}"] = float(np.polyfit(x, y, 1)[0])
    print("\n| proteins | residues | workers | seconds | peak RSS MB (largest process) | peak RSS MB (process tree) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        tree = "n/a" if r["peak_rss_mb_tree"] is None else f"{r['peak_rss_mb_tree']:.0f}"
        print(f"| {r['n_proteins']} | {r['residues']} | {r['workers']} | {r['seconds']:.1f} | "
              f"{r['peak_rss_mb_max_process']:.0f} | {tree} |")
    print("slopes: " + ", ".join(f"{k} = {v:.3g}" for k, v in slopes.items()))
    write_json(Path(args.out), {"conditions": conditions, "rows": rows, "slopes": slopes, "complete": True})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
