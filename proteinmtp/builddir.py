"""A dataset build directory: what create_distmat_data.py writes there (every split in the chosen format,
prior.json, report.json), the removal of an earlier build's splits in another format, and the run itself
(build, write, summarise, exit status). The build (inputs -> chains -> splits) is proteinmtp.builder.

Rebuilding into a directory that holds an earlier build with another --format/--compress removes that
build's split files (DIR/<split>.json, .json.gz or .shards/ other than the new ones), after every new file
is written: a user who rebuilds into a directory means to replace its dataset, and a stale
``train.json.gz`` beside a new ``train.json`` would be read by any command still naming it, silently
training on the old data. Only the names a build writes are removed; anything else in DIR stays.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from proteinmtp import __version__
from proteinmtp.builder import BuildConfig, BuildInputError, NothingUsableError, build_dataset
from proteinmtp.buildreport import failed_lines, format_summary
from proteinmtp.constants import DATASET_FORMAT
from proteinmtp.dataio import save_split
from proteinmtp.dataset import Sample
from proteinmtp.fileio import write_json
from proteinmtp.prior import SHIPPED_PRIOR_NAME, fit_shipped
from proteinmtp.shards import is_shards
from proteinmtp.splits import MMseqsError

SPLITS = ("train", "val", "test")
SPLIT_SUFFIXES = (".json", ".json.gz", ".shards")     # what a build writes per split, by --format/--compress


def split_fractions(val_fraction: float | None, test_fraction: float | None,
                    train_ratio: float | None) -> tuple[float, float]:
    """(val, test) fractions from the flags: the seed-era ``--train_ratio`` splits the rest evenly; a flag
    not given takes the BuildConfig default."""
    d = BuildConfig()
    if train_ratio is not None:
        if val_fraction is not None or test_fraction is not None:
            raise BuildInputError("--train_ratio cannot be combined with --val_fraction/--test_fraction")
        if not 0.0 < train_ratio <= 1.0:
            raise BuildInputError(f"--train_ratio must be in (0, 1], got {train_ratio}")
        return (1.0 - train_ratio) / 2, (1.0 - train_ratio) / 2
    return (d.val_fraction if val_fraction is None else val_fraction,
            d.test_fraction if test_fraction is None else test_fraction)


def stored_config(cfg: BuildConfig, inputs: Sequence[str], compress: bool | None = None) -> dict:
    """The build settings a dataset file (compress given) or a failed build's report.json records.
    workers/threads do not change the result; leaving them out keeps the output byte-identical whatever
    they are."""
    config = {k: v for k, v in asdict(cfg).items() if k not in ("workers", "threads")}
    config["input"] = list(inputs)
    if compress is not None:
        config["compress"] = compress
    config["proteinmtp_version"] = __version__
    if compress is not None:
        config["format"] = DATASET_FORMAT
    return config


def remove_stale_splits(out: Path, suffix: str) -> list[Path]:
    """Remove DIR/<split><other suffix> left by an earlier build with another --format/--compress (called
    once the new splits are written, so the directory never lacks a complete set). Only what a build writes
    is touched: a split file, or a directory that is a sharded dataset (renamed away, then deleted)."""
    removed = []
    for name in SPLITS:
        for other in SPLIT_SUFFIXES:
            p = out / f"{name}{other}"
            if other == suffix or not (p.is_file() or p.is_symlink() or is_shards(p)):
                continue
            if p.is_dir() and not p.is_symlink():
                gone = out / f".{p.name}.stale-{os.getpid()}"
                os.rename(p, gone)
                shutil.rmtree(gone)
            else:
                p.unlink()
            removed.append(p)
    return removed


def write_build(out: Path, splits: dict[str, list[Sample]], stats: dict, report: dict, config: dict,
                suffix: str, shard_mb: float) -> list[Path]:
    """Every split (atomically, in the format ``suffix`` names), prior.json (the training split's separation
    prior, fitted once here; train_distmat.py uses it when the chains match), report.json, then the removal
    of the stale splits of an earlier build (returned)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, samples in splits.items():
        save_split(out / f"{name}{suffix}", samples, stats, config, shard_mb=shard_mb)
    write_json(out / SHIPPED_PRIOR_NAME, fit_shipped(splits["train"]), indent=None)
    write_json(out / "report.json", {"config": config, **report}, indent=1)
    return remove_stale_splits(out, suffix)


def run_build(inputs: Sequence[str], output_dir: str, *, fmt: str = "json", compress: bool = False,
              shard_mb: float = 256.0, progress: bool = True, val_fraction: float | None = None,
              test_fraction: float | None = None, train_ratio: float | None = None, **settings) -> int:
    """create_distmat_data.py: build, write and summarise; returns the exit status (2 with one error line
    on stderr when the input is unusable; report.json is written even when no chain can be kept).
    ``settings``: the other BuildConfig fields."""
    t0 = time.time()
    out = Path(output_dir)
    cfg = BuildConfig(**settings)
    try:
        cfg.val_fraction, cfg.test_fraction = split_fractions(val_fraction, test_fraction, train_ratio)
        if out.exists() and not out.is_dir():
            raise BuildInputError(f"--output_dir {out} exists and is not a directory")
        if not shard_mb > 0:
            raise BuildInputError(f"--shard_mb must be > 0, got {shard_mb}")
        splits, stats, report = build_dataset(inputs, cfg, progress=progress)
        suffix = ".shards" if fmt == "binary" else ".json.gz" if compress else ".json"
        config = stored_config(cfg, inputs, compress=compress)
        removed = write_build(out, splits, stats, report, config, suffix, shard_mb)
    except NothingUsableError as e:
        # no dataset, but the per-file reasons are what the user needs: the report is always written
        write_json(out / "report.json", {"config": stored_config(cfg, inputs), "error": str(e), **e.report}, indent=1)
        for line in failed_lines(e.report.get("summary", {})):
            print(line, file=sys.stderr)
        print(f"create_distmat_data.py: error: {e}; each file's reason is in {out / 'report.json'}", file=sys.stderr)
        return 2
    except (BuildInputError, MMseqsError, ValueError, OSError) as e:
        print(f"create_distmat_data.py: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(report["summary"], time.time() - t0))
    for p in removed:
        print(f"removed {p} (an earlier build's split in another format)")
    print(f"wrote {', '.join(str(out / (n + suffix)) for n in splits)}, {out / SHIPPED_PRIOR_NAME} and {out / 'report.json'}")
    return 0
