"""Dataset loader memory and time at scale: JSON (every rank parses and holds the split) against the sharded
binary format (memory-mapped; ranks share the pages), for 1 and 2 ranks.

    python benchmarks/bench_scale_loader.py --data build/full --binary_dir build/full_binary
    python benchmarks/bench_scale_loader.py --quick          # the val split only (a smoke run)

The split is converted once (``proteinmtp.shards``) into BINARY_DIR/<split>.shards/ (kept: re-used when its
sample count matches). Every measurement runs in fresh processes (multiprocessing spawn; N of them at once
for N ranks, held at a barrier while measured). Per process, after the imports and again after the load
plus one pass over every sample (``pass``: each chain materialised, its Cα mask counted, as an epoch of
the training loader does), it reads /proc/self/smaps_rollup: Rss, Pss (shared pages divided among the
processes mapping them, so a page mapped by two ranks counts half in each) and Private (Private_Clean +
Private_Dirty: pages only this process maps, including file pages no other process maps) and Anonymous
(heap: never shared, not reclaimable). Reported: the growth over the imports, per residue of the
split, and ``total_pss`` = the sum over ranks (the machine's real cost). Modes:

* ``json``: ``open_dataset(<split>.json.gz)``: every Sample in memory, per rank;
* ``binary_lazy``: ``open_dataset(<split>.shards)``: lazy samples, as train_distmat.py reads a binary split;
* ``binary_eager``: ``list(open_dataset(<split>.shards).samples)``: every Sample in memory.

Output: a table and JSON at --out (default benchmarks/results/scale_loader.json), schema
``{"config": {...}, "n_samples", "n_residues", "convert_s", "rows": [{"mode", "ranks", "load_s",
"pass_s", "rss_b_per_res", "pss_b_per_res", "private_b_per_res", "anon_b_per_res", "total_pss_mb", "peak_rss_mb", "peak_growth_b_per_res"}]}``
(peak: VmHWM, the process's peak RSS; its growth over the RSS after the imports, per residue)
(per-rank values are means over ranks). Timings are wall seconds with OMP_NUM_THREADS=1 per process.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def smaps() -> dict[str, int]:
    """Bytes from /proc/self/smaps_rollup: rss, pss, private."""
    out = {}
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[1].isdigit():
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return {"rss": out["Rss"], "pss": out["Pss"], "private": out["Private_Clean"] + out["Private_Dirty"],
            "anon": out["Anonymous"]}


def peak_rss() -> int:
    """Bytes: this process's peak RSS (VmHWM; unlike ru_maxrss it is not carried over an exec from the
    parent, so a spawned rank reports its own)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker(mode: str, path: str, barrier, queue) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np

    from proteinmtp.dataio import open_dataset

    gc.collect()
    before = smaps()
    t0 = time.perf_counter()
    ds = open_dataset(path)
    if mode == "binary_eager":
        ds.samples = list(ds.samples)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_present = 0
    for s in ds.samples:                 # one pass, as an epoch of the loader
        n_present += int(np.isfinite(s.ca[:, 0]).sum())
    pass_s = time.perf_counter() - t0
    gc.collect()
    barrier.wait()                       # every rank loaded: shared pages are shared now
    after = smaps()
    barrier.wait()
    queue.put({"load_s": load_s, "pass_s": pass_s, "n_present": n_present, "n_samples": len(ds.samples),
               "delta": {k: after[k] - before[k] for k in after},
               "peak_rss": peak_rss(), "peak_growth": peak_rss() - before["rss"]})
    barrier.wait()                       # hold the data until every rank has reported


def measure(mode: str, path: Path, ranks: int, n_res: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(ranks), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(mode, str(path), barrier, queue)) for _ in range(ranks)]
    for p in procs:
        p.start()
    res = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join(timeout=600)
        if p.exitcode != 0:
            raise RuntimeError(f"{mode} worker exited with {p.exitcode}")

    def mean(f):
        return sum(f(r) for r in res) / len(res)

    return {"mode": mode, "ranks": ranks, "load_s": round(mean(lambda r: r["load_s"]), 3),
            "pass_s": round(mean(lambda r: r["pass_s"]), 3),
            "rss_b_per_res": round(mean(lambda r: r["delta"]["rss"]) / n_res, 1),
            "pss_b_per_res": round(mean(lambda r: r["delta"]["pss"]) / n_res, 1),
            "private_b_per_res": round(mean(lambda r: r["delta"]["private"]) / n_res, 1),
            "anon_b_per_res": round(mean(lambda r: r["delta"]["anon"]) / n_res, 1),
            "total_pss_mb": round(sum(r["delta"]["pss"] for r in res) / 1e6, 1),
            "peak_rss_mb": round(max(r["peak_rss"] for r in res) / 1e6, 1),
            "peak_growth_b_per_res": round(mean(lambda r: r["peak_growth"]) / n_res, 1),
            "n_present": res[0]["n_present"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="build/full", help="directory holding <split>.json.gz (or .json)")
    p.add_argument("--binary_dir", default="build/full_binary",
                   help="where the split is converted to <split>.shards/ (re-used when present and complete)")
    p.add_argument("--split", default="train", help="split measured (train, val or test)")
    p.add_argument("--shard_mb", type=float, default=256.0, help="shard size in MB for the conversion")
    p.add_argument("--ranks", type=int, default=2, help="processes of the multi-rank measurement")
    p.add_argument("--quick", action="store_true", help="the val split, binary modes and 1 and --ranks ranks only")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale_loader.json"),
                   help="JSON results file (written atomically)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from proteinmtp.dataio import open_dataset
    from proteinmtp.fileio import write_json
    from proteinmtp.shards import is_shards, read_index, save_shards

    split = "val" if args.quick else args.split
    src = next((Path(args.data) / f"{split}{ext}" for ext in (".json.gz", ".json")
                if (Path(args.data) / f"{split}{ext}").is_file()), None)
    if src is None:
        print(f"error: no {split}.json.gz or {split}.json in {args.data}", file=sys.stderr)
        return 2
    dst = Path(args.binary_dir) / f"{split}.shards"
    ds = open_dataset(src)
    n_samples, n_res = len(ds), sum(len(s) for s in ds.samples)
    convert_s = None
    if not (is_shards(dst) and read_index(dst)["n_samples"] == n_samples):
        t1 = time.perf_counter()
        save_shards(dst, ds.samples, ds.global_stats, ds.config, shard_mb=args.shard_mb)
        convert_s = round(time.perf_counter() - t1, 2)
    print(f"{src}: {n_samples} chains, {n_res} residues; binary {dst} "
          f"({sum(f.stat().st_size for f in dst.iterdir()) / 1e6:.1f} MB on disk"
          + (f", converted in {convert_s} s" if convert_s is not None else ", re-used") + ")", flush=True)
    del ds
    plan = [("binary_lazy", 1), ("binary_lazy", args.ranks)]
    if not args.quick:
        plan = [("json", 1), ("json", args.ranks), ("binary_eager", 1)] + plan
    rows = []
    for mode, ranks in plan:
        row = measure(mode, src if mode == "json" else dst, ranks, n_res)
        rows.append(row)
        print(f"  measured {mode} x{ranks}: {row['total_pss_mb']} MB PSS in total", flush=True)
    assert len({r["n_present"] for r in rows}) == 1, "every mode must read the same Cα"
    hdr = (f"{'mode':<13}{'ranks':>6}{'load s':>9}{'pass s':>9}{'RSS B/res':>11}{'PSS B/res':>11}"
           f"{'private B/res':>15}{'anon B/res':>12}{'total PSS MB':>14}{'peak RSS MB':>13}{'peak B/res':>12}")
    print(f"\n{split}: {n_samples} chains, {n_res} residues (OMP_NUM_THREADS=1 per process; growth over the "
          "imports after load + one pass; per-rank means)")
    print(hdr)
    for r in rows:
        print(f"{r['mode']:<13}{r['ranks']:>6}{r['load_s']:>9.2f}{r['pass_s']:>9.2f}{r['rss_b_per_res']:>11.1f}"
              f"{r['pss_b_per_res']:>11.1f}{r['private_b_per_res']:>15.1f}{r['anon_b_per_res']:>12.1f}{r['total_pss_mb']:>14.1f}"
              f"{r['peak_rss_mb']:>13.1f}{r['peak_growth_b_per_res']:>12.1f}")
    write_json(args.out, {"config": {"data": str(args.data), "split": split, "shard_mb": args.shard_mb,
                                     "ranks": args.ranks, "quick": args.quick, "omp_threads": 1,
                                     "cpus": os.cpu_count(), "python": platform.python_version()},
                          "n_samples": n_samples, "n_residues": n_res, "convert_s": convert_s, "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
