"""Batch inference, the pipeline behind ``infer_distmat.py``: records streamed from a FASTA (or one
``--sequence``), checked, resumed, predicted in length-sorted batches and finished (rebuilt + written) by the
worker pool, with a manifest line per record.

With ``--fasta`` the output is a directory receiving one ``<record id>.pdb`` (or ``.cif``) per record;
ids are sanitised for file names, and a repeated id (or two ids giving the same file name) gets ``_2``,
``_3``, … — said on stderr and in the manifest. Per-residue confidence (0–100) is written in the B-factor
column; REMARKs name the model, the run, the hand chosen and the mean confidence.

Nothing written is ever removed. Each record's files are written atomically as soon as it is done (the
structure last), so an interrupted batch (Ctrl-C, SIGTERM, a crash) keeps every finished record. A rerun of
the same command resumes: a record whose output files all exist (and whose structure holds the same
sequence) is skipped, unless ``--overwrite``; a record with only some of its files gets the missing ones.
The output directory receives ``manifest.jsonl`` (``manifest.shard-I-of-K.jsonl`` per shard), one JSON line
appended per record and run: id, record number, file stem, status (done / skipped / failed), outputs,
reason.

At scale: the FASTA is streamed twice (a first pass checks it and counts the records, nothing loaded or
written; the second predicts), ``--sort_window`` records at a time are sorted by length and cut into
batches under ``--max_batch_residues2``; memory does not grow with the number of records (except one short
name entry per record id, to keep file names unique). ``--workers N`` rebuilds structures in N processes
while the model runs the next batch; results are written in the order they finish. ``--num_shards K
--shard_index I`` (or the ranks of ``torchrun`` / ``accelerate launch``) split the records by position;
shards never write the same files, and each appends only to its own manifest, so they can share one
output directory.

A record that cannot be predicted (a bad letter, empty, shorter than 2 or longer than the model supports,
an existing output holding another sequence, a failure while predicting) is reported on stderr with its
record number and id, and the batch goes on; the exit status is then 1. Exit status 2: a bad option,
missing/corrupt run or FASTA (one line on stderr, nothing written); 130: interrupted.

The format is chosen by the extension of ``--output`` (.pdb/.ent → PDB, .cif/.mmcif → mmCIF) unless
``--output_format`` says otherwise; an extension contradicting ``--output_format`` is an error.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from tqdm.auto import tqdm

from proteinmtp.batching import length_batches
from proteinmtp.fasta import InputError, RecordNamer, check_lengths, clean_sequence, iter_fasta
from proteinmtp.pool import WorkerDied, WorkerPool
from proteinmtp.predict import structure_from_distances
from proteinmtp.reconstruction import DEFAULT_METHOD
from proteinmtp.runcli import (
    load_error_message,
    quiet_transformers,
    resolve_device,
    run_description,
    run_max_len,
)
from proteinmtp.sharding import Shard, resolve_shard
from proteinmtp.writers import (
    append_jsonl,
    existing_structure_mismatch,
    save_distmat,
    save_distogram,
    write_structure,
)

MANIFEST_NAME = "manifest.jsonl"
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_BATCH_RESIDUES2 = 2 ** 22     # 64 × 256², 16 × 512², 4 × 1024²
DEFAULT_SORT_WINDOW = 2048
EXT_FORMAT = {".pdb": "pdb", ".ent": "pdb", ".cif": "cif", ".mmcif": "cif"}


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
    settled: bool = False       # its manifest row is written

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


def iter_records(args: argparse.Namespace, fmt: str, shard: Shard, notes: list[str] | None = None
                 ) -> Iterator[Record]:
    """This shard's records with their output paths, streamed from ``--fasta`` (one record in memory at a
    time) or the single ``--sequence``. Stems are given over the whole FASTA in input order, so every
    shard names every record the same way and no two records (of any shards) share a file. A record whose
    letters are bad comes with status failed."""
    ext = "." + fmt
    out = Path(args.output)
    if args.fasta is None:
        if shard.holds(1):
            if out.is_dir() or args.output.endswith(("/", "\\")):
                out = out / ("prediction" + ext)
            base = out.with_suffix("") if out.suffix.lower() in EXT_FORMAT else out
            rec = Record(1, "sequence", "", base.name, outputs=_outputs(base, out, args))
            try:
                rec.sequence = clean_sequence(args.sequence, "sequence")
            except InputError as e:
                rec.status, rec.reason = "failed", str(e)
            yield rec
        return
    namer = RecordNamer()
    for rid, seq in iter_fasta(args.fasta, notes):
        stem, note = namer.name(rid)
        if not shard.holds(namer.count):
            continue
        if note and notes is not None:
            notes.append(note)
        rec = Record(namer.count, rid, "", stem, outputs=_outputs(out / stem, out / (stem + ext), args),
                     note=note or "")
        try:
            rec.sequence = clean_sequence(seq, rid)
        except InputError as e:
            rec.status, rec.reason = "failed", str(e)
        yield rec


@dataclass
class Survey:
    """First pass over this shard's records (no weights loaded, no structure read, nothing written)."""

    total: int = 0
    failed: int = 0
    to_predict: int = 0
    failures: list[str] = field(default_factory=list)   # the first MAX_LISTED failure lines

    MAX_LISTED = 100


def survey(records: Iterable[Record], max_len: int | None, overwrite: bool) -> Survey:
    s = Survey()
    for rec in records:
        s.total += 1
        check_record(rec, max_len, overwrite, read_existing=False)
        if rec.status == "failed":
            s.failed += 1
            if len(s.failures) < Survey.MAX_LISTED:
                s.failures.append(f"failed: {rec.label}: {rec.reason}")
        elif rec.status == "todo":
            s.to_predict += 1
    return s


def check_record(rec: Record, max_len: int | None, overwrite: bool, read_existing: bool = True) -> None:
    """Length check and resume decision for one record (sets status/reason). ``read_existing``: check that
    an existing structure file holds this record's sequence (False: only whether the files exist)."""
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
    if read_existing and structure.exists():
        why = existing_structure_mismatch(structure, rec.sequence)
        if why is not None:
            rec.status = "failed"
            rec.reason = f"{structure} exists and {why}; pass --overwrite to replace it, or choose another --output"
            return
    if all(p.exists() for p in rec.outputs.values()):
        rec.status, rec.reason = "skipped", "output files exist (pass --overwrite to predict again)"


def manifest_name(shard: Shard) -> str:
    """manifest.jsonl; manifest.shard-I-of-K.jsonl for one of several shards (one writer per file)."""
    return MANIFEST_NAME if shard.count == 1 else f"manifest.{shard.label}.jsonl"


class _Manifest:
    """The shard's manifest in the output directory (FASTA mode); nothing with --sequence."""

    def __init__(self, out_dir: Path | None, run_dir: Path, shard: Shard):
        self.path = out_dir / manifest_name(shard) if out_dir is not None else None
        self.run = str(run_dir)
        self.shard = shard.label

    def add(self, rec: Record) -> None:
        if self.path is None:
            return
        row = {"id": rec.id, "record": rec.number, "stem": rec.stem, "status": rec.status,
               "outputs": [p.name for p in rec.outputs.values() if p.exists()] if rec.status != "failed" else [],
               "reason": rec.reason or None, "length": len(rec.sequence) or None, "model_path": self.run,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if self.shard:
            row["shard"] = self.shard
        if rec.note:
            row["note"] = rec.note
        append_jsonl(self.path, row)


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _reason(e: BaseException) -> str:
    return str(e) if isinstance(e, (InputError, OSError)) else f"{type(e).__name__}: {e}"


def _check_options(args: argparse.Namespace) -> None:
    for name, least in (("batch_size", 1), ("workers", 1), ("sort_window", 1), ("max_batch_residues2", 4)):
        v = getattr(args, name)
        if v < least:
            raise InputError(f"--{name} must be ≥ {least}, got {v}")
    if args.fasta is None and args.num_shards > 1:
        raise InputError("--num_shards/--shard_index split a --fasta file; with --sequence there is one record")



def run_inference(args: argparse.Namespace) -> int:
    notes: list[str] = []
    # 1. Options, the run's config and a first streamed pass over the records: nothing loaded or written.
    try:
        _check_options(args)
        shard = resolve_shard(args.num_shards, args.shard_index)
        fmt = output_format(args)
        out_dir = Path(args.output) if args.fasta is not None else None
        if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"--output {out_dir} is a file; with --fasta it must be a directory")
        run_dir = Path(args.model_path)
        if not run_dir.is_dir():
            raise InputError(f"run directory {run_dir} does not exist; pass the --output_dir of train_distmat.py")
        max_len = run_max_len(run_dir)
        plan = survey(iter_records(args, fmt, shard, notes), max_len, args.overwrite)
    except (InputError, OSError) as e:
        return _error(str(e))
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if plan.total == 0:
        print(f"note: {shard.label or 'this process'} holds no record (record n goes to shard (n - 1) mod "
              f"{shard.count}); nothing to do", file=sys.stderr)
        return 0
    if plan.failed == plan.total:
        if args.fasta is None:
            return _error(plan.failures[0].split(": ", 2)[-1])
        for line in plan.failures:
            print(line, file=sys.stderr)
        if plan.failed > len(plan.failures):
            print(f"failed: … and {plan.failed - len(plan.failures)} more", file=sys.stderr)
        return _error(f"no record of {args.fasta}{' in ' + shard.label if shard.label else ''} can be "
                      "predicted; nothing written")

    # 2. The run's weights (only when something is left to predict).
    job = _Job(args, fmt, run_dir, out_dir, shard, max_len, plan.total)
    if plan.to_predict:
        err = job.load()
        if err:
            return _error(err)
    try:
        (out_dir if out_dir is not None else Path(args.output).parent).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _error(f"cannot create the output directory: {e}")

    # 3. Stream again: settle skipped/failed records at once, predict the rest window by window.
    try:
        job.run_all()
    except KeyboardInterrupt:
        job.interrupted()
        where = f" in {out_dir} (see {manifest_name(shard)})" if out_dir is not None else ""
        print(f"\ninterrupted: {job.n_done} record(s) finished this run, kept{where}; "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    except InputError as e:  # the FASTA changed under us after the first pass
        job.close()
        return _error(f"{e} (records before it are finished and kept)")
    if job.n_skipped:
        what = job.first_skipped if args.fasta is None else f"{job.n_skipped} record(s)"
        print(f"skipped {what}: output files exist (pass --overwrite to predict again)")
    if job.n_done:
        print(f"wrote {job.n_done} structure{'s' if job.n_done != 1 else ''}: {job.first}"
              + (f" … {job.last}" if job.n_done > 1 else ""))
    if job.n_failed:
        print(f"error: {job.n_failed} of {plan.total} record(s) failed (listed above"
              + (f" and in {out_dir / manifest_name(shard)})" if out_dir is not None else ")"), file=sys.stderr)
        return 1
    return 0


class _Job:
    """The second pass: records streamed, looked ahead ``--sort_window`` at a time, predicted in
    length-sorted batches under the residue² budget, finished (rebuilt + written) by the worker pool."""

    def __init__(self, args, fmt: str, run_dir: Path, out_dir: Path | None, shard: Shard, max_len: int | None,
                 total: int):
        self.args, self.fmt, self.run_dir, self.shard, self.max_len = args, fmt, run_dir, shard, max_len
        self.manifest = _Manifest(out_dir, run_dir, shard)
        self.run = None
        self.model_name = ""
        self.pool = WorkerPool(finish_record, args.workers)
        self.in_flight: dict[int, Record] = {}
        self.n_done = self.n_failed = self.n_skipped = 0
        self.first = self.last = self.first_skipped = None
        self.total = total
        self.bar = None

    def load(self) -> str | None:
        """Load the run's weights; the error line when they cannot be loaded."""
        from proteinmtp.model import load_run  # torch and the backbone: only when there is work

        quiet_transformers()
        try:
            self.run = load_run(self.run_dir, device=resolve_device(self.args.device, self.shard.local_rank),
                                trust_remote_code=self.args.trust_remote_code,
                                template_db=self.args.template_db, templates=self.args.templates)
        except Exception as e:  # noqa: BLE001 - any failure to load is reported as one line
            return load_error_message(self.run_dir, e)
        run_len = getattr(self.run, "max_len", None)
        if run_len:
            self.max_len = min(self.max_len, run_len) if self.max_len else run_len
        self.model_name = run_description(self.run.config)["model_name"]
        return None

    # -- settling records ---------------------------------------------------------------------------
    def settle(self, rec: Record) -> None:
        if rec.status == "failed":
            self.n_failed += 1
            msg = f"failed: {rec.label}: {rec.reason}"
            (self.bar.write(msg, file=sys.stderr) if self.bar is not None else print(msg, file=sys.stderr))
        elif rec.status == "skipped":
            self.n_skipped += 1
            self.first_skipped = self.first_skipped or rec.outputs["structure"]
        elif rec.status == "done":
            self.n_done += 1
            self.last = rec.outputs["structure"]
            self.first = self.first or self.last
        self.manifest.add(rec)
        rec.settled = True
        if self.bar is not None:
            self.bar.update(1)

    def collect(self, results, interrupted: bool = False) -> None:
        for key, res in results:
            rec = self.in_flight[key]       # popped once settled: a Ctrl-C in between leaves it in flight
            if isinstance(res, Exception):
                if interrupted and isinstance(res, WorkerDied):
                    continue  # killed with us; finished on disk or not, ``interrupted`` settles it
                rec.status, rec.reason = "failed", _reason(res)
            else:
                rec.status, rec.reason = "done", ""
            self.settle(rec)
            del self.in_flight[key]

    # -- the pass ---------------------------------------------------------------------------------------
    def run_all(self) -> None:
        desc = "predict" + (f" {self.shard.label}" if self.shard.label else "")
        self.bar = tqdm(total=self.total, desc=desc, unit="seq", disable=self.total <= 1, file=sys.stderr)
        try:
            window: list[Record] = []
            for rec in iter_records(self.args, self.fmt, self.shard):
                check_record(rec, self.max_len, self.args.overwrite)
                if rec.status != "todo":
                    self.settle(rec)
                    continue
                window.append(rec)
                if len(window) >= self.args.sort_window:
                    self.predict_window(window)
                    window = []
            self.predict_window(window)
            self.collect(self.pool.results(wait_until=0))
        finally:
            self.bar.close()
            self.bar = None
        self.close()

    def predict_window(self, window: list[Record]) -> None:
        if not window:
            return
        if self.run is None:  # outputs removed since the first pass
            err = self.load()
            if err:
                for rec in window:
                    rec.status, rec.reason = "failed", err
                    self.settle(rec)
                return
        lookahead = 2 * self.pool.workers if self.pool.workers > 1 else None
        args = self.args
        if getattr(self.run, "templates", None) is not None:    # one template search for the whole window
            self.run.templates.hits([r.sequence for r in window])
        # longest batch first: a budget too large for the device fails at once, and every later (smaller)
        # batch fits in memory the allocator already holds
        batches = length_batches([len(r.sequence) for r in window], args.batch_size, args.max_batch_residues2)
        for idx in reversed(batches):
            # workers keep 2 records each queued while the next forward pass runs; memory stays bounded
            self.collect(self.pool.results(wait_until=lookahead))
            recs = [window[i] for i in idx]
            try:
                preds = self.run.predict([r.sequence for r in recs], batch_size=len(recs))
            except Exception as e:  # noqa: BLE001 - a failed forward pass fails its records, the batch goes on
                for rec in recs:
                    rec.status, rec.reason = "failed", _reason(e)
                    self.settle(rec)
                continue
            for rec, dp in zip(recs, preds):
                self.in_flight[rec.number] = rec
                # a worker process gets the prediction's plain fields (no torch import there)
                pred = dp if self.pool.workers == 1 else dict(vars(dp))
                self.pool.submit(rec.number, RecordJob(rec.number, pred, rec.outputs, fmt=self.fmt,
                                                       method=args.mds_method, run_dir=str(self.run_dir),
                                                       model_name=self.model_name,
                                                       record_id=rec.id if args.fasta is not None else "",
                                                       overwrite=args.overwrite))
                self.collect(self.pool.results())  # each finished record's row at once (never blocks)
            del preds

    def interrupted(self) -> None:
        """Ctrl-C: start nothing new; the records a worker holds finish (their rows written); a second
        Ctrl-C stops waiting."""
        try:
            self.pool.cancel_waiting()
            self.collect(self.pool.results(wait_until=0), interrupted=True)
        except KeyboardInterrupt:
            pass
        finally:
            # a record whose structure is on disk is finished (written last, atomically), even when its result
            # was lost to the interrupt between a worker and this process: it gets its row
            for rec in list(self.in_flight.values()):
                if not rec.settled and Path(rec.outputs["structure"]).is_file():
                    rec.status, rec.reason = "done", ""
                    self.settle(rec)
            if self.bar is not None:
                self.bar.close()
            self.close(wait=False)

    def close(self, wait: bool = True) -> None:
        self.pool.close(wait=wait)



@dataclass
class RecordJob:
    """What a reconstruction worker needs to finish one record: the model's distances (``prediction``,
    a DistancePrediction or its fields as a dict), the files to write (kind -> path, the structure last)
    and how (format, method, the REMARKs' run and model)."""

    key: int
    prediction: object
    outputs: dict[str, Path]
    fmt: str = "pdb"
    method: str = DEFAULT_METHOD
    run_dir: str = ""
    model_name: str = ""
    record_id: str = ""
    overwrite: bool = False


def finish_record(job: RecordJob) -> dict:
    """Rebuild the structure of one record and write its files (each atomically; the structure last, so a
    structure on disk means the record is finished). Files that exist are kept unless ``job.overwrite``.
    Returns the reconstruction info (method, seconds, …)."""
    pred = job.prediction
    if isinstance(pred, dict):   # shipped to a worker process as plain fields: no torch import there
        pred = SimpleNamespace(**pred)
    sp = structure_from_distances(pred, method=job.method)  # type: ignore[arg-type]
    for kind, path in job.outputs.items():
        if path.exists() and not job.overwrite:
            continue
        if kind == "distmat":
            save_distmat(path, sp)
        elif kind == "distogram":
            save_distogram(path, sp)
        else:
            write_structure(path, sp, fmt=job.fmt, run_dir=job.run_dir, model_name=job.model_name,
                            record_id=job.record_id)
    return dict(sp.info)
