"""Evaluate predicted structures.

Model mode: evaluate a trained run on a dataset split, beside the separation prior, the nearest training
neighbour (``--train_data``, default the run's training split; ``--no_neighbour`` skips it) and the oracle
(eval_results.json, eval_per_protein.csv, visualizations/, experiments/<date>_<name>/ record)::

    python evaluate_distmat_model.py --model_path runs/demo --test_data data/demo/dataset/test.json.gz --output_dir eval/

Pair mode: score any predicted structure (this project's, AlphaFold's, ESMFold's …) against a native;
residues are matched by a global sequence alignment of the chains (identity when equal)::

    python evaluate_distmat_model.py --pred_pdb pred.pdb --native_pdb native.pdb.gz --output_json out.json
    python evaluate_distmat_model.py --pairs pairs.tsv --output_json out.json   # "pred<TAB>native" lines

The JSON holds ``pairs`` (one {pred, native, n_aligned, n_native, identity, aligned_fraction, rmsd, tm_score,
gdt_ts, gdt_ha, lddt, …}
per pair; with --pairs also its "line"), ``mean`` over the scored pairs, and ``failed`` ({line, pred,
native, reason} per line that could not be scored: missing or unreadable file, no protein chain,
nothing aligns, unrelated sequences without --allow_mismatch, not two columns). With --pairs every good line is scored; each failure is also printed
on stderr, and the exit status is 1 when any line failed. Scores are over the native's residues (a native
residue missing from the prediction scores 0; see ``proteinmtp.scoring``).

The logic lives in ``proteinmtp.scoring`` (pair mode) and ``proteinmtp.eval_cli`` (model mode).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proteinmtp.config import HelpFormatter
from proteinmtp.eval_cli import EvaluationInputError, add_model_arguments, run_model_mode
from proteinmtp.fileio import write_json
from proteinmtp.metric_registry import pair_metrics
from proteinmtp.scoring import mean_scores, read_pairs_tsv, score_files, score_pairs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Evaluate a trained run on a dataset split (model mode), or score predicted structures "
                    "against natives (pair mode).",
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("pair mode (score structure files)")
    g.add_argument("--pred_pdb", type=str, default=None,
                   help="predicted structure (PDB/mmCIF, .gz ok); needs --native_pdb")
    g.add_argument("--native_pdb", type=str, default=None, help="native structure (PDB/mmCIF, .gz ok)")
    g.add_argument("--pairs", type=str, default=None,
                   help="TSV file of 'pred<TAB>native' lines (relative paths: cwd, else the TSV's folder); "
                        "lines that fail are listed in the JSON and on stderr, the others are scored")
    p.add_argument("--output_json", type=str, default=None,
                   help="pair mode: where to write the scores (JSON: 'pairs', 'mean', 'failed' lines with reasons)")
    g.add_argument("--allow_mismatch", action="store_true",
                   help="score a pair whose sequences do not match (identity < 0.3 over the aligned residues, or "
                        "< 50 %% of the native aligned); without it such a pair is refused")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    add_model_arguments(p)
    return p


def run_pair_mode(args: argparse.Namespace) -> dict:
    """Score --pred_pdb/--native_pdb or --pairs; write --output_json; return the result dict.

    With --pairs every line that can be scored is; each failure is listed with its line number and
    reason in the JSON ("failed") and on stderr. A single pair that fails raises ValueError (nothing written).
    """
    if args.pairs is not None:
        if args.pred_pdb or args.native_pdb:
            raise ValueError("give either --pairs or --pred_pdb/--native_pdb, not both")
        try:
            pairs, failures = read_pairs_tsv(args.pairs)
        except FileNotFoundError:
            raise ValueError(f"--pairs {args.pairs}: no such file") from None
        result = score_pairs(pairs, progress=not args.quiet, failures=failures, allow_mismatch=args.allow_mismatch)
        result["pairs_file"] = str(args.pairs)
        for f in result["failed"]:
            print(f"failed: {args.pairs}:{f['line']}: {f['reason']}", file=sys.stderr)
    else:
        if not (args.pred_pdb and args.native_pdb):
            raise ValueError("--pred_pdb and --native_pdb must be given together")
        for f in (args.pred_pdb, args.native_pdb):
            if not Path(f).is_file():
                raise ValueError(f"{f}: no such file")
        row = score_files(args.pred_pdb, args.native_pdb, allow_mismatch=args.allow_mismatch)
        result = {"pairs": [row], "mean": mean_scores([row]), "failed": [], "n_failed": 0}
    write_json(args.output_json, result)
    if not args.quiet:
        m = result["mean"]
        if result["pairs"]:
            scores = "  ".join(f"{s.label} {m[s.name]:.{s.digits}f}{s.unit}" for s in pair_metrics())
            print(f"{len(result['pairs'])} pair(s): n_aligned {m['n_aligned']:.1f}  identity {m['identity']:.3f}  "
                  f"aligned fraction {m['aligned_fraction']:.3f}  {scores}  -> {args.output_json}")
        else:
            print(f"no pair could be scored -> {args.output_json}")
    if result["n_failed"]:
        print(f"error: {result['n_failed']} pair line(s) failed (listed above and under 'failed' in "
              f"{args.output_json}); {len(result['pairs'])} scored", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    pair_mode = any(v is not None for v in (args.pred_pdb, args.native_pdb, args.pairs))
    model_mode = any(v is not None for v in (args.model_path, args.test_data))
    if model_mode and pair_mode:
        parser.error("give either --model_path/--test_data (model mode) or --pred_pdb/--native_pdb/--pairs")
    if model_mode:
        try:
            return run_model_mode(args)
        except EvaluationInputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if not pair_mode:
        parser.error("nothing to do: give --model_path/--test_data, or --pred_pdb/--native_pdb or --pairs")
    if args.output_json is None:
        parser.error("--output_json is required in pair mode")
    try:
        result = run_pair_mode(args)
    except (ValueError, OSError) as e:  # StructureReadError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if result["n_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
