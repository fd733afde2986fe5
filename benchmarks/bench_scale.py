"""Scale benchmark: the dataset builder on the full corpus and on a 20k-chain synthetic corpus, the links the
prefiltered clustering loses, streamed statistics, and (as subprocesses, when present) the inference,
evaluation and loader scale benchmarks, merged into one JSON.

    python benchmarks/bench_scale.py                          # everything (hours on 2 shared cores)
    python benchmarks/bench_scale.py --quick                  # small version (minutes) -> scale_quick.json
    python benchmarks/bench_scale.py --sections links,stats   # some sections; others in the JSON are kept

Sections (each one's result is written to the JSON as soon as it finishes; a rerun replaces only the sections
it runs):
  full       create_distmat_data.py on --structures with --search prefilter (the search the
             synthetic series measures; auto would align every pair up to 10,000 chains) in a
             child process: wall and CPU seconds (the builder's own and MMseqs2's), peak RSS of the builder
             process and of its largest MMseqs2 child.
  synthetic  a corpus of real files plus mutated copies (copy k of a file changes each standard residue's
             name with probability k x --mutation_rate, so copy k keeps ~(1 - 0.95 k r) identity to the
             original), written under --work_dir; builds of nested random subsets of --sizes chains with the
             prefilter; growth exponent of CPU time in chains (log-log least squares), peak RSS, and the
             extrapolation to 200k chains. Needs the `full` build (it gives each file's chain count).
  links      on the full build's chains and on a random --subset of them: all-against-all exhaustive vs
             prefiltered MMseqs2 hits at the builder's rule (identity >= 0.3, E <= 1e-3, any coverage), for
             the prefilter at -s 7.5 / 8.5 with MMseqs2's k-mer length (the builder's) and with 5-mers:
             hits lost, exhaustive links that cross prefilter clusters, and those that cross the split the
             prefilter clusters give (seed 0, the builder's fractions).
  leakage    benchmarks/check_leakage.py on the full build and on the largest synthetic build (exhaustive
             search: every held-out x train pair).
  verified   the full corpus built with --search prefilter --verify_split: its time and memory, what the
             verification moved, and check_leakage.py on it (exhaustive; 0 leaked chains expected).
  stats      streamed global statistics vs numpy over every training pair held at once.
  reader     proteinmtp's structure reader vs a bare gemmi read of the same --reader_files files, a
             random sample of the corpus (random.Random(0).shuffle of the sorted list).
  sub        benchmarks/bench_scale_{infer,eval,loader}.py --out PATH at their own defaults (with --quick when
             this run is --quick): inference of 2,000 records, kill + rerun, 2 shards; evaluation memory
             against the number of proteins; loader memory per residue and per rank with 2 ranks. Their
             defaults read the full corpus build at build/full (create_distmat_data.py on the corpus).

Thread counts: MMseqs2 --threads (default 1), builder --workers 1; OMP/MKL threads as in the environment
(recorded). Timings on shared cores: compare CPU seconds, and only within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from proteinmtp.fileio import atomic_write

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("full", "synthetic", "links", "leakage", "verified", "stats", "reader", "sub")
AMINO3 = ("ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET", "PHE",
          "PRO", "SER", "THR", "TRP", "TYR", "VAL")
SUB_BENCHES = ("bench_scale_infer", "bench_scale_eval", "bench_scale_loader")

# Runs create_distmat_data.main in a child process and records its resource use (children = MMseqs2).
_BUILD_CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, os.getcwd())
import create_distmat_data
t = time.time()
rc = create_distmat_data.main(sys.argv[2:])
me, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rc": rc, "wall_s": time.time() - t, "cpu_builder_s": me.ru_utime + me.ru_stime,
           "cpu_mmseqs_s": ch.ru_utime + ch.ru_stime, "peak_rss_builder_mb": me.ru_maxrss / 1024,
           "peak_rss_mmseqs_mb": ch.ru_maxrss / 1024}, open(sys.argv[1], "w"))
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl
    import hashlib
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(os.path.join(tempfile.gettempdir(), f"bench_scale.{tag}.lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        yield


def save_section(out: Path, name: str, value: dict) -> None:
    """Merge one section into the JSON file (read, update, atomic replace; locked against a concurrent run)."""
    with _locked(out):
        _save_unlocked(out, name, value)


def _save_unlocked(out: Path, name: str, value: dict) -> None:
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc[name] = value
    doc["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                      "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                      "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write(out, (json.dumps(doc, indent=1) + "\n").encode())


def build(inputs: list[str], out_dir: Path, threads: int, extra: list[str]) -> dict:
    """One create_distmat_data.py build in a child process; its resource use and report summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    res = out_dir / "bench_resources.json"
    cmd = [sys.executable, "-c", _BUILD_CHILD, str(res), "--input", *inputs, "--output_dir", str(out_dir),
           "--workers", "1", "--threads", str(threads), "--compress", "--seed", "0", "--no_progress", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not res.exists():
        raise RuntimeError(f"build into {out_dir} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    r = json.loads(res.read_text())
    summary = json.loads((out_dir / "report.json").read_text())["summary"]
    r.update(chains=summary["chains_kept"], clusters=summary["clusters_total"],
             residues=sum(v["residues"] for v in summary["splits"].values()),
             splits={k: v["chains"] for k, v in summary["splits"].items()})
    r["cpu_total_s"] = r["cpu_builder_s"] + r["cpu_mmseqs_s"]
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}


def structure_files(root: Path, limit: int) -> list[str]:
    from proteinmtp.structure import is_structure_file

    files = sorted(str(f) for f in root.rglob("*") if f.is_file() and is_structure_file(f))
    return files[:limit] if limit else files


def load_build(out_dir: Path) -> dict:
    from proteinmtp.dataio import open_dataset

    return {n: open_dataset(out_dir / f"{n}.json.gz").samples for n in ("train", "val", "test")}


# ------------------------------------------------------------------------------------------------ sections
def section_full(args, files: list[str]) -> dict:
    r = build(files if args.quick else [args.structures], Path(args.work_dir) / "full", args.threads,
              ["--search", "prefilter"])
    r["files"] = len(files)
    log(f"full corpus: {r}")
    return r


def mutate_pdb(src: str, dst: Path, rate: float, seed: int) -> None:
    """Copy a PDB file changing each standard residue's name (all its ATOM lines) with probability ``rate``
    to another of the 20 standard ones; coordinates untouched."""
    rng = np.random.default_rng(seed)
    choice: dict[str, str] = {}
    lines = []
    with gzip.open(src, "rt", errors="replace") if src.endswith(".gz") else open(src, errors="replace") as f:
        for line in f:
            if line.startswith("ATOM  ") and line[17:20] in AMINO3:
                key = line[21:27]
                if key not in choice:
                    old = line[17:20]
                    choice[key] = (AMINO3[(AMINO3.index(old) + 1 + int(rng.integers(19))) % 20]
                                   if rng.random() < rate else old)
                line = line[:17] + choice[key] + line[20:]
            elif line.startswith("SEQRES"):
                continue
            lines.append(line)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(f".{os.getpid()}.tmp")   # concurrent invocations may write the same copy
    with gzip.open(tmp, "wt", compresslevel=1) as f:
        f.writelines(lines)
    os.replace(tmp, dst)


def section_synthetic(args) -> dict:
    """Nested random subsets of originals + mutated copies, built with the prefilter."""
    full = load_build(Path(args.work_dir) / "full")
    per_file: dict[str, int] = {}
    for split in full.values():
        for s in split:
            per_file[s.source] = per_file.get(s.source, 0) + 1
    sources = sorted(per_file)
    pool = [(f, k) for k in range(args.copies + 1) for f in sources]
    order = np.random.default_rng(0).permutation(len(pool))
    need = max(args.sizes)
    chosen, total = [], 0
    for i in order:
        if total >= need:
            break
        chosen.append(pool[i])
        total += per_file[pool[i][0]]
    if total < need:
        log(f"synthetic pool holds only {total} chains (< {need}); raise --copies")
    root = Path(args.work_dir) / "synthetic"
    paths, counts = [], []
    t = time.perf_counter()
    for f, k in chosen:
        if k == 0:
            paths.append(f)
        else:
            idx = sources.index(f)
            rel = Path(f).relative_to(args.structures)
            dst = root / f"copy{k}" / rel.parent / (rel.name.removesuffix(".gz").removesuffix(".pdb") + f"_m{k}.pdb.gz")
            if not dst.exists():
                mutate_pdb(f, dst, min(1.0, k * args.mutation_rate), seed=1000 * idx + k)
            paths.append(str(dst))
        counts.append(per_file[f])
    log(f"synthetic corpus: {len(paths)} files, ~{total} chains ({time.perf_counter() - t:.0f} s to write)")
    cum = np.cumsum(counts)
    out = Path(args.output)
    for size in sorted(args.sizes):
        if size in _synthetic_runs(out, args) and not args.rerun:
            log(f"synthetic {size}: in {out} already (--rerun to build it again)")
            continue
        n_files = int(np.searchsorted(cum, size) + 1)
        lst = root / f"files_{size}.txt"
        atomic_write(lst, "".join(p + "\n" for p in paths[:n_files]))
        r = build([str(lst)], root / f"build_{size}", args.threads, ["--search", "prefilter"])
        r.update(target_chains=size, files=n_files)
        log(f"synthetic {size}: {r}")
        with _locked(out):   # runs of other sizes (earlier, or concurrent invocations) are kept
            runs = {**_synthetic_runs(out, args), size: r}
            _save_unlocked(out, "synthetic", _growth(args, [runs[k] for k in sorted(runs)], total))
    with _locked(out):
        runs = _synthetic_runs(out, args)
    return _growth(args, [runs[k] for k in sorted(runs)], total)


def _prefilter_name(sensitivity: float = 7.5, kmer: int | None = None) -> str:
    """'-s 7.5' or '-s 7.5 -k 5'; kmer None = the builder's (splits.CLUSTER_KMER; 0 = MMseqs2's choice)."""
    from proteinmtp.splits import CLUSTER_KMER

    kmer = CLUSTER_KMER if kmer is None else kmer
    return f"-s {sensitivity}" + (f" -k {kmer}" if kmer else "")


def _synthetic_runs(out: Path, args) -> dict[int, dict]:
    """Synthetic builds already recorded in ``out`` with the same corpus parameters, by target size."""
    if not out.exists():
        return {}
    syn = json.loads(out.read_text()).get("synthetic", {})
    if (syn.get("mutation_rate_per_copy"), syn.get("copies"), syn.get("threads"), syn.get("search")) != (
            args.mutation_rate, args.copies, args.threads, f"prefilter {_prefilter_name()}"):
        return {}
    return {r["target_chains"]: r for r in syn.get("runs", [])}


def _fit_power(n, y) -> tuple[float, float]:
    b, loga = np.polyfit(np.log(n), np.log(y), 1)
    return float(b), float(np.exp(loga))


def _growth(args, runs: list[dict], pool_chains: int) -> dict:
    out = {"mutation_rate_per_copy": args.mutation_rate, "copies": args.copies, "pool_chains": pool_chains,
           "search": f"prefilter {_prefilter_name()}", "threads": args.threads, "runs": runs}
    if len(runs) >= 2:
        n = np.array([r["chains"] for r in runs], float)
        fits = {}
        for key in ("cpu_total_s", "cpu_builder_s", "cpu_mmseqs_s", "wall_s"):
            b, a = _fit_power(n, [max(r[key], 1e-3) for r in runs])
            fits[key] = {"exponent": round(b, 3), "at_200k_h": round(a * 200_000 ** b / 3600, 2)}
        rss = np.polyfit(n, [r["peak_rss_builder_mb"] for r in runs], 1)
        mm = np.polyfit(n, [r["peak_rss_mmseqs_mb"] for r in runs], 1)
        out["fits"] = fits
        out["peak_rss_builder_mb_per_1k_chains"] = round(float(rss[0]) * 1000, 1)
        out["peak_rss_builder_at_200k_gb"] = round(float(np.polyval(rss, 200_000)) / 1024, 2)
        out["peak_rss_mmseqs_at_200k_gb"] = round(float(np.polyval(mm, 200_000)) / 1024, 2)
    return out


def _edges(seqs: dict[str, str], keys: list[str], exhaustive: bool, threads: int, workdir: Path,
           sensitivity: float = 7.5, kmer: int = 0) -> tuple:
    """Undirected hit pairs (i < j, unique) of an all-against-all search at the builder's rule, and CPU s."""
    import tempfile

    from proteinmtp.splits import _search_args, run_mmseqs

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        fasta, out = os.path.join(tmp, "s.fasta"), os.path.join(tmp, "hits.m8")
        with open(fasta, "w") as f:
            for i, k in enumerate(keys):
                f.write(f">s{i}\n{seqs[k]}\n")
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        run_mmseqs(_search_args(fasta, fasta, out, os.path.join(tmp, "w"), ("query", "target"), min_identity=0.3,
                                coverage=0.0, cov_mode=1, evalue=1e-3, sensitivity=sensitivity, threads=threads,
                                exhaustive=exhaustive, max_seqs=100000, kmer=kmer))
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        q, t = [], []
        with open(out) as f:
            for line in f:
                a, b = line.split("\t", 2)[:2]
                q.append(int(a[1:]))
                t.append(int(b[1:]))
    q, t = np.array(q, np.int64), np.array(t, np.int64)
    lo, hi = np.minimum(q, t), np.maximum(q, t)
    code = np.unique(lo[lo != hi] * len(keys) + hi[lo != hi])
    return code, c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime


def _roots(n: int, code: np.ndarray) -> np.ndarray:
    from proteinmtp.splits import UnionFind

    uf = UnionFind(n)
    for c in code.tolist():
        uf.union(c // n, c % n)
    return np.array([uf.find(i) for i in range(n)])


def links_lost(seqs: dict[str, str], threads: int, workdir: Path, settings: list[tuple[float, int]]) -> dict:
    """One exhaustive all-against-all search against prefilter searches at (sensitivity, k-mer length; 0 =
    MMseqs2's choice) settings: links each loses, and what the split its clusters give (seed 0, the builder's
    fractions) leaves linked across splits by exhaustive links."""
    from proteinmtp.builder import BuildConfig
    from proteinmtp.splits import assign_splits

    keys = sorted(seqs)
    n = len(keys)
    ex, cpu_ex = _edges(seqs, keys, True, threads, workdir)
    r_ex = _roots(n, ex)
    out = {"chains": n, "cpu_exhaustive_s": round(cpu_ex, 1), "links_exhaustive": int(len(ex)),
           "clusters_exhaustive": int(len(set(r_ex.tolist()))), "prefilter": {}}
    cfg = BuildConfig()
    for sens, kmer in settings:
        pf, cpu_pf = _edges(seqs, keys, False, threads, workdir, sensitivity=sens, kmer=kmer)
        lost = np.setdiff1d(ex, pf)
        r_pf = _roots(n, pf)
        cross = r_pf[ex // n] != r_pf[ex % n]
        split = assign_splits({k: keys[r_pf[i]] for i, k in enumerate(keys)}, val_fraction=cfg.val_fraction,
                              test_fraction=cfg.test_fraction, seed=0, max_cluster_share=cfg.max_cluster_share)
        sp = np.array([split[k] for k in keys])
        leak = sp[ex // n] != sp[ex % n]
        to_train = leak & ((sp[ex // n] == "train") | (sp[ex % n] == "train"))
        leaked = {i for c in ex[leak].tolist() for i in (c // n, c % n) if sp[i] != "train"}
        leaked_train = {i for c in ex[to_train].tolist() for i in (c // n, c % n) if sp[i] != "train"}
        name = _prefilter_name(sens, kmer)
        out["prefilter"][name] = {
            "cpu_s": round(cpu_pf, 1), "links": int(len(pf)), "links_only_prefilter": int(len(np.setdiff1d(pf, ex))),
            "links_lost": int(len(lost)), "links_lost_pct": round(100 * len(lost) / max(len(ex), 1), 2),
            "clusters": int(len(set(r_pf.tolist()))),
            "exhaustive_links_across_prefilter_clusters": int(cross.sum()),
            "exhaustive_links_across_split": int(leak.sum()),
            "held_out_chains_with_exhaustive_link_to_other_split": len(leaked),
            "held_out_chains_with_exhaustive_link_to_train": len(leaked_train),
            "held_out_chains": int((sp != "train").sum())}
        log(f"links, {n} chains, {name}: {out['prefilter'][name]}")
    return out


def section_links(args) -> dict:
    full = load_build(Path(args.work_dir) / "full")
    seqs = {s.id: s.sequence for v in full.values() for s in v}
    work = Path(args.work_dir)
    out = {"rule": "identity >= 0.3, E <= 1e-3, any coverage; --max-seqs 100000",
           "builder_prefilter": _prefilter_name()}
    if not args.links_subset_only:
        out["full"] = links_lost(seqs, args.threads, work, [(7.5, 0), (7.5, 5), (8.5, 0), (8.5, 5)])
        log(f"links, full: {out['full']}")
        save_section(Path(args.output), "links", out)
    keys = sorted(seqs)
    pick = np.random.default_rng(0).choice(len(keys), size=min(args.subset, len(keys)), replace=False)
    out["subset"] = links_lost({keys[i]: seqs[keys[i]] for i in pick}, args.threads, work, [(7.5, 0), (7.5, 5)])
    log(f"links, subset: {out['subset']}")
    return out


def _leakage(data_dir: Path, threads: int) -> dict:
    res = data_dir / "leakage.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "check_leakage.py"), "--data_dir", str(data_dir),
           "--threads", str(threads), "--output", str(res)]
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    log(proc.stdout[-1500:])
    if not res.exists():
        raise RuntimeError(f"check_leakage.py failed: {proc.stderr[-2000:]}")
    d = json.loads(res.read_text())
    return {"returncode": proc.returncode, "n_train": d["n_train"], "n_held_out": d["n_val"] + d["n_test"],
            "cpu_s": round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 1),
            **{k: {"held_out_chains_with_hit": v["held_out_chains_with_hit"], "hits": v["hits"]}
               for k, v in d.items() if isinstance(v, dict) and "held_out_chains_with_hit" in v}}


def section_leakage(args) -> dict:
    """check_leakage.py (exhaustive held-out x train) on the full build and the largest synthetic build."""
    out = {"full": _leakage(Path(args.work_dir) / "full", args.threads)}
    largest = Path(args.work_dir) / "synthetic" / f"build_{max(args.sizes)}"
    if (largest / "report.json").exists():
        out[f"synthetic_{max(args.sizes)}"] = _leakage(largest, args.threads)
    return out


def section_verified(args, files: list[str]) -> dict:
    out_dir = Path(args.work_dir) / "full_verified"
    r = build(files if args.quick else [args.structures], out_dir, args.threads,
              ["--search", "prefilter", "--verify_split"])
    r["verify"] = json.loads((out_dir / "report.json").read_text())["summary"]["clustering"]["verify"]
    r["leakage"] = _leakage(out_dir, args.threads)
    log(f"verified full corpus: {r}")
    return r


def section_stats(args) -> dict:
    from proteinmtp.dataset import compute_global_stats, pair_distances

    train = load_build(Path(args.work_dir) / "full")["train"]
    t = time.perf_counter()
    stats = compute_global_stats(train)
    t_stream = time.perf_counter() - t
    t = time.perf_counter()
    d = pair_distances(train)                     # every pair at once: the old way, the reference
    logd = np.log(np.maximum(d, 1e-3))
    exact = {"dist_mean": d.mean(), "dist_std": d.std(), "dist_min": d.min(), "dist_max": d.max(),
             "dist_median": np.median(d), "log_dist_mean": logd.mean(), "log_dist_std": logd.std()}
    t_exact = time.perf_counter() - t
    rel = {k: float(abs(stats[k] - v) / abs(v)) for k, v in exact.items()}
    return {"chains": len(train), "pairs": int(len(d)), "bytes_held_by_exact": int(d.nbytes + logd.nbytes),
            "seconds_streamed": round(t_stream, 1), "seconds_exact": round(t_exact, 1),
            "relative_difference": rel, "median_sketch": "ln-d histogram, bins 1e-4 (relative error <= 1e-4)"}


def section_reader(args, files: list[str]) -> dict:
    import gemmi

    from proteinmtp.structure import StructureReadError, read_structure

    # a random sample of the whole corpus: the first files by path are all tiny (cgdms) and, with --quick,
    # ``files`` holds only the first 300
    sample = structure_files(Path(args.structures), 0)
    random.Random(0).shuffle(sample)
    files = sample[: args.reader_files]
    t = time.perf_counter()
    for f in files:
        with contextlib.suppress(RuntimeError, ValueError):
            gemmi.read_structure(f)
    t_gemmi = time.perf_counter() - t
    t = time.perf_counter()
    for f in files:
        with contextlib.suppress(StructureReadError):
            read_structure(f)
    t_ours = time.perf_counter() - t
    return {"files": len(files), "gemmi_s": round(t_gemmi, 2), "proteinmtp_s": round(t_ours, 2),
            "ratio": round(t_ours / t_gemmi, 2), "sample": "random, seed 0",
            "note": "random.Random(0).shuffle of the sorted file list, first N; one process, one after the other"}


def section_sub(args) -> dict:
    out = {}
    for name in SUB_BENCHES:
        script = REPO / "benchmarks" / f"{name}.py"
        if not script.exists():
            out[name] = {"status": "not present"}
            continue
        res = Path(args.work_dir) / f"{name}.json"
        t = time.perf_counter()
        quick = ["--quick"] if args.quick else []
        proc = subprocess.run([sys.executable, str(script), *quick, "--out", str(res)], cwd=REPO,
                              capture_output=True, text=True, check=False)
        entry = {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t, 1)}
        if res.exists():
            entry["result"] = json.loads(res.read_text())
        else:
            entry["stderr_tail"] = proc.stderr[-1500:]
        out[name] = entry
        log(f"{name}: rc {proc.returncode}")
    return out


def print_table(doc: dict) -> None:
    rows = []
    if "full" in doc:
        f = doc["full"]
        rows.append(("full corpus build", f"{f['chains']} chains", f"{f['cpu_total_s']:.0f} CPU-s "
                     f"({f['cpu_mmseqs_s']:.0f} MMseqs2)", f"{f['peak_rss_builder_mb']:.0f} MB "
                     f"(MMseqs2 {f['peak_rss_mmseqs_mb']:.0f})"))
    for r in doc.get("synthetic", {}).get("runs", []):
        rows.append((f"synthetic {r['target_chains']}", f"{r['chains']} chains, {r['clusters']} clusters",
                     f"{r['cpu_total_s']:.0f} CPU-s ({r['cpu_mmseqs_s']:.0f} MMseqs2)",
                     f"{r['peak_rss_builder_mb']:.0f} MB (MMseqs2 {r['peak_rss_mmseqs_mb']:.0f})"))
    fits = doc.get("synthetic", {}).get("fits")
    if fits:
        rows.append(("growth exponent (CPU total)", f"n^{fits['cpu_total_s']['exponent']}",
                     f"200k: {fits['cpu_total_s']['at_200k_h']} CPU-h",
                     f"200k: {doc['synthetic']['peak_rss_builder_at_200k_gb']} GB builder"))
    for name in ("full", "subset"):
        x = doc.get("links", {}).get(name)
        for setting, y in (x or {}).get("prefilter", {}).items():
            rows.append((f"links lost, {name}, {setting}", f"{x['chains']} chains",
                         f"{y['links_lost']}/{x['links_exhaustive']} ({y['links_lost_pct']} %)",
                         f"{y['held_out_chains_with_exhaustive_link_to_train']} held out linked to train"))
    for name, lk in doc.get("leakage", {}).items():
        if isinstance(lk, dict) and "exhaustive/criterion" in lk:
            x = lk["exhaustive/criterion"]
            rows.append((f"leakage, {name}", f"{lk['n_held_out']} held out",
                         f"{x['held_out_chains_with_hit']} chains with a hit", "exhaustive check"))
    if "verified" in doc:
        x = doc["verified"]
        rows.append(("full corpus, --verify_split", f"{x['chains']} chains", f"{x['cpu_total_s']:.0f} CPU-s, "
                     f"{x['verify']['chains_moved_to_train']} chains moved", f"leakage check: "
                     f"{x['leakage']['exhaustive/criterion']['held_out_chains_with_hit']} chains with a hit"))
    if "reader" in doc:
        x = doc["reader"]
        rows.append(("reader vs bare gemmi", f"{x['files']} files", f"{x['ratio']}x", ""))
    print(f"{'measure':<30} {'size':<28} {'time':<34} {'memory / note'}")
    for r in rows:
        print(f"{r[0]:<30} {r[1]:<28} {r[2]:<34} {r[3]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--structures", default="../shared/data/structures", help="directory of the real corpus")
    p.add_argument("--work_dir", default="build/scale", help="builds and the synthetic corpus go here")
    p.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000, 20000],
                   help="synthetic corpus sizes (chains) to build")
    p.add_argument("--copies", type=int, default=3, help="mutated copies per real file in the synthetic pool")
    p.add_argument("--mutation_rate", type=float, default=0.2,
                   help="per-residue mutation probability of copy 1 (copy k: k times this)")
    p.add_argument("--subset", type=int, default=2000, help="chains of the random subset for the links section")
    p.add_argument("--links_subset_only", action="store_true",
                   help="links section on the random subset only (the full corpus' exhaustive search is the slow part)")
    p.add_argument("--reader_files", type=int, default=1000, help="files timed in the reader section")
    p.add_argument("--threads", type=int, default=1, help="MMseqs2 threads")
    p.add_argument("--rerun", action="store_true",
                   help="build synthetic sizes again although the JSON holds them (default: resume, skip them)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of sections: {','.join(SECTIONS)}")
    p.add_argument("--output", default="benchmarks/results/scale.json", help="JSON result file")
    p.add_argument("--quick", action="store_true",
                   help="first 300 files, synthetic sizes 250/500/1000, subset 150, 100 reader files, "
                        "work dir build/scale_quick, result benchmarks/results/scale_quick.json")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.subset, args.reader_files = [250, 500, 1000], 150, 100
        if args.work_dir == p.get_default("work_dir"):
            args.work_dir = "build/scale_quick"
        if args.output == p.get_default("output"):
            args.output = "benchmarks/results/scale_quick.json"
    args.structures, args.work_dir = str(Path(args.structures).resolve()), str(Path(args.work_dir).resolve())
    sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    files = structure_files(Path(args.structures), 300 if args.quick else 0)
    if not files and ({"full", "verified", "reader"} & set(sections)):
        p.error(f"no structure files under {args.structures}")
    out = Path(args.output)
    for name in SECTIONS:
        if name not in sections:
            continue
        log(f"section {name} ...")
        t = time.perf_counter()
        fn = globals()[f"section_{name}"]
        value = fn(args, files) if name in ("full", "verified", "reader") else fn(args)
        value["section_wall_s"] = round(time.perf_counter() - t, 1)
        if name != "synthetic":          # synthetic saves each run itself, merged with concurrent ones
            save_section(out, name, value)
        log(f"section {name} done in {value['section_wall_s']:.0f} s")
    print_table(json.loads(out.read_text()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
