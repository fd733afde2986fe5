"""Predict Cα structures from sequences with a trained ProteinMTP run.

    python infer_distmat.py --model_path runs/demo --sequence MKTAYIAKQRQISFVKSHFSRQ --output pred.pdb
    python infer_distmat.py --model_path runs/demo --fasta seqs.fasta --output preds/ --save_distmat

With ``--fasta`` the output is a directory receiving one ``<record id>.pdb`` per record (ids sanitised for
file names). Per-residue confidence (0–100) is written in the B-factor column; REMARKs name the model, the
run, the hand chosen and the mean confidence. Every input is checked before any work: a bad letter, an
empty record, a record longer than the model supports, or a missing/corrupt run directory gives one line
on stderr, exit status 2, and no output file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proteinmtp.predict import (
    InputError,
    check_lengths,
    clean_sequence,
    read_fasta,
    record_stems,
    remove_files,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_path", required=True, help="run directory written by train_distmat.py")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sequence", help="one protein sequence (one-letter codes, case-insensitive)")
    src.add_argument("--fasta", help="FASTA file; one output structure per record")
    p.add_argument("--output", required=True,
                   help="output structure file with --sequence; output directory with --fasta")
    p.add_argument("--output_format", choices=("pdb", "cif"), default="pdb", help="structure file format")
    p.add_argument("--mds_method", choices=("classical", "refine"), default="refine",
                   help="classical MDS only, or MDS then refinement against the predicted distances "
                        "(weighted by pair confidence, with Cα–Cα bond and clash terms)")
    p.add_argument("--save_distmat", action="store_true",
                   help="also save the predicted distance matrix [L, L] in Å as <name>_distmat.npy")
    p.add_argument("--save_distogram", action="store_true",
                   help="also save distogram probabilities, bin edges (Å), contact probability and pair/residue "
                        "confidence as <name>_distogram.npz")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available, else cpu), cpu, cuda:0 …")
    p.add_argument("--batch_size", type=int, default=1, help="sequences per forward pass")
    p.add_argument("--trust_remote_code", action="store_true",
                   help="allow the backbone's own Python code from its model directory (only for backbones you trust)")
    return p


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    written: list[Path] = []
    made_dir: Path | None = None
    try:
        if args.batch_size < 1:
            raise InputError(f"--batch_size must be ≥ 1, got {args.batch_size}")
        # 1. Inputs, before anything is loaded or written.
        if args.fasta is not None:
            raw = read_fasta(args.fasta)
        else:
            raw = [("sequence", args.sequence)]
        records = [(rid, clean_sequence(seq, rid)) for rid, seq in raw]
        check_lengths(records, None)
        run_dir = Path(args.model_path)
        if not run_dir.is_dir():
            raise InputError(f"run directory {run_dir} does not exist; pass the --output_dir of train_distmat.py")

        # 2. The run: its config first (lengths are checked before the weights load), then the weights.
        from proteinmtp.predict import load_error_message, quiet_transformers, run_max_len

        check_lengths(records, run_max_len(run_dir))
        from proteinmtp.model import load_run

        quiet_transformers()
        try:
            run = load_run(run_dir, device=_resolve_device(args.device), trust_remote_code=args.trust_remote_code)
        except Exception as e:  # noqa: BLE001 - any failure to load is reported as one line
            raise InputError(load_error_message(run_dir, e)) from None
        check_lengths(records, getattr(run, "max_len", None))

        # 3. Output names.
        out = Path(args.output)
        ext = "." + args.output_format
        if args.fasta is not None:
            if out.exists() and not out.is_dir():
                raise InputError(f"--output {out} is a file; with --fasta it must be a directory")
            stems = record_stems([rid for rid, _ in records])
            bases = [out / s for s in stems]
            targets = [b.with_name(b.name + ext) for b in bases]
        else:
            if out.is_dir() or args.output.endswith(("/", "\\")):
                out = out / ("prediction" + ext)
            bases = [out.with_suffix("") if out.suffix.lower() in (".pdb", ".cif", ".mmcif") else out]
            targets = [out]
        parent = targets[0].parent
        if not parent.exists():
            made_dir = parent if args.fasta is not None else None
            parent.mkdir(parents=True, exist_ok=True)

        # 4. Predict and write, one record at a time.
        from proteinmtp.predict import (
            predict_structures,
            run_description,
            save_distmat,
            save_distogram,
            write_structure,
        )

        model_name = run_description(run.config)["model_name"]

        def write_one(i: int, sp) -> None:
            rid = records[i][0] if args.fasta is not None else ""
            written.append(targets[i])
            write_structure(targets[i], sp, fmt=args.output_format, run_dir=run_dir, model_name=model_name,
                            record_id=rid)
            if args.save_distmat:
                p = bases[i].with_name(bases[i].name + "_distmat.npy")
                written.append(p)
                save_distmat(p, sp)
            if args.save_distogram:
                p = bases[i].with_name(bases[i].name + "_distogram.npz")
                written.append(p)
                save_distogram(p, sp)

        predict_structures(run, [s for _, s in records], method=args.mds_method, batch_size=args.batch_size,
                           progress=len(records) > 1, on_result=write_one)
    except (InputError, OSError, ValueError) as e:
        remove_files(written)
        if made_dir is not None:
            try:
                made_dir.rmdir()
            except OSError:
                pass
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException:
        remove_files(written)
        raise
    n = len(targets)
    print(f"wrote {n} structure{'s' if n != 1 else ''}: {targets[0]}" + (f" … {targets[-1]}" if n > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
