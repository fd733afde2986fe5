"""Predict Cα structures from sequences with a trained ProteinMTP run.

    python infer_distmat.py --model_path runs/demo --sequence MKTAYIAKQRQISFVKSHFSRQ --output pred.pdb
    python infer_distmat.py --model_path runs/demo --fasta seqs.fasta --output preds/ --save_distmat

With ``--fasta`` the output is a directory receiving one ``<record id>.pdb`` (or ``.cif``) per record;
ids are sanitised for file names, and a repeated id (or two ids giving the same file name) gets ``_2``,
``_3``, … — said on stderr and in the manifest. Per-residue confidence (0–100) is written in the B-factor
column; REMARKs name the model, the run, the hand chosen and the mean confidence.

Nothing written is ever removed. Each record's files are written atomically as soon as it is done (the
structure last), so an interrupted batch (Ctrl-C, a crash) keeps every finished record. A rerun of the
same command resumes: a record whose output files all exist (and whose structure holds the same sequence)
is skipped, unless ``--overwrite``; a record with only some of its files gets the missing ones. The output
directory receives ``manifest.jsonl``, one JSON line appended per record and run: id, file stem, status
(done / skipped / failed), outputs, reason.

A record that cannot be predicted (a bad letter, empty, shorter than 2 or longer than the model supports,
an existing output holding another sequence, a failure while predicting) is reported on stderr with its
record number and id, and the batch goes on; the exit status is then 1. Exit status 2: a bad option,
missing/corrupt run or FASTA (one line on stderr, nothing written); 130: interrupted.

The format is chosen by the extension of ``--output`` (.pdb/.ent → PDB, .cif/.mmcif → mmCIF) unless
``--output_format`` says otherwise; an extension contradicting ``--output_format`` is an error.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from proteinmtp.predict import (
    InputError,
    add_prediction_arguments,
    append_jsonl,
    check_lengths,
    clean_sequence,
    existing_structure_mismatch,
    read_fasta,
    record_stems,
    resolve_device,
)

MANIFEST_NAME = "manifest.jsonl"
EXT_FORMAT = {".pdb": "pdb", ".ent": "pdb", ".cif": "cif", ".mmcif": "cif"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_path", required=True, help="run directory written by train_distmat.py")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sequence", help="one protein sequence (one-letter codes, case-insensitive)")
    src.add_argument("--fasta", help="FASTA file (plain or .gz; UTF-8, a byte-order mark is ignored, other bytes "
                                     "are read as Latin-1); one output structure per record")
    p.add_argument("--output", required=True,
                   help="output structure file with --sequence (its extension .pdb/.cif chooses the format); "
                        "output directory with --fasta (receives <id>.<format> per record and manifest.jsonl)")
    p.add_argument("--output_format", choices=("pdb", "cif"), default=None,
                   help="structure file format: pdb or cif (mmCIF); when not given, the --output extension "
                        "decides (.pdb/.ent: pdb, .cif/.mmcif: cif; anything else: pdb)")
    p.add_argument("--overwrite", action="store_true",
                   help="predict again and replace records whose output files already exist (without it they "
                        "are skipped, so a rerun resumes an interrupted batch)")
    p.add_argument("--save_distmat", action="store_true",
                   help="also save the predicted distance matrix [L, L] in Å as <name>_distmat.npy")
    p.add_argument("--save_distogram", action="store_true",
                   help="also save distogram probabilities, bin edges (Å), contact probability and pair/residue "
                        "confidence as <name>_distogram.npz")
    add_prediction_arguments(p, "classical MDS only, or MDS then refinement against the predicted distances "
                                "(weighted by pair confidence, with Cα–Cα bond and clash terms)")
    return p


@dataclass
class Record:
    """One input record and what becomes of it."""

    number: int                 # 1-based position in the FASTA
    id: str
    sequence: str               # cleaned ("" when it failed the checks)
    stem: str
    outputs: dict[str, Path] = field(default_factory=dict)   # kind -> path; "structure" last
    status: str = "todo"        # todo | done | skipped | failed
    reason: str = ""
    note: str = ""

    @property
    def label(self) -> str:
        return f"record {self.number} {self.id!r}"


def output_format(args: argparse.Namespace) -> str:
    """pdb or cif, from --output_format and the --output extension (InputError when they disagree)."""
    given = args.output_format
    if args.fasta is not None:
        return given or "pdb"
    suffix = Path(args.output).suffix.lower()
    if suffix == ".gz":
        raise InputError(f"--output {args.output}: compressed output is not supported; give a .pdb or .cif name")
    by_ext = EXT_FORMAT.get(suffix)
    if by_ext and given and given != by_ext:
        raise InputError(f"--output {args.output} ends in {suffix} (a {by_ext} file) but --output_format is "
                         f"{given}; make them agree or drop --output_format")
    return given or by_ext or "pdb"


def _outputs(base: Path, structure: Path, args: argparse.Namespace) -> dict[str, Path]:
    out = {}
    if args.save_distmat:
        out["distmat"] = base.with_name(base.name + "_distmat.npy")
    if args.save_distogram:
        out["distogram"] = base.with_name(base.name + "_distogram.npz")
    out["structure"] = structure
    return out


def plan_records(args: argparse.Namespace, fmt: str, notes: list[str]) -> tuple[list[Record], Path | None]:
    """Records with their output paths, and the output directory (None with --sequence)."""
    ext = "." + fmt
    out = Path(args.output)
    if args.fasta is None:
        if out.is_dir() or args.output.endswith(("/", "\\")):
            out = out / ("prediction" + ext)
        base = out.with_suffix("") if out.suffix.lower() in EXT_FORMAT else out
        rec = Record(1, "sequence", clean_sequence(args.sequence, "sequence"), base.name,
                     outputs=_outputs(base, out, args))
        return [rec], None
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out} is a file; with --fasta it must be a directory")
    raw = read_fasta(args.fasta, notes)
    stem_notes: list[str] = []
    stems = record_stems([rid for rid, _ in raw], stem_notes)
    notes.extend(stem_notes)
    records = []
    for n, ((rid, seq), stem) in enumerate(zip(raw, stems), 1):
        rec = Record(n, rid, "", stem, outputs=_outputs(out / stem, out / (stem + ext), args))
        rec.note = next((t for t in stem_notes if t.startswith(f"record {n} ")), "")
        try:
            rec.sequence = clean_sequence(seq, rid)
        except InputError as e:
            rec.status, rec.reason = "failed", str(e)
        records.append(rec)
    return records, out


def check_record(rec: Record, max_len: int | None, overwrite: bool) -> None:
    """Length check and resume decision for one record (sets status/reason)."""
    if rec.status == "failed":
        return
    try:
        check_lengths([(rec.id, rec.sequence)], max_len)
    except InputError as e:
        rec.status, rec.reason = "failed", str(e)
        return
    if overwrite:
        return
    structure = rec.outputs["structure"]
    if structure.exists():
        why = existing_structure_mismatch(structure, rec.sequence)
        if why is not None:
            rec.status = "failed"
            rec.reason = f"{structure} exists and {why}; pass --overwrite to replace it, or choose another --output"
            return
    if all(p.exists() for p in rec.outputs.values()):
        rec.status, rec.reason = "skipped", "output files exist (pass --overwrite to predict again)"


class _Manifest:
    """manifest.jsonl in the output directory (FASTA mode); nothing with --sequence."""

    def __init__(self, out_dir: Path | None, run_dir: Path):
        self.path = out_dir / MANIFEST_NAME if out_dir is not None else None
        self.run = str(run_dir)

    def add(self, rec: Record) -> None:
        if self.path is None:
            return
        row = {"id": rec.id, "record": rec.number, "stem": rec.stem, "status": rec.status,
               "outputs": [p.name for p in rec.outputs.values() if p.exists()] if rec.status != "failed" else [],
               "reason": rec.reason or None, "length": len(rec.sequence) or None, "model_path": self.run,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if rec.note:
            row["note"] = rec.note
        append_jsonl(self.path, row)


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    notes: list[str] = []
    # 1. Inputs and the run's config, before anything is loaded or written.
    try:
        if args.batch_size < 1:
            raise InputError(f"--batch_size must be ≥ 1, got {args.batch_size}")
        fmt = output_format(args)
        records, out_dir = plan_records(args, fmt, notes)
        run_dir = Path(args.model_path)
        if not run_dir.is_dir():
            raise InputError(f"run directory {run_dir} does not exist; pass the --output_dir of train_distmat.py")
        from proteinmtp.predict import run_max_len

        max_len = run_max_len(run_dir)
        for rec in records:
            check_record(rec, max_len, args.overwrite)
    except (InputError, OSError) as e:
        return _error(str(e))
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if args.fasta is None and records[0].status == "failed":
        return _error(records[0].reason)
    if all(r.status == "failed" for r in records):
        for r in records:
            print(f"failed: {r.label}: {r.reason}", file=sys.stderr)
        return _error(f"no record of {args.fasta} can be predicted; nothing written")
    todo = [r for r in records if r.status == "todo"]

    # 2. The run's weights (only when something is left to predict).
    run = None
    if todo:
        from proteinmtp.model import load_run
        from proteinmtp.predict import load_error_message, quiet_transformers

        quiet_transformers()
        try:
            run = load_run(run_dir, device=resolve_device(args.device), trust_remote_code=args.trust_remote_code)
        except Exception as e:  # noqa: BLE001 - any failure to load is reported as one line
            return _error(load_error_message(run_dir, e))
        run_len = getattr(run, "max_len", None)
        for r in todo:
            check_record(r, run_len, True)
        todo = [r for r in todo if r.status == "todo"]

    # 3. Report what is settled already, then predict and write one record at a time.
    try:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        else:
            records[0].outputs["structure"].parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _error(f"cannot create the output directory: {e}")
    manifest = _Manifest(out_dir, run_dir)
    for r in records:
        if r.status == "failed":
            print(f"failed: {r.label}: {r.reason}", file=sys.stderr)
            manifest.add(r)
        elif r.status == "skipped":
            manifest.add(r)
    n_skipped = sum(r.status == "skipped" for r in records)
    if n_skipped:
        what = records[0].outputs["structure"] if args.fasta is None else f"{n_skipped} record(s)"
        print(f"skipped {what}: output files exist (pass --overwrite to predict again)")

    if todo:
        try:
            _predict(run, todo, args, fmt, run_dir, manifest, fasta=args.fasta is not None)
        except KeyboardInterrupt:
            done = sum(r.status == "done" for r in records)
            where = f" in {out_dir} (see {MANIFEST_NAME})" if out_dir is not None else ""
            print(f"\ninterrupted: {done} record(s) finished this run, kept{where}; "
                  "rerun the same command to resume", file=sys.stderr)
            return 130
    done = [r for r in records if r.status == "done"]
    failed = [r for r in records if r.status == "failed"]
    if done:
        first, last = done[0].outputs["structure"], done[-1].outputs["structure"]
        print(f"wrote {len(done)} structure{'s' if len(done) != 1 else ''}: {first}"
              + (f" … {last}" if len(done) > 1 else ""))
    if failed:
        print(f"error: {len(failed)} of {len(records)} record(s) failed (listed above"
              + (f" and in {out_dir / MANIFEST_NAME})" if out_dir is not None else ")"), file=sys.stderr)
        return 1
    return 0


def _predict(run, todo: list[Record], args: argparse.Namespace, fmt: str, run_dir: Path, manifest: _Manifest,
             fasta: bool) -> None:
    from proteinmtp.predict import (
        iter_predictions,
        run_description,
        save_distmat,
        save_distogram,
        write_structure,
    )

    model_name = run_description(run.config)["model_name"]
    for i, sp in iter_predictions(run, [r.sequence for r in todo], method=args.mds_method,
                                  batch_size=args.batch_size, progress=len(todo) > 1):
        rec = todo[i]
        try:
            if isinstance(sp, Exception):
                raise sp
            for kind, path in rec.outputs.items():  # structure last: it marks the record as finished
                if path.exists() and not args.overwrite:
                    continue
                if kind == "distmat":
                    save_distmat(path, sp)
                elif kind == "distogram":
                    save_distogram(path, sp)
                else:
                    write_structure(path, sp, fmt=fmt, run_dir=run_dir, model_name=model_name,
                                    record_id=rec.id if fasta else "")
            rec.status = "done"
        except Exception as e:  # noqa: BLE001 - one record's failure is reported, the batch goes on
            rec.status = "failed"
            rec.reason = f"{type(e).__name__}: {e}" if not isinstance(e, (InputError, OSError)) else str(e)
            print(f"failed: {rec.label}: {rec.reason}", file=sys.stderr)
        manifest.add(rec)


def _sigterm(signum, frame):  # noqa: ARG001 - a kill is handled like Ctrl-C: finished records are kept
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    sys.exit(main())
