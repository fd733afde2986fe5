"""Benchmark the dataset builder against a bare gemmi read of the same files, and dataset size on disk.

    python benchmarks/bench_builder.py                       # all of ../shared/data/structures
    python benchmarks/bench_builder.py --structures data/demo/structures --limit 100
    python benchmarks/bench_builder.py --quick             # 150 files, one worker

Rows (same files, same process, one after the other):
  gemmi.read_structure           bare parse, nothing else (the floor)
  proteinmtp read_structure      our reader: first model, protein chains, altlocs, Cα/Cβ, breaks
  builder (workers=N)            create_distmat_data.py's whole pipeline: read + filter + dedup +
                                 MMseqs2 clustering + split (no file writing), per --workers value
Then bytes on disk per residue of the resulting dataset JSON, plain and gzip, next to the source
structures' gzip PDB. Prints a table, writes benchmarks/results/builder.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import gemmi

from proteinmtp.builder import BuildConfig, build_dataset
from proteinmtp.dataset import dataset_to_dict
from proteinmtp.fileio import atomic_write
from proteinmtp.structure import StructureReadError, is_structure_file, read_structure


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--structures", default="../shared/data/structures", help="directory of structure files")
    p.add_argument("--limit", type=int, default=0, help="use the first N files (sorted); 0 = all")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="builder --workers values to time")
    p.add_argument("--output", default="benchmarks/results/builder.json", help="JSON result file")
    p.add_argument("--quick", action="store_true",
                   help="first 150 files, workers=1 only, result to benchmarks/results/builder_quick.json")
    args = p.parse_args()
    if args.quick:
        args.limit = args.limit or 150
        args.workers = [1]
        if args.output == p.get_default("output"):
            args.output = "benchmarks/results/builder_quick.json"
    root = Path(args.structures)
    if not root.exists() and args.structures == p.get_default("structures"):
        root = Path("data/demo/structures")  # a fresh clone without the shared data: use the demo files
        print(f"{args.structures} not found; benchmarking the bundled demo structures in {root}")
    files = sorted(str(f) for f in root.rglob("*") if f.is_file() and is_structure_file(f))
    if args.limit:
        files = files[: args.limit]
    if not files:
        print(f"bench_builder.py: error: no structure files under {root}", file=sys.stderr)
        return 2
    rows = []

    t = time.perf_counter()
    n_atoms = 0
    for f in files:
        try:
            st = gemmi.read_structure(f)
        except (RuntimeError, ValueError):  # e.g. junk in the charge columns; ours retries those
            continue
        n_atoms += st[0].count_atom_sites() if len(st) else 0
    rows.append(("gemmi.read_structure (bare)", time.perf_counter() - t))

    t = time.perf_counter()
    n_chains = n_res = 0
    for f in files:
        try:
            chains = read_structure(f)
        except StructureReadError:
            continue
        n_chains += len(chains)
        n_res += sum(len(c) for c in chains)
    rows.append(("proteinmtp read_structure", time.perf_counter() - t))

    build = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            t = time.perf_counter()
            splits, stats, report = build_dataset([str(root)] if not args.limit else files,
                                                  BuildConfig(workers=w), progress=False, workdir=tmp)
            rows.append((f"builder, workers={w} (read+filter+cluster+split)", time.perf_counter() - t))
            build = (splits, stats, report)
    splits, stats, report = build
    samples = [s for v in splits.values() for s in v]
    kept_res = sum(len(s) for s in samples)
    plain = json.dumps(dataset_to_dict(samples, stats, {}), separators=(",", ":")).encode()
    gz = gzip.compress(plain, compresslevel=9, mtime=0)
    no_cb = json.dumps(dataset_to_dict([_without_cb(s) for s in samples], stats, {}), separators=(",", ":")).encode()
    src_bytes = sum(os.path.getsize(f) for f in files)

    n = len(files)
    print(f"{n} files, {n_chains} protein chains, {n_res} residues read; {len(samples)} unique chains kept "
          f"({kept_res} residues)")
    print(f"{'step':<52} {'seconds':>8} {'files/s':>8} {'x gemmi':>8}")
    base = rows[0][1]
    result = {"n_files": n, "n_chains": n_chains, "n_residues": n_res, "n_kept": len(samples),
              "kept_residues": kept_res, "rows": [], "machine": {"cpus": os.cpu_count(),
                                                                 "python": platform.python_version(),
                                                                 "gemmi": gemmi.__version__}}
    for name, sec in rows:
        print(f"{name:<52} {sec:8.2f} {n / sec:8.1f} {sec / base:8.2f}")
        result["rows"].append({"step": name, "seconds": round(sec, 3), "files_per_s": round(n / sec, 2),
                               "relative_to_gemmi": round(sec / base, 3)})
    sizes = {
        "dataset JSON plain (Cα + Cβ)": len(plain),
        "dataset JSON gzip (Cα + Cβ)": len(gz),
        "dataset JSON plain (Cα only)": len(no_cb),
        "dataset JSON gzip (Cα only)": len(gzip.compress(no_cb, compresslevel=9, mtime=0)),
        "source structure files (as stored)": src_bytes,
    }
    print(f"{'bytes on disk':<52} {'bytes':>12} {'B/residue':>10}")
    result["bytes"] = {}
    for name, b in sizes.items():
        per = b / (n_res if name.startswith("source") else kept_res)
        print(f"{name:<52} {b:12d} {per:10.1f}")
        result["bytes"][name] = {"bytes": b, "bytes_per_residue": round(per, 2)}
    out = Path(args.output)
    atomic_write(out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"wrote {out}")
    return 0


def _without_cb(s):
    from dataclasses import replace

    return replace(s, cb=None)


if __name__ == "__main__":
    sys.exit(main())
