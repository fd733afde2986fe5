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
Rebuilding into the same directory with another --format/--compress removes the earlier build's split
files (train.json.gz beside a new train.json, ...) once the new ones are written.

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
import sys

from proteinmtp.builddir import run_build
from proteinmtp.builder import SEARCH_MODES, BuildConfig
from proteinmtp.config import HelpFormatter
from proteinmtp.shards import DEFAULT_SHARD_MB
from proteinmtp.splits import AUTO_EXHAUSTIVE_MAX


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
    p.add_argument("--shard_mb", type=float, default=DEFAULT_SHARD_MB,
                   help="with --format binary: largest shard in MB (1e6 bytes)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    return run_build(a.input, a.output_dir, fmt=a.format, compress=a.compress, shard_mb=a.shard_mb,
                     progress=not a.no_progress, val_fraction=a.val_fraction, test_fraction=a.test_fraction,
                     train_ratio=a.train_ratio, min_len=a.min_len, max_seq_len=a.max_seq_len,
                     max_missing_ca=a.max_missing_ca, max_unknown=a.max_unknown, chains=a.chains,
                     identity=a.identity, coverage=a.coverage, search=a.search, verify_split=a.verify_split,
                     max_cluster_share=a.max_cluster_share, seed=a.seed, max_samples=a.max_samples,
                     workers=a.workers, threads=a.threads)


if __name__ == "__main__":
    sys.exit(main())
