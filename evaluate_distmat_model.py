"""Evaluate predicted structures.

Model mode: evaluate a trained run on a dataset split, beside the separation prior and the oracle
(eval_results.json, eval_per_protein.csv, visualizations/, experiments/<date>_<name>/ record)::

    python evaluate_distmat_model.py --model_path runs/demo --test_data data/demo/test.json --output_dir eval/

Pair mode: score any predicted structure (this project's, AlphaFold's, ESMFold's …) against a native;
residues are matched by a global sequence alignment of the chains (identity when equal)::

    python evaluate_distmat_model.py --pred_pdb pred.pdb --native_pdb native.pdb.gz --output_json out.json
    python evaluate_distmat_model.py --pairs pairs.tsv --output_json out.json   # "pred<TAB>native" lines

The JSON holds ``pairs`` (one {pred, native, n_aligned, rmsd, tm_score, gdt_ts, gdt_ha, lddt, …} per
pair) and ``mean`` over the pairs. The logic lives in ``proteinmtp.scoring`` (pair mode) and
``proteinmtp.evaluation`` (model mode).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proteinmtp.fileio import write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Evaluate a trained run on a dataset split (model mode), or score predicted structures "
                    "against natives (pair mode).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("pair mode (score structure files)")
    g.add_argument("--pred_pdb", type=str, default=None,
                   help="predicted structure (PDB/mmCIF, .gz ok); needs --native_pdb")
    g.add_argument("--native_pdb", type=str, default=None, help="native structure (PDB/mmCIF, .gz ok)")
    g.add_argument("--pairs", type=str, default=None,
                   help="TSV file of 'pred<TAB>native' lines (relative paths: cwd, else the TSV's folder)")
    p.add_argument("--output_json", type=str, default=None,
                   help="where to write the scores (JSON: 'pairs' list and 'mean')")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    from proteinmtp.evaluation import add_model_arguments

    add_model_arguments(p)
    return p


def run_pair_mode(args: argparse.Namespace) -> dict:
    """Score --pred_pdb/--native_pdb or --pairs; write --output_json; return the result dict."""
    from proteinmtp.scoring import read_pairs_tsv, score_pairs

    if args.pairs is not None:
        if args.pred_pdb or args.native_pdb:
            raise ValueError("give either --pairs or --pred_pdb/--native_pdb, not both")
        pairs = read_pairs_tsv(args.pairs)
    else:
        if not (args.pred_pdb and args.native_pdb):
            raise ValueError("--pred_pdb and --native_pdb must be given together")
        pairs = [(args.pred_pdb, args.native_pdb)]
    for pred, native in pairs:
        for f in (pred, native):
            if not Path(f).is_file():
                raise ValueError(f"{f}: no such file")
    result = score_pairs(pairs, progress=not args.quiet)
    write_json(args.output_json, result)
    if not args.quiet:
        m = result["mean"]
        print(f"{len(result['pairs'])} pair(s): n_aligned {m['n_aligned']:.1f}  RMSD {m['rmsd']:.3f} Å  "
              f"TM {m['tm_score']:.4f}  GDT-TS {m['gdt_ts']:.4f}  GDT-HA {m['gdt_ha']:.4f}  "
              f"lDDT {m['lddt']:.4f}  -> {args.output_json}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    pair_mode = any(v is not None for v in (args.pred_pdb, args.native_pdb, args.pairs))
    model_mode = any(v is not None for v in (args.model_path, args.test_data))
    if model_mode and pair_mode:
        parser.error("give either --model_path/--test_data (model mode) or --pred_pdb/--native_pdb/--pairs")
    if model_mode:
        from proteinmtp.evaluation import EvaluationInputError, run_model_mode

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
        run_pair_mode(args)
    except (ValueError, OSError) as e:  # StructureReadError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
