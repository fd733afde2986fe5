"""The one front door to a dataset split on disk, whichever its format: open, save, convert, verify.

A split is a JSON file (``<split>.json`` / ``.json.gz``, :mod:`proteinmtp.dataset`) or a sharded binary
directory (``<split>.shards/``, :mod:`proteinmtp.shards`). Every reader of the project opens a split with
:func:`open_dataset` and every writer saves one with :func:`save_split`; the format follows from the path.
Both formats are validated when opened (every field of every sample for JSON; the arrays vectorised and
each Sample when built for shards) and raise ``DatasetFormatError`` with one line naming the file, and for
a malformed sample ``FILE: sample N ('id'): field: what is wrong``.

    python -m proteinmtp.dataio convert build/full/train.json.gz build/full_binary/train.shards
    python -m proteinmtp.dataio verify build/full_binary/train.shards
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from proteinmtp.dataset import DatasetFormatError, DistMatDataset, Sample, read_json_split, save_dataset
from proteinmtp.shards import DEFAULT_SHARD_MB, open_shards, save_shards
from proteinmtp.shards import verify as verify_shards

JSON_SUFFIXES = (".json", ".json.gz")


def is_json_path(path: str | Path) -> bool:
    """True when ``path`` names a JSON split (.json / .json.gz); anything else is a sharded directory."""
    return str(path).endswith(JSON_SUFFIXES)


def open_dataset(path: str | Path) -> DistMatDataset:
    """A split for training, evaluation or anything else: a directory is a sharded dataset (lazy
    ``ShardedSamples``, checked at open), a file is JSON (every sample in memory, validated). Use
    ``list(ds.samples)`` where every sample must be in memory."""
    return open_shards(path) if Path(path).is_dir() else read_json_split(path)


def save_split(path: str | Path, samples: Iterable[Sample], global_stats: dict, config: dict,
               shard_mb: float = DEFAULT_SHARD_MB) -> Path:
    """Write a split atomically: JSON when ``path`` ends in .json / .json.gz (gzip for .gz), otherwise a
    sharded directory of shards of at most ``shard_mb`` MB. Every sample is checked before it is written."""
    if is_json_path(path):
        save_dataset(path, samples, global_stats, config)
        return Path(path)
    return save_shards(path, samples, global_stats, config, shard_mb=shard_mb)


def convert(src: str | Path, dst: str | Path, shard_mb: float = DEFAULT_SHARD_MB) -> Path:
    """JSON -> sharded directory, or sharded -> JSON when ``dst`` ends in .json / .json.gz (byte-identical
    to the JSON the shards were made from)."""
    ds = open_dataset(src)
    return save_split(dst, ds.samples, ds.global_stats, ds.config, shard_mb=shard_mb)


def verify(path: str | Path) -> tuple[int, str]:
    """Check a split in full: sharded: :func:`proteinmtp.shards.verify` (hashes, every sample); JSON: the
    validating reader. Returns (number of samples, a description)."""
    if Path(path).is_dir():
        ix = verify_shards(path)
        return ix["n_samples"], f"{ix.get('n_residues', '?')} residues, {len(ix['shards'])} shards, SHA-256 ok"
    ds = read_json_split(path)
    return len(ds), f"{sum(len(s) for s in ds.samples)} residues"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m proteinmtp.dataio", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert a split between JSON and the sharded binary format",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("input", help="a split file (.json / .json.gz) or a sharded dataset directory")
    c.add_argument("output", help="a .json / .json.gz file, or else a directory (sharded binary); written atomically")
    c.add_argument("--shard_mb", type=float, default=DEFAULT_SHARD_MB,
                   help="largest shard in MB (1e6 bytes); a single larger chain gets a shard of its own")
    v = sub.add_parser("verify", help="check a split in full: a sharded dataset's files against its index "
                                      "(sizes, SHA-256) and every sample; a JSON split's every sample")
    v.add_argument("path", help="sharded dataset directory or JSON split file")
    args = p.parse_args(argv)
    try:
        if args.command == "convert":
            print(f"wrote {convert(args.input, args.output, args.shard_mb)}")
        else:
            n, what = verify(args.path)
            print(f"{args.path}: ok ({n} samples, {what})")
    except (DatasetFormatError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
