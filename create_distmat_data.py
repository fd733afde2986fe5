"""Build a ProteinMTP dataset (train/val/test JSON of sequences + Cα coordinates) from structure files.

    python create_distmat_data.py --input data/demo/structures --output_dir data/demo/dataset \\
        --val_fraction 0.1 --test_fraction 0.1 --identity 0.3 --seed 0 --compress

Inputs may be files (PDB/mmCIF, plain or .gz), directories (searched recursively), glob patterns,
text files listing paths (.txt/.list), or seed-era JSON (``protein_coords_data.json``: a list of
records with ``sequence`` and ``coords``). Chains are filtered, identical sequences kept once, and
clustered with MMseqs2 so that whole clusters go to one split. Writes DIR/train.json, DIR/val.json,
DIR/test.json (``.json.gz`` with --compress), DIR/prior.json (the training split's separation prior,
fitted once here with the training chains' fingerprint; ``train_distmat.py`` uses it when the chains
match) and DIR/report.json (every input skipped or partly
skipped, with the reason, plus the summary printed at the end). report.json is written even when no
chain can be kept (every file unreadable, or every chain filtered out); the exit status is then 2.

Nothing is dropped unseen: files that are not read (unreadable, BinaryCIF — which gemmi 0.7.5 cannot
read —, dangling symbolic links, FIFOs and other non-regular files, never opened) are listed with the
reason and counted by kind in the summary.

Chain ids are ``<file stem>:<author chain id>``. When files in different folders share a name (a/prot.pdb,
b/prot.pdb; AlphaFold-style target1/ranked_0.pdb, target2/ranked_0.pdb), each stem is prefixed with the
shortest trailing part of its folder path that tells it apart: ``a/prot:A``, ``b/prot:A``,
``target1/ranked_0:A``. The ids depend only on the paths, never on --workers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from proteinmtp import __version__
from proteinmtp.builder import SEARCH_MODES, BuildConfig, BuildInputError, NothingUsableError, build_dataset
from proteinmtp.config import HelpFormatter
from proteinmtp.constants import DATASET_FORMAT
from proteinmtp.dataset import save_dataset
from proteinmtp.fileio import atomic_write, write_json
from proteinmtp.prior import SHIPPED_PRIOR_NAME, fit_shipped
from proteinmtp.shards import save_shards
from proteinmtp.splits import AUTO_EXHAUSTIVE_MAX, MMseqsError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = BuildConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--input", nargs="+", required=True,
                   help="structure files, directories (recursive), globs, .txt lists of paths, or seed-era JSON; "
                        "files of one name in different folders get ids prefixed with the shortest distinguishing "
                        "part of their folder path (a/prot:A, b/prot:A)")
    p.add_argument("--output_dir", required=True, help="directory that receives train/val/test JSON and report.json")
    p.add_argument("--min_len", type=int, default=d.min_len, help="minimum chain length (modelled residues)")
    p.add_argument("--max_seq_len", type=int, default=d.max_seq_len,
                   help="maximum chain length in residues; longer chains are dropped (0 = no limit)")
    p.add_argument("--max_missing_ca", type=float, default=d.max_missing_ca,
                   help="maximum fraction of residues without a Cα atom")
    p.add_argument("--max_unknown", type=float, default=d.max_unknown,
                   help="maximum fraction of residues of unknown type (X)")
    p.add_argument("--chains", default=d.chains,
                   help="keep only these chains: comma list of author chain ids (A,B) and/or stem:chain ids "
                        "(1ABC:A, which also selects a/1ABC:A); empty = all")
    p.add_argument("--identity", type=float, default=d.identity,
                   help="MMseqs2 sequence identity (fraction) at which chains are clustered into one split")
    p.add_argument("--coverage", type=float, default=d.coverage,
                   help="fraction of the shorter chain an MMseqs2 alignment must cover to link two chains "
                        "(0 = any alignment with E-value <= 1e-3; 0.8 lets shared domains cross splits)")
    p.add_argument("--search", choices=SEARCH_MODES, default=d.search,
                   help="MMseqs2 search for clustering: 'exhaustive' aligns every pair (CPU ~ n^2), 'prefilter' "
                        "uses the k-mer prefilter at sensitivity 7.5 (CPU ~ n^1.1, ~15 s fixed cost; misses "
                        f"~3 %% of links, see DISCUSSION.md 'Building at scale'), 'auto' = exhaustive up to "
                        f"{AUTO_EXHAUSTIVE_MAX} chains, prefilter above")
    p.add_argument("--verify_split", action="store_true",
                   help="after a prefilter clustering, align every val/test chain against every chain (exhaustive, "
                        "CPU ~ held-out x all = about a fifth of --search exhaustive) and move clusters with a hit "
                        "across splits to train: the split is then leakage-free at any size; nothing to do after an "
                        "exhaustive clustering, which is exact already (default: off)")
    p.add_argument("--val_fraction", type=float, default=None,
                   help=f"fraction of unique chains in val, whole clusters (when not given: {d.val_fraction}, or "
                        "from --train_ratio; 0 with --test_fraction 0 puts everything in train)")
    p.add_argument("--test_fraction", type=float, default=None,
                   help=f"fraction of unique chains in test, whole clusters (when not given: {d.test_fraction}, "
                        "or from --train_ratio)")
    p.add_argument("--max_cluster_share", type=float, default=d.max_cluster_share,
                   help="largest cluster a val or test split accepts, as a fraction of that split's target size "
                        "(at least 1 chain); larger clusters go to train, so no family dominates a held-out split")
    p.add_argument("--train_ratio", type=float, default=None,
                   help="seed-era flag: fraction in train; the rest is split evenly into val and test "
                        "(do not combine with --val_fraction/--test_fraction)")
    p.add_argument("--max_samples", type=int, default=0,
                   help="seed-era flag: keep at most this many unique chains, chosen by --seed (0 = all)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed for split assignment and --max_samples")
    p.add_argument("--workers", type=int, default=d.workers, help="parallel processes for reading structures")
    p.add_argument("--threads", type=int, default=0, help="MMseqs2 threads (0 = same as --workers)")
    p.add_argument("--compress", action="store_true", help="write .json.gz instead of .json (json format only)")
    p.add_argument("--format", choices=("json", "binary"), default="json",
                   help="json = DIR/<split>.json[.gz] (interchange, small sets); binary = DIR/<split>.shards/, "
                        "sharded numpy arrays read by memory map (proteinmtp.shards; large corpora, many ranks)")
    p.add_argument("--shard_mb", type=float, default=256.0,
                   help="with --format binary: largest shard in MB (1e6 bytes)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


def make_config(args: argparse.Namespace) -> BuildConfig:
    d = BuildConfig()
    val, test = args.val_fraction, args.test_fraction
    if args.train_ratio is not None:
        if val is not None or test is not None:
            raise BuildInputError("--train_ratio cannot be combined with --val_fraction/--test_fraction")
        if not 0.0 < args.train_ratio <= 1.0:
            raise BuildInputError(f"--train_ratio must be in (0, 1], got {args.train_ratio}")
        val = test = (1.0 - args.train_ratio) / 2
    return BuildConfig(
        min_len=args.min_len, max_seq_len=args.max_seq_len, max_missing_ca=args.max_missing_ca,
        max_unknown=args.max_unknown, chains=args.chains, identity=args.identity, coverage=args.coverage,
        search=args.search, verify_split=args.verify_split,
        val_fraction=d.val_fraction if val is None else val, test_fraction=d.test_fraction if test is None else test,
        max_cluster_share=args.max_cluster_share,
        seed=args.seed, max_samples=args.max_samples, workers=args.workers, threads=args.threads,
    )


def format_summary(summary: dict, seconds: float) -> str:
    s = summary
    lines = [
        f"files: {s['inputs']} inputs, {s['files_read']} read, {s['files_failed']} unreadable, "
        f"{s['files_without_protein']} without protein chains, {s['files_repaired']} read after a repair "
        f"(see report.json)  ({seconds:.1f} s)",
    ]
    lines += _failed_lines(s)
    lines += [
        f"chains: {s['chains_found']} found, {s['chains_kept']} kept (unique), "
        f"{sum(s['chains_dropped'].values())} dropped",
    ]
    for reason, n in s["chains_dropped"].items():
        lines.append(f"  dropped {reason:<22} {n}")
    cl = s.get("clustering", {})
    search = "" if not cl else " (exhaustive search)" if cl["exhaustive"] else " (k-mer prefilter)"
    lines.append(f"clusters: {s['clusters_total']}{search}")
    if "verify" in cl:
        v = cl["verify"]
        lines.append(f"  split verified exhaustively: {v['hits_across_splits']} held-out hits across splits, "
                     f"{v['chains_moved_to_train']} chains ({v['clusters_moved']} clusters) moved to train")
    elif cl and not cl["exhaustive"]:
        lines.append("  note: the prefilter misses some links (3.1 % on a 6,631-chain corpus), so a held-out "
                     "chain may keep a hit in train; --verify_split makes the split exact")
    for name, v in s["splits"].items():
        lines.append(f"  {name:<5} {v['chains']:6d} chains {v['clusters']:6d} clusters {v['residues']:8d} residues"
                     f"  (largest cluster {v.get('largest_cluster', 0)})")
    ln = s["length"]
    lines.append(f"length: min {ln['min']}  p25 {ln['p25']:.0f}  median {ln['median']:.0f}  p75 {ln['p75']:.0f}  "
                 f"max {ln['max']}  mean {ln['mean']:.1f}")
    lines.append("  " + "  ".join(f"{k}: {v}" for k, v in ln["histogram"].items()))
    return "\n".join(lines)


def _failed_lines(s: dict) -> list[str]:
    """One line per kind of file not read (unsupported format, dangling symlink, …)."""
    return [f"  not read: {n} {kind.replace('_', ' ')}" for kind, n in s.get("files_failed_by_kind", {}).items()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    try:
        cfg = make_config(args)
        out = Path(args.output_dir)
        if out.exists() and not out.is_dir():
            raise BuildInputError(f"--output_dir {out} exists and is not a directory")
        if not args.shard_mb > 0:
            raise BuildInputError(f"--shard_mb must be > 0, got {args.shard_mb}")
        splits, stats, report = build_dataset(args.input, cfg, progress=not args.no_progress)
    except NothingUsableError as e:
        # no dataset, but the per-file reasons are what the user needs: the report is always written
        config = {k: v for k, v in asdict(cfg).items() if k not in ("workers", "threads")}
        config.update({"input": list(args.input), "proteinmtp_version": __version__})
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "report.json", (json.dumps({"config": config, "error": str(e), **e.report}, indent=1)
                                           + "\n").encode())
        for line in _failed_lines(e.report.get("summary", {})):
            print(line, file=sys.stderr)
        print(f"create_distmat_data.py: error: {e}; each file's reason is in {out / 'report.json'}",
              file=sys.stderr)
        return 2
    except (BuildInputError, MMseqsError) as e:
        print(f"create_distmat_data.py: error: {e}", file=sys.stderr)
        return 2
    # workers/threads do not change the result; leaving them out keeps the output byte-identical.
    config = {k: v for k, v in asdict(cfg).items() if k not in ("workers", "threads")}
    config.update({"input": list(args.input), "compress": args.compress,
                   "proteinmtp_version": __version__, "format": DATASET_FORMAT})
    suffix = ".shards" if args.format == "binary" else ".json.gz" if args.compress else ".json"
    out.mkdir(parents=True, exist_ok=True)
    for name, samples in splits.items():
        if args.format == "binary":
            save_shards(out / f"{name}{suffix}", samples, stats, config, shard_mb=args.shard_mb)
        else:
            save_dataset(out / f"{name}{suffix}", samples, stats, config)
    # the training split's separation prior, fitted once here; train_distmat.py uses it when it matches
    write_json(out / SHIPPED_PRIOR_NAME, fit_shipped(splits["train"]), indent=None)
    seconds = time.time() - t0
    report = {"config": config, **report}
    atomic_write(out / "report.json", (json.dumps(report, indent=1) + "\n").encode())
    print(format_summary(report["summary"], seconds))
    print(f"wrote {', '.join(str(out / (n + suffix)) for n in splits)}, {out / SHIPPED_PRIOR_NAME} "
          f"and {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
