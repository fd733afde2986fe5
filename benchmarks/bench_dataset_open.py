"""What validating a dataset on load costs: opening a split and one pass over every sample, JSON and sharded.

    python benchmarks/bench_dataset_open.py --data build/pdownb --chains 200000 --json_chains 20000

The chains of DATA/{train,val,test}.json[.gz] (a create_distmat_data.py build) are repeated under new ids
(``<id>#k``) up to --chains for a sharded set (WORK/big.shards) and --json_chains for a JSON split
(WORK/big.json; JSON holds every sample in memory, ~520 B per residue, so it is measured smaller and
reported per chain). Both are written once and re-used. Each measurement runs in a fresh process
(interpreter and imports excluded): ``open`` = ``proteinmtp.shards.open_shards`` (which checks the index,
every file and, since the validation, every stored value vectorised) or the JSON reader
(``proteinmtp.dataio.open_dataset``; every field of every sample checked); ``pass`` = building every
Sample once, as an epoch of the training loader does (a sharded Sample is checked in full when built).
Timings are wall and CPU (process) seconds with OMP_NUM_THREADS=1, medians of --repeats runs (CPU time is
the steadier figure on a shared machine); the page cache is warm (the files were just written or read). Run the same command with PYTHONPATH at an older checkout to get the
"before" numbers (--label names the row). Output: a table and JSON at --out
(``{"config", "rows": [{"label", "format", "chains", "residues", "open_s", "pass_s", "open_cpu_s",
"pass_cpu_s", "open_cpu_us_per_chain", "pass_cpu_us_per_chain"}]}``; an existing file's rows of other
labels are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_MEASURE = """
import json, sys, time
path, fmt = sys.argv[1], sys.argv[2]
from proteinmtp.dataio import open_dataset
from proteinmtp.shards import open_shards
t0, c0 = time.perf_counter(), time.process_time()
ds = open_shards(path) if fmt == "shards" else open_dataset(path)
t1, c1 = time.perf_counter(), time.process_time()
n = res = 0
for s in ds.samples:
    n += 1
    res += len(s.sequence)
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"open_s": t1 - t0, "pass_s": t2 - t1, "open_cpu_s": c1 - c0, "pass_cpu_s": c2 - c1,
                  "chains": n, "residues": res}))
"""


def _source(data: Path):
    from proteinmtp.dataio import open_dataset

    out = []
    for split in ("train", "val", "test"):
        for suffix in (".json.gz", ".json"):
            if (data / f"{split}{suffix}").is_file():
                out += list(open_dataset(data / f"{split}{suffix}").samples)
                break
    return out


def _repeated(samples, n: int):
    import dataclasses

    for k in range(n):
        s = samples[k % len(samples)]
        yield dataclasses.replace(s, id=f"{s.id}#{k // len(samples)}")


def prepare(data: Path, work: Path, chains: int, json_chains: int) -> dict[str, Path]:
    from proteinmtp.dataset import compute_global_stats
    from proteinmtp.shards import is_shards, read_index

    work.mkdir(parents=True, exist_ok=True)
    paths = {"shards": work / "big.shards", "json": work / "big.json"}
    base = None
    if not (is_shards(paths["shards"]) and read_index(paths["shards"])["n_samples"] == chains):
        from proteinmtp.dataio import save_split

        base = base or _source(data)
        stats = compute_global_stats(base)
        save_split(paths["shards"], _repeated(base, chains), stats, {"bench": "repeated"})
    meta = work / "big.json.n"
    if not (paths["json"].is_file() and meta.is_file() and meta.read_text() == str(json_chains)):
        from proteinmtp.dataio import save_split

        base = base or _source(data)
        save_split(paths["json"], _repeated(base, json_chains), compute_global_stats(base), {"bench": "repeated"})
        meta.write_text(str(json_chains))
    return paths


def measure(path: Path, fmt: str, repeats: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = []
    for _ in range(repeats):
        r = subprocess.run([sys.executable, "-c", _MEASURE, str(path), fmt], capture_output=True, text=True,
                           env=env, check=True)
        runs.append(json.loads(r.stdout))
    row = {k: runs[0][k] for k in ("chains", "residues")}
    for k in ("open_s", "pass_s", "open_cpu_s", "pass_cpu_s"):
        row[k] = statistics.median(x[k] for x in runs)
    for k in ("open", "pass"):
        row[f"{k}_cpu_us_per_chain"] = 1e6 * row[f"{k}_cpu_s"] / row["chains"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="a create_distmat_data.py output directory (JSON splits)")
    p.add_argument("--work", default="build/bench_dataset_open", help="where the repeated sets are written")
    p.add_argument("--chains", type=int, default=200_000, help="chains of the sharded set")
    p.add_argument("--json_chains", type=int, default=20_000, help="chains of the JSON set")
    p.add_argument("--repeats", type=int, default=3, help="fresh-process runs per measurement (median)")
    p.add_argument("--label", default="after", help="name of this code version in the table")
    p.add_argument("--out", default=str(REPO / "benchmarks/results/dataset_open.json"), help="JSON results")
    args = p.parse_args(argv)
    paths = prepare(Path(args.data), Path(args.work), args.chains, args.json_chains)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    rows = [r for r in old.get("rows", []) if r["label"] != args.label]
    for fmt in ("shards", "json"):
        rows.append({"label": args.label, "format": fmt, **measure(paths[fmt], fmt, args.repeats)})
    res = {"config": {"data": args.data, "chains": args.chains, "json_chains": args.json_chains,
                      "repeats": args.repeats, "omp_num_threads": 1, "python": platform.python_version(),
                      "cpus": os.cpu_count()}, "rows": rows}
    from proteinmtp.fileio import write_json

    write_json(out, res)
    print(f"{'label':<8} {'format':<7} {'chains':>8} {'residues':>10} {'open s':>7} {'cpu s':>7} {'pass s':>7} "
          f"{'cpu s':>7} {'open cpu µs/chain':>18} {'pass cpu µs/chain':>18}")
    for r in rows:
        print(f"{r['label']:<8} {r['format']:<7} {r['chains']:>8} {r['residues']:>10} {r['open_s']:>7.2f} "
              f"{r['open_cpu_s']:>7.2f} {r['pass_s']:>7.2f} {r['pass_cpu_s']:>7.2f} "
              f"{r['open_cpu_us_per_chain']:>18.1f} {r['pass_cpu_us_per_chain']:>18.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
