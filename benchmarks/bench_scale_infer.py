"""Inference at scale: memory flat in the number of records, kill + rerun exactly once, shards, workers.

    python benchmarks/bench_scale_infer.py                 # 2,000 records (a few CPU-minutes)
    python benchmarks/bench_scale_infer.py --quick         # 400 records, smaller checks

Everything runs ``infer_distmat.py`` as a subprocess on a tiny trained run (a random ``proteinmtp.tiny``
Qwen2 backbone, hidden 32, 2 layers, trained 2 steps on ``--train_data``; or ``--run_dir``) and random
sequences with lengths drawn uniformly from ``--min_len``..``--max_len`` (seeded). The model is tiny, so
the figures measure the inference machinery (streaming, batching, writing, reconstruction), not a real
backbone. Rows:

  memory          peak RSS (os.wait4) of predicting ``--small`` records and ``--records`` records, same
                  flags (classical MDS, --batch_size 64, --max_batch_residues2 1e6); target: large ≤ 1.3 × small
  kill + rerun    SIGKILL (workers 1) and SIGINT (workers 2) once half of ``--kill_records`` structures are
                  written, then the same command again: structure files, done rows per record over both
                  runs, rows of the rerun (every record exactly once: done or skipped)
  2 shards        --num_shards 2 --shard_index 0/1 run at the same time into one directory: union = all
                  records, overlap = 0, one manifest per shard
  workers         wall time of ``--throughput_records`` records with refinement, --workers 1 vs 2 (each
                  worker one BLAS thread, the model process OMP/MKL 1 thread); wall includes start-up
                  (about the same in both)

Prints a Markdown table and writes JSON to ``--out``. ``benchmarks/bench_scale.py`` calls it as a
subprocess. Thread counts and the machine's CPU count are recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from proteinmtp.fileio import write_json

REPO = Path(__file__).resolve().parents[1]
AA20 = list("ACDEFGHIKLMNPQRSTVWY")
# residue² budget of the memory rows: a forward pass's pair tensors (and the host copies of its outputs) are
# bounded by it in both runs, so what differs is only the number of records (≈ 6 sequences of 400)
MEM_BUDGET = 1_000_000


def write_fasta(path: Path, n: int, lo: int, hi: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = []
    with open(path, "w") as fh:
        for k in range(n):
            L = int(rng.integers(lo, hi + 1))
            ids.append(f"q{k:05d}")
            fh.write(f">{ids[-1]}\n{''.join(rng.choice(AA20, L))}\n")
    return ids


def tiny_run(work: Path, train_data: str) -> Path:
    run = work / "run"
    if (run / "head.safetensors").is_file():
        return run
    py = sys.executable
    subprocess.run([py, "-m", "proteinmtp.tiny", str(work / "backbone"), "--hidden_size", "32", "--num_layers", "2",
                    "--num_heads", "2"], check=True, cwd=REPO, capture_output=True)
    cmd = [py, str(REPO / "train_distmat.py"), "--train_data", train_data, "--model_name", str(work / "backbone"),
           "--finetune", "full", "--output_dir", str(run), "--max_steps", "2", "--logging_steps", "1",
           "--save_steps", "2", "--eval_steps", "1000", "--pair_dim", "8", "--single_dim", "16", "--dilations", "1",
           "--max_seq_len", "64", "--max_eval_len", "1024", "--warmup_steps", "1", "--templates", "0", "--no_tqdm"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"training the tiny run failed:\n{r.stderr[-3000:]}")
    return run


def env1() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def infer_cmd(run: Path, fasta: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, str(REPO / "infer_distmat.py"), "--model_path", str(run), "--fasta", str(fasta),
            "--output", str(out), "--device", "cpu", *map(str, extra)]


def run_measured(cmd: list[str]) -> dict:
    """Run to completion; wall seconds, exit status and the child's own peak RSS (MB)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=REPO, env=env1(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "wall_s": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),
            "stderr_tail": err[-400:] if p.returncode else ""}


def rows_of(out: Path) -> list[dict]:
    rows = []
    for m in sorted(out.glob("manifest*.jsonl")):
        rows += [json.loads(line) for line in m.read_text().splitlines() if line.strip()]
    return rows


def kill_and_rerun(run: Path, work: Path, n: int, seed: int, how: str, workers: int, lo: int, hi: int) -> dict:
    tag = f"kill_{how.lower()}_w{workers}"
    fasta, out = work / f"{tag}.fasta", work / tag
    ids = write_fasta(fasta, n, lo, hi, seed)
    cmd = infer_cmd(run, fasta, out, "--mds_method", "classical", "--batch_size", 8, "--workers", workers,
                    "--save_distmat")
    p = subprocess.Popen(cmd, cwd=REPO, env=env1(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 1800
    while p.poll() is None and time.time() < deadline and len(list(out.glob("q*.pdb"))) < n // 2:
        time.sleep(0.05)
    if p.poll() is not None:
        return {"case": tag, "error": f"the run ended (rc {p.returncode}) before it could be killed"}
    at_signal = len(list(out.glob("q*.pdb")))
    p.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGINT)
    rc1 = p.wait()
    time.sleep(1.0)  # SIGKILL: orphaned workers end by PR_SET_PDEATHSIG
    first = rows_of(out)
    at_kill = len(list(out.glob("q*.pdb")))
    r2 = run_measured(cmd)
    rows = rows_of(out)
    second = rows[len(first):]
    done_per_id: dict[str, int] = {}
    for row in rows:
        if row["status"] == "done":
            done_per_id[row["id"]] = done_per_id.get(row["id"], 0) + 1
    files = sorted(p.stem for p in out.glob("q*.pdb"))
    rerun_ids = sorted(row["id"] for row in second)
    return {"case": tag, "records": n, "signal": how, "workers": workers, "rc_killed": rc1, "rc_rerun": r2["rc"],
            "structures_at_signal": at_signal, "structures_after_killed_run": at_kill, "rows_first_run": len(first),
            "structures_after_rerun": len(files), "structure_files_match_ids": files == sorted(ids),
            "records_done_twice": sum(v > 1 for v in done_per_id.values()),
            "records_without_done_row": len(set(ids) - set(done_per_id)),
            "rerun_rows_each_record_once": rerun_ids == sorted(ids),
            "rerun_skipped": sum(row["status"] == "skipped" for row in second),
            "failed_rows": sum(row["status"] == "failed" for row in rows),
            "leftover_tmp_files": len(list(out.glob(".*.tmp"))),
            # every record predicted and written once, and settled once by the rerun; a SIGKILL between a
            # structure's rename and its manifest row leaves that record without a done row (the rerun
            # reports it skipped): counted above, not hidden
            "exactly_once": files == sorted(ids) and rerun_ids == sorted(ids)
            and all(v == 1 for v in done_per_id.values())}


def two_shards(run: Path, work: Path, n: int, seed: int, lo: int, hi: int) -> dict:
    fasta, out = work / "shards.fasta", work / "shards"
    ids = write_fasta(fasta, n, lo, hi, seed)
    procs = [subprocess.Popen(infer_cmd(run, fasta, out, "--mds_method", "classical", "--batch_size", 8,
                                        "--num_shards", 2, "--shard_index", i),
                              cwd=REPO, env=env1(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(2)]
    rcs = [p.wait() for p in procs]
    by_shard = [[json.loads(line) for line in (out / f"manifest.shard-{i}-of-2.jsonl").read_text().splitlines()]
                for i in range(2)]
    s0, s1 = ({row["id"] for row in rows if row["status"] == "done"} for rows in by_shard)
    files = sorted(p.stem for p in out.glob("q*.pdb"))
    return {"records": n, "rc": rcs, "shard_records": [len(s0), len(s1)], "union_is_all": sorted(s0 | s1) == sorted(ids),
            "overlap": len(s0 & s1), "structure_files": len(files), "files_match_ids": files == sorted(ids),
            "rows_per_shard": [len(r) for r in by_shard]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes: 400 records for the memory row, 60 for kill/shards, 16 for workers")
    p.add_argument("--out", default="benchmarks/results/scale_infer.json", help="JSON result file")
    p.add_argument("--work_dir", default="build/bench_scale_infer", help="scratch directory (run, FASTA, outputs)")
    p.add_argument("--run_dir", default=None, help="a trained run to use instead of training the tiny one")
    p.add_argument("--train_data", default="data/demo/dataset/train.json.gz",
                   help="dataset the tiny run is trained on (2 steps)")
    p.add_argument("--records", type=int, default=2000, help="records of the large memory run")
    p.add_argument("--small", type=int, default=50, help="records of the small memory run")
    p.add_argument("--kill_records", type=int, default=200, help="records of each kill + rerun check")
    p.add_argument("--shard_records", type=int, default=200, help="records of the 2-shard check")
    p.add_argument("--throughput_records", type=int, default=48, help="records of the workers 1 vs 2 timing")
    p.add_argument("--min_len", type=int, default=50, help="shortest random sequence (residues)")
    p.add_argument("--max_len", type=int, default=400, help="longest random sequence (residues)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sequences")
    args = p.parse_args(argv)
    if args.quick:
        args.records, args.kill_records, args.shard_records, args.throughput_records = 400, 60, 60, 16
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    tag = time.strftime("%Y%m%d-%H%M%S")
    work = work / tag
    work.mkdir()
    run = Path(args.run_dir) if args.run_dir else tiny_run(work.parent, args.train_data)
    lo, hi = args.min_len, args.max_len
    res: dict = {"benchmark": "scale_infer", "quick": args.quick, "seed": args.seed, "lengths": [lo, hi],
                 "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                 "threads": "model process OMP/MKL/OpenBLAS 1 thread; each reconstruction worker 1 BLAS thread",
                 "load_average_start": os.getloadavg()[0]}

    mem = {}
    for name, n in (("small", args.small), ("large", args.records)):
        fasta = work / f"mem_{n}.fasta"
        write_fasta(fasta, n, lo, hi, args.seed)
        m = run_measured(infer_cmd(run, fasta, work / f"mem_{n}", "--mds_method", "classical", "--batch_size", 64,
                                   "--max_batch_residues2", MEM_BUDGET, "--save_distmat"))
        m["records"] = n
        m["structures"] = len(list((work / f"mem_{n}").glob("q*.pdb")))
        mem[name] = m
        print(f"memory {name}: {m}", file=sys.stderr)
    mem["ratio"] = round(mem["large"]["peak_rss_mb"] / mem["small"]["peak_rss_mb"], 3)
    mem["target"] = "large ≤ 1.3 × small"
    mem["met"] = mem["ratio"] <= 1.3
    res["memory"] = mem

    res["kill_rerun"] = [kill_and_rerun(run, work, args.kill_records, args.seed + 1, "SIGKILL", 1, lo, hi),
                         kill_and_rerun(run, work, args.kill_records, args.seed + 2, "SIGINT", 2, lo, hi)]
    print(f"kill: {res['kill_rerun']}", file=sys.stderr)
    res["shards"] = two_shards(run, work, args.shard_records, args.seed + 3, lo, hi)
    print(f"shards: {res['shards']}", file=sys.stderr)

    thr = {}
    fasta = work / "thr.fasta"
    write_fasta(fasta, args.throughput_records, lo, hi, args.seed + 4)
    for w in (1, 2):
        m = run_measured(infer_cmd(run, fasta, work / f"thr_w{w}", "--mds_method", "refine", "--batch_size", 8,
                                   "--workers", w))
        m["records_per_s"] = round(args.throughput_records / m["wall_s"], 3)
        thr[f"workers_{w}"] = m
        print(f"workers {w}: {m}", file=sys.stderr)
    thr["speedup_2_vs_1"] = round(thr["workers_1"]["wall_s"] / thr["workers_2"]["wall_s"], 3)
    thr["records"] = args.throughput_records
    res["workers"] = thr
    res["load_average_end"] = os.getloadavg()[0]

    k1, k2 = res["kill_rerun"]
    sh = res["shards"]
    lines = ["| check | result |", "|---|---|",
             f"| peak RSS, {args.small} records | {mem['small']['peak_rss_mb']} MB |",
             f"| peak RSS, {args.records} records | {mem['large']['peak_rss_mb']} MB (× {mem['ratio']}; target ≤ 1.3: "
             f"{'met' if mem['met'] else 'NOT met'}) |"]
    for k in (k1, k2):
        if "error" in k:
            lines.append(f"| {k['case']} | {k['error']} |")
            continue
        lines.append(f"| {k['signal']} at {k['structures_at_signal']}/{k['records']} (workers {k['workers']}, exit "
                     f"{k['rc_killed']}, {k['structures_after_killed_run']} kept) + rerun | "
                     f"{k['structures_after_rerun']} files; done twice {k['records_done_twice']}; no done row "
                     f"{k['records_without_done_row']}; rerun rows once each: {k['rerun_rows_each_record_once']}; "
                     f"exactly once: {k['exactly_once']} |")
    lines += [f"| 2 shards at once, {sh['records']} records | {sh['shard_records']} records; union = all: "
              f"{sh['union_is_all']}; overlap {sh['overlap']} |",
              f"| workers 1 → 2, {thr['records']} records, refine | {thr['workers_1']['wall_s']} s → "
              f"{thr['workers_2']['wall_s']} s (× {thr['speedup_2_vs_1']}; {os.cpu_count()} CPUs, load "
              f"{res['load_average_start']:.1f}) |"]
    table = "\n".join(lines)
    print(table)
    res["table"] = table
    write_json(args.out, res)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
