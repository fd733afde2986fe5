"""From sequences to structures: input checks, model → distances → coordinates, confidence, output files.

Shared by ``infer_distmat.py`` and the evaluator, so both rebuild coordinates the same way::

    from proteinmtp.model import load_run
    from proteinmtp.predict import clean_sequence, predict_structures, write_structure
    run = load_run("runs/demo")
    [sp] = predict_structures(run, [clean_sequence("MKTAYIAKQR")], method="refine")
    write_structure("pred.pdb", sp, run_dir="runs/demo", model_name=run.config.get("model_name", ""))

Choices:

* Sequences are upper-cased and stripped of whitespace; one trailing ``*`` (FASTA stop) is dropped. Any
  other letter outside the 20 amino acids plus X/B/Z/U/O is an :class:`InputError` naming the record and
  the 1-based position.
* Refinement is weighted by the model's pair confidence; the hand is chosen from
  helix handedness without any native (``geometry.choose_hand``), and reported.
* Per-residue confidence written to the B-factor column is ``100 * residue_confidence`` (0–100, higher is
  better, like pLDDT).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from proteinmtp.constants import ALLOWED_AA
from proteinmtp.fileio import atomic_open
from proteinmtp.reconstruction import DEFAULT_METHOD, method_names, methods_help

if TYPE_CHECKING:  # pragma: no cover
    from proteinmtp.model import DistancePrediction, LoadedRun

logger = logging.getLogger(__name__)

HAND_RULES = ("all_residues", "predicted_helices")   # structure_from_distances(hand_rule=...)
_ALLOWED = frozenset(ALLOWED_AA)
_STEM_RE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM_LEN = 100


class InputError(ValueError):
    """Bad user input (sequence, FASTA, option); the message names the record and position."""


# ----------------------------------------------------------------------------- input

def clean_sequence(sequence: str, record: str = "sequence") -> str:
    """Upper-case ``sequence``, drop whitespace and one trailing ``*``; check every letter.

    Raises :class:`InputError` for an empty record or a letter outside ALLOWED_AA (20 amino acids + XBZUO),
    naming ``record`` and the 1-based position of the first bad letter.
    """
    seq = "".join(str(sequence).split()).upper()
    if seq.endswith("*"):
        seq = seq[:-1]
    if not seq:
        raise InputError(f"record {record!r} has an empty sequence; give at least one residue")
    for i, c in enumerate(seq):
        if c not in _ALLOWED:
            raise InputError(f"record {record!r}: invalid residue letter {c!r} at position {i + 1}; "
                             f"allowed are the 20 amino acids and X, B, Z, U, O")
    return seq


def _fasta_records(lines: Iterable[tuple[int, str]], source: str) -> Iterator[tuple[str, str]]:
    """(record id, raw sequence) from numbered text lines, one record held at a time (see parse_fasta)."""
    rid: str | None = None
    parts: list[str] = []
    n = 0
    for lineno, line in lines:
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            if rid is not None:
                yield rid, "".join(parts)
            n += 1
            header = line[1:].strip()
            rid, parts = (header.split()[0] if header else f"record_{n}"), []
        elif rid is None:
            raise InputError(f"{source}: line {lineno} has sequence text before the first '>' header; "
                             "is this a FASTA file?")
        else:
            parts.append(line)
    if rid is None:
        raise InputError(f"{source}: no FASTA record found (records start with '>')")
    yield rid, "".join(parts)


def parse_fasta(text: str, source: str = "FASTA") -> list[tuple[str, str]]:
    """(record id, raw sequence) pairs of FASTA text; the id is the header up to the first whitespace.

    Raises :class:`InputError` when there is no record or sequence text comes before the first ``>``.
    Sequences are NOT checked here (see :func:`clean_sequence`).
    """
    return list(_fasta_records(enumerate(text.removeprefix("\ufeff").splitlines(), 1), source))


def _decoded_lines(stream: IO[bytes], source: str, notes: list[str] | None) -> Iterator[tuple[int, str]]:
    """Numbered text lines of a binary stream. UTF-8 (a leading byte-order mark is dropped); UTF-16 when the
    stream starts with a UTF-16 byte-order mark; a line that is not UTF-8 is read as Latin-1 (every byte is
    one character, so a stray byte in a header is kept and one in a sequence gives the usual bad-letter
    error with its position). The first such line is reported in ``notes``."""
    import io

    if stream.read(2) in (b"\xff\xfe", b"\xfe\xff"):
        stream.seek(0)
        text = io.TextIOWrapper(stream, encoding="utf-16", newline=None)
        try:
            yield from enumerate(text, 1)
        except UnicodeDecodeError as e:
            raise InputError(f"{source}: starts with a UTF-16 byte-order mark but is not valid UTF-16 ({e})") from None
        finally:
            text.detach()
        return
    stream.seek(0)
    warned = False
    for lineno, raw in enumerate(stream, 1):
        if lineno == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.decode("latin-1")
            if not warned and notes is not None:
                notes.append(f"{source}: line {lineno} has a byte that is not UTF-8 (0x{raw[e.start]:02x}); "
                             "lines that are not UTF-8 are read as Latin-1")
            warned = True
        yield lineno, line


def iter_fasta(path: str | Path, notes: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """Records of a FASTA file (plain or gzipped), streamed: memory holds one record, never the file.

    Same records as :func:`parse_fasta` of the decoded text (encodings: :func:`_decoded_lines`). InputError
    if the file cannot be opened, or (when reached) a corrupt gzip stream or a FASTA format error; notes on
    how it was decoded are appended to ``notes``.
    """
    import gzip
    import zlib

    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below; a generator holds it while records are read
    except FileNotFoundError:
        raise InputError(f"FASTA file {path} does not exist") from None
    except OSError as e:
        raise InputError(f"cannot read FASTA file {path}: {e}") from None
    with fh:
        try:
            magic = fh.read(2)
            fh.seek(0)
            stream: IO[bytes] = gzip.GzipFile(fileobj=fh, mode="rb") if magic == b"\x1f\x8b" else fh
            yield from _fasta_records(_decoded_lines(stream, str(path), notes), str(path))
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise InputError(f"cannot read FASTA file {path}: truncated or corrupt gzip stream ({e})") from None
        except OSError as e:
            raise InputError(f"cannot read FASTA file {path}: {e}") from None


def read_fasta(path: str | Path, notes: list[str] | None = None) -> list[tuple[str, str]]:
    """Every record of a FASTA file as a list (small files; stream large ones with :func:`iter_fasta`)."""
    return list(iter_fasta(path, notes))


class RecordNamer:
    """File-name stems for record ids, one call per record in input order (the streaming form of
    :func:`record_stems`): unsafe characters → ``_``, at most 100 characters, unique (a repeated stem gets
    ``_2``, ``_3``, … in input order; compared case-insensitively, so the names are safe on
    case-insensitive file systems). Holds one short entry per stem seen (the names must stay unique over
    the whole FASTA, and every shard of it names all records the same way)."""

    def __init__(self) -> None:
        self.count = 0
        self._seen: dict[str, tuple[int, str]] = {}

    def name(self, rid: str) -> tuple[str, str | None]:
        """(stem, note): the note says when the id was renamed (record number, the record it collides with)."""
        self.count += 1
        n = self.count
        stem = _STEM_RE.sub("_", rid).strip("._")[:MAX_STEM_LEN] or "record"
        cand, k = stem, 1
        while cand.lower() in self._seen:
            k += 1
            cand = f"{stem}_{k}"
        note = None
        if k > 1:
            first, first_id = self._seen[stem.lower()]
            same = "repeats the id of" if first_id == rid else "has the same file name as"
            note = f"record {n} {rid!r} {same} record {first} {first_id!r}; its files are named {cand!r}"
        self._seen[cand.lower()] = (n, rid)
        return cand, note


def record_stems(record_ids: Iterable[str], notes: list[str] | None = None) -> list[str]:
    """File-name stems for record ids (rules: :class:`RecordNamer`). Each renaming is reported in ``notes``."""
    namer, out = RecordNamer(), []
    for rid in record_ids:
        stem, note = namer.name(rid)
        if note is not None and notes is not None:
            notes.append(note)
        out.append(stem)
    return out


MIN_LEN = 2  # a distance matrix needs at least two residues


def check_lengths(records: Sequence[tuple[str, str]], max_len: int | None) -> None:
    """InputError naming the first record shorter than 2 or longer than ``max_len`` residues (None = no limit)."""
    for rid, seq in records:
        if len(seq) < MIN_LEN:
            raise InputError(f"record {rid!r} has {len(seq)} residue; at least {MIN_LEN} are needed")
        if max_len and len(seq) > max_len:
            raise InputError(f"record {rid!r} has {len(seq)} residues; this model supports at most {max_len}")


def run_max_len(run_dir: str | Path) -> int | None:
    """Longest chain a run accepts (training_config.json ``model.max_len``), read without loading weights
    (nor torch). Accepts a run directory or one of its checkpoint-<step>/ directories. InputError when the
    directory or its config is missing or corrupt.
    """
    from proteinmtp.rundir import RunLoadError, read_run_config

    try:
        model = read_run_config(run_dir)["model"]
    except RunLoadError as e:
        raise InputError(str(e)) from None
    ml = model.get("max_len")
    return int(ml) if isinstance(ml, (int, float)) and ml > 0 else None


def run_description(config: dict) -> dict:
    """Base model id, residue layout and head type of a run, from its training_config.json content."""
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    args = config.get("args") if isinstance(config.get("args"), dict) else {}
    head = model.get("head") if isinstance(model.get("head"), dict) else {}
    return {"model_name": str(config.get("base_model") or model.get("base_model") or args.get("model_name") or ""),
            "residue_layout": config.get("layout") or model.get("layout") or args.get("residue_layout"),
            "head_type": head.get("head_type") or args.get("head_type")}


def add_prediction_arguments(group, mds_help: str) -> None:
    """The flags every script that runs a trained model shares (argparse parser or argument group):
    --mds_method, --batch_size, --device, --trust_remote_code."""
    group.add_argument("--mds_method", choices=method_names(), default=DEFAULT_METHOD,
                       help=f"{mds_help}. {methods_help()}; every one ends with the clash-resolving final stage")
    group.add_argument("--batch_size", type=int, default=1, help="sequences per forward pass (≥ 1)")
    group.add_argument("--device", default="auto",
                       help="torch device: auto (cuda if available, else cpu), cpu, cuda:0 …")
    group.add_argument("--trust_remote_code", action="store_true",
                       help="allow the backbone's own Python code from its model directory (only for backbones "
                            "you trust)")


def resolve_device(device: str, local_rank: int | None = None) -> str:
    """``--device``: "auto" is cuda when a GPU is available (``cuda:<local_rank>`` for one rank of a
    multi-process launch, so each rank has its own GPU), else cpu; anything else as given."""
    if device != "auto":
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return "cuda" if local_rank is None else f"cuda:{local_rank % max(1, torch.cuda.device_count())}"


def load_error_message(run_dir: str | Path, err: BaseException) -> str:
    """One line saying why ``run_dir`` could not be loaded (the run path is not repeated)."""
    msg = (str(err).strip().splitlines() or [type(err).__name__])[0]
    prefix = f"{run_dir}: "
    return f"cannot load run {msg}" if msg.startswith(prefix) else f"cannot load run {run_dir}: {msg}"


def quiet_transformers() -> None:
    """No transformers progress bars or info logs on stderr (a CLI's stderr is for its own messages)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


# ----------------------------------------------------------------------------- prediction

@dataclass
class StructurePrediction:
    """One predicted structure.

    ca_xyz [L, 3] Å; confidence [L] 0–100 (per residue, higher is better); distances: the model output
    (``DistancePrediction``: dist [L, L] Å, contact_prob, pair/residue confidence, distogram);
    info: reconstruction info (method, mirrored, hand_score, stress_rmse Å, bond_mean Å, seconds).
    """

    sequence: str
    ca_xyz: np.ndarray
    confidence: np.ndarray
    distances: DistancePrediction
    info: dict = field(default_factory=dict)

    @property
    def mean_confidence(self) -> float:
        return float(np.mean(self.confidence)) if len(self.confidence) else 0.0

    @property
    def hand(self) -> str:
        """Which hand reconstruction kept: "mirrored" or "as built" (MDS cannot tell; see choose_hand)."""
        return "mirrored" if self.info.get("mirrored") else "as built"


def residue_confidence_100(residue_confidence: np.ndarray) -> np.ndarray:
    """Per-residue confidence [L] in [0, 1] → [L] in [0, 100] (NaN → 0, clipped)."""
    c = np.nan_to_num(np.asarray(residue_confidence, dtype=np.float64), nan=0.0)
    return np.clip(100.0 * c, 0.0, 100.0)


def predicted_ss8(pred: DistancePrediction) -> str | None:
    """Most probable DSSP 8-state letter per residue from the model's ``ss_probs`` (None without them)."""
    probs = getattr(pred, "ss_probs", None)
    if probs is None:
        return None
    from proteinmtp.secondary import probs_to_ss8

    return probs_to_ss8(probs)


def predicted_helix_mask(pred: DistancePrediction) -> np.ndarray | None:
    """[L] bool, residues predicted H/G/I (None when the run has no secondary-structure head)."""
    ss8 = predicted_ss8(pred)
    return None if ss8 is None else np.array([c in "HGI" for c in ss8], dtype=bool)


def structure_from_distances(pred: DistancePrediction, method: str = DEFAULT_METHOD,
                             use_confidence: bool = True, hand_rule: str = "all_residues") -> StructurePrediction:
    """Rebuild coordinates from one ``DistancePrediction`` (``reconstruction.reconstruct``: "refine" = MDS →
    stress refinement, "distogram" = folding from the distogram, "classical" = MDS only; pair confidence as
    the weights; hand chosen). "distogram" on a prediction without a distogram (e.g. the coords head) falls
    back to "refine", logged, and ``info["method"]`` says which ran.

    ``hand_rule``: "all_residues" (default: ``geometry.choose_hand`` over every Cα quadruple) or
    "predicted_helices" (read the hand from the residues the secondary-structure head predicts helical, when
    there are enough). The default is the measured better one: with today's head (held-out Q3 0.46) the
    helix rule picked the better hand less often on chains whose two hands differ (0.500 vs 0.577 of 52,
    DISCUSSION.md "Secondary structure"); ``info["hand_rule"]`` says which rule decided."""
    from proteinmtp.reconstruction import reconstruct

    weights = None
    if use_confidence and pred.pair_confidence is not None:
        w = np.nan_to_num(np.asarray(pred.pair_confidence, dtype=np.float64), nan=0.0)
        weights = np.clip(w, 0.0, None)
        if not (weights > 0).any():
            weights = None
    probs, edges = getattr(pred, "distogram_probs", None), getattr(pred, "bin_edges", None)
    if hand_rule not in HAND_RULES:
        raise ValueError(f"hand_rule must be one of {', '.join(HAND_RULES)}, got {hand_rule!r}")
    helix = predicted_helix_mask(pred) if hand_rule == "predicted_helices" else None
    xyz, info = reconstruct(np.asarray(pred.dist, dtype=np.float64), weights=weights, method=method,
                            distogram=probs, bin_edges=edges, hand=helix is None)
    info["hand_rule"] = "all_residues"
    if helix is not None:  # the hand from the predicted helices' handedness (geometry.choose_hand)
        from proteinmtp.geometry import choose_hand

        xyz, h = choose_hand(xyz, helix=helix)
        info.update(mirrored=h["mirrored"], hand_score=h["score"], hand_rule=h["rule"])
    return StructurePrediction(sequence=pred.sequence, ca_xyz=xyz,
                               confidence=residue_confidence_100(pred.residue_confidence),
                               distances=pred, info=info)


def iter_predictions(run: LoadedRun, sequences: Sequence[str], *, method: str = DEFAULT_METHOD, batch_size: int = 1,
                     progress: bool = False) -> Iterator[tuple[int, StructurePrediction | Exception]]:
    """Yield (index, prediction) for ``sequences`` (already cleaned) as each structure is ready.

    A batch whose forward pass fails yields (index, exception) for each of its sequences, and a
    reconstruction that fails yields (index, exception) for that sequence; the others go on.
    KeyboardInterrupt and other BaseExceptions propagate.
    """
    from tqdm.auto import tqdm

    bs = max(1, batch_size)
    bar = tqdm(total=len(sequences), desc="predict", unit="seq", disable=not progress)
    try:
        for start in range(0, len(sequences), bs):
            chunk = list(sequences[start:start + bs])
            try:
                preds = run.predict(chunk, batch_size=len(chunk))
            except Exception as e:  # noqa: BLE001 - reported per sequence by the caller
                for k in range(len(chunk)):
                    bar.update(1)
                    yield start + k, e
                continue
            for k, dp in enumerate(preds):
                try:
                    res: StructurePrediction | Exception = structure_from_distances(dp, method=method)
                except Exception as e:  # noqa: BLE001
                    res = e
                bar.update(1)
                yield start + k, res
    finally:
        bar.close()


def predict_structures(run: LoadedRun, sequences: Sequence[str], *, method: str = DEFAULT_METHOD,
                       batch_size: int = 1, progress: bool = False,
                       on_result: Callable[[int, StructurePrediction], None] | None = None
                       ) -> list[StructurePrediction]:
    """Predict distances for ``sequences`` (already cleaned) in batches, then rebuild each structure.

    ``on_result(index, prediction)`` is called as each structure is ready (e.g. to write it at once).
    The first failure is raised (see :func:`iter_predictions` to go on past failures).
    """
    out: list[StructurePrediction] = []
    for i, sp in iter_predictions(run, sequences, method=method, batch_size=batch_size, progress=progress):
        if isinstance(sp, Exception):
            raise sp
        out.append(sp)
        if on_result is not None:
            on_result(i, sp)
    return out


# ----------------------------------------------------------------------------- output

def structure_remarks(sp: StructurePrediction, *, run_dir: str | Path = "", model_name: str = "",
                      record_id: str = "") -> list[str]:
    """REMARK text for an output structure: model, run, record, hand chosen, mean confidence, predicted
    TM-score (``confidence.predicted_tm``, when the model predicts pair error classes)."""
    from proteinmtp.confidence import predicted_tm

    rem = []
    if record_id:
        rem.append(f"RECORD {record_id}")
    rem.append(f"MODEL {model_name or 'unknown'}")
    if run_dir:
        rem.append(f"RUN {Path(run_dir).resolve().name}")
    rem.append(f"HAND {sp.hand.upper()} (HELIX-HANDEDNESS SCORE {float(sp.info.get('hand_score', 0.0)):+.2f}; "
               "MDS CANNOT TELL MIRROR IMAGES APART)")
    if sp.info.get("hand_rule"):
        rem.append(f"HAND RULE {str(sp.info['hand_rule']).upper().replace('_', ' ')}")
    rem.append(f"MEAN CONFIDENCE {sp.mean_confidence:.1f} (0-100)")
    ptm = predicted_tm(getattr(sp.distances, "pair_error_probs", None))
    if ptm is not None:
        rem.append(f"PREDICTED TM-SCORE {ptm:.3f} (PTM FROM PAIR DISTANCE ERRORS; BLIND TO THE HAND)")
    if "stress_rmse" in sp.info:
        rem.append(f"DISTANCE FIT RMSE {sp.info['stress_rmse']:.2f} A")
    return rem


def write_structure(path: str | Path, sp: StructurePrediction, *, fmt: str = "pdb", run_dir: str | Path = "",
                    model_name: str = "", record_id: str = "") -> Path:
    """Write a Cα-trace PDB or mmCIF (``fmt``), confidence 0–100 in the B-factor column, REMARKs, and
    HELIX/SHEET records (mmCIF: _struct_conf/_struct_sheet_range) of the predicted secondary structure when
    the run has a secondary-structure head."""
    from proteinmtp.structure import write_trace

    path = Path(path)
    write_trace(path, sp.ca_xyz, sp.sequence, fmt=fmt, bfactors=sp.confidence, ss8=predicted_ss8(sp.distances),
                model_name=model_name or "proteinmtp", method=f"{sp.info.get('method', '?')} MDS + hand choice",
                remarks=structure_remarks(sp, run_dir=run_dir, model_name=model_name, record_id=record_id))
    return path


def save_distmat(path: str | Path, sp: StructurePrediction) -> Path:
    """Save the predicted distance matrix [L, L] float32 Å as .npy (atomic)."""
    path = Path(path)
    dist = np.asarray(sp.distances.dist, dtype=np.float32)
    with atomic_open(path, "wb") as fh:
        np.save(fh, dist)
    return path


def save_distogram(path: str | Path, sp: StructurePrediction) -> Path:
    """Save distogram and confidences as .npz (atomic).

    Arrays: dist [L, L] Å, distogram_probs [L, L, n_bins] float16 (if the model has a distogram), bin_edges
    [n_bins - 1] Å, contact_prob [L, L], pair_confidence [L, L] 0–1, residue_confidence [L] 0–1, sequence;
    when the model predicts pair error classes also pair_error_probs [L, L, 5] float16 (|pred − true| <
    0.5, 1, 2, 4, ≥ 4 Å) and ptm (a scalar, ``confidence.predicted_tm``).
    """
    from proteinmtp.confidence import predicted_tm

    dp = sp.distances
    arrays: dict[str, np.ndarray] = {
        "sequence": np.array(sp.sequence),
        "dist": np.asarray(dp.dist, dtype=np.float32),
        "contact_prob": np.asarray(dp.contact_prob, dtype=np.float32),
        "pair_confidence": np.asarray(dp.pair_confidence, dtype=np.float32),
        "residue_confidence": np.asarray(dp.residue_confidence, dtype=np.float32),
    }
    if getattr(dp, "distogram_probs", None) is not None:
        arrays["distogram_probs"] = np.asarray(dp.distogram_probs, dtype=np.float16)  # halves the file
    if getattr(dp, "bin_edges", None) is not None:
        arrays["bin_edges"] = np.asarray(dp.bin_edges, dtype=np.float32)
    if getattr(dp, "pair_error_probs", None) is not None:
        arrays["pair_error_probs"] = np.asarray(dp.pair_error_probs, dtype=np.float16)
        arrays["ptm"] = np.array(predicted_tm(dp.pair_error_probs), dtype=np.float64)
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def existing_structure_mismatch(path: str | Path, sequence: str) -> str | None:
    """Why the structure file ``path`` (written by an earlier run) does not hold ``sequence``; None when
    it does. Lengths must agree, and letters wherever ``sequence`` has one of the 20 standard amino acids
    (X, B, Z, U, O are written as UNK, ASX, GLX, SEC, PYL and may read back as X)."""
    from proteinmtp.constants import STANDARD_AA
    from proteinmtp.structure import StructureReadError, read_structure

    try:
        chains = read_structure(path)
    except StructureReadError as e:
        return f"unreadable ({str(e).removeprefix(f'{path}: ')})"
    got = "".join(c.sequence for c in chains)
    if len(got) != len(sequence):
        return f"holds {len(got)} residues, not {len(sequence)}"
    for i, (a, b) in enumerate(zip(sequence, got)):
        if a in STANDARD_AA and a != b:
            return f"holds another sequence ({b!r} at position {i + 1}, not {a!r})"
    return None


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON line to ``path`` with a single ``write`` on a file opened for appending, so a row
    is added whole (an earlier run's rows are kept; an interrupted run leaves every finished row)."""
    import json
    import os

    data = (json.dumps(row, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- at scale: shards, batches, workers

@dataclass(frozen=True)
class Shard:
    """Which records of a FASTA this process predicts: record number n (1-based position in the file)
    belongs to shard ``(n - 1) % count``. Stable: it depends on the position only, never on the content,
    the lengths or what is already written. ``local_rank``: this process's rank on its node under a
    multi-process launcher (None otherwise)."""

    index: int = 0
    count: int = 1
    local_rank: int | None = None

    def holds(self, number: int) -> bool:
        return (number - 1) % self.count == self.index

    @property
    def label(self) -> str:
        """``shard-I-of-K`` (empty when there is a single shard)."""
        return "" if self.count == 1 else f"shard-{self.index}-of-{self.count}"


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"environment variable {name}={raw!r} is not an integer") from None


def resolve_shard(num_shards: int = 1, shard_index: int = 0, environ: Mapping[str, str] | None = None) -> Shard:
    """The shard of this process, from ``--num_shards K --shard_index I`` and the launcher's environment.

    Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` W > 1, ``RANK`` R, ``LOCAL_RANK``) each rank
    takes its share of shard I: shard ``I + K·R`` of ``K·W``, which holds exactly the records n of shard I
    (``(n-1) % K == I``) with ``((n-1) // K) % W == R``. So a job array of K tasks, each launching W ranks,
    covers every record once. InputError for an index outside 0..K-1 or a malformed environment.
    """
    import os

    env = os.environ if environ is None else environ
    if num_shards < 1:
        raise InputError(f"--num_shards must be ≥ 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise InputError(f"--shard_index must be in 0..{num_shards - 1} (--num_shards {num_shards}), got {shard_index}")
    world = _env_int(env, "WORLD_SIZE", 1)
    if world <= 1:
        return Shard(shard_index, num_shards)
    rank = _env_int(env, "RANK", 0)
    if not 0 <= rank < world:
        raise InputError(f"environment: RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    return Shard(shard_index + num_shards * rank, num_shards * world, local_rank=_env_int(env, "LOCAL_RANK", rank))


def length_batches(lengths: Sequence[int], batch_size: int, max_residues2: int | None = None) -> list[list[int]]:
    """Indices into ``lengths`` grouped into forward passes, shortest first (ties in input order).

    A batch holds at most ``batch_size`` sequences and, with ``max_residues2``, at most that many padded
    pair positions: (sequences in the batch) × (its longest length)², the size of the [B, L, L] pair
    tensors the head builds. A sequence that alone exceeds the budget is a batch of its own.
    """
    bs = max(1, int(batch_size))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: lengths[k]):
        n = len(cur) + 1
        if cur and (n > bs or (max_residues2 is not None and n * lengths[i] ** 2 > max_residues2)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


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
    from types import SimpleNamespace

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


def _worker_init(parent_pid: int) -> None:
    """A reconstruction worker: Ctrl-C is the parent's to handle (it lets the records in flight finish);
    on Linux the worker ends when its parent dies (even by SIGKILL); one BLAS thread per worker."""
    import os
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover
            pass
    if os.getppid() != parent_pid:  # the parent is already gone
        os._exit(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    except ImportError:  # pragma: no cover
        pass


class WorkerDied(RuntimeError):
    """A reconstruction worker process ended while it held this record (killed, out of memory, crashed)."""


class RecordPool:
    """Runs :func:`finish_record` for submitted jobs: in this process (``workers`` = 1, at submit time) or in
    ``workers`` spawned processes, so the next forward pass runs while the CPU reconstructs.

    Results come back as (key, info dict or Exception) in completion order. An exception in a worker fails
    that record only. A worker process that dies (killed, out of memory) fails the records it and its
    siblings held with :class:`WorkerDied` (nothing of theirs was written half: files are atomic); the
    pool starts new processes for the records after. Workers spawn (no fork of a process holding CUDA or
    model weights) and never import torch.
    """

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))
        self._pending: dict = {}          # future -> key
        self._ready: list[tuple[int, object]] = []
        self._ex = None

    def _executor(self):
        if self._ex is None:
            import multiprocessing
            import os
            from concurrent.futures import ProcessPoolExecutor

            self._ex = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_worker_init, initargs=(os.getpid(),))
        return self._ex

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(self, job: RecordJob) -> None:
        if self.workers == 1:
            try:
                res: object = finish_record(job)
            except Exception as e:  # noqa: BLE001 - reported for this record by the caller
                res = e
            self._ready.append((job.key, res))
            return
        if not isinstance(job.prediction, dict):
            job.prediction = dict(vars(job.prediction))
        try:
            fut = self._executor().submit(finish_record, job)
        except RuntimeError:  # BrokenProcessPool (a RuntimeError): start fresh processes
            self._drop_executor()
            fut = self._executor().submit(finish_record, job)
        self._pending[fut] = job.key

    def results(self, wait_until: int | None = None) -> Iterator[tuple[int, object]]:
        """Finished results; with ``wait_until`` n, block until at most n jobs are still in flight."""
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        while self._ready:
            yield self._ready.pop(0)
        while self._pending:
            done = [f for f in self._pending if f.done()]
            if not done:
                if wait_until is None or len(self._pending) <= wait_until:
                    return
                done, _ = wait(list(self._pending), return_when=FIRST_COMPLETED)
            for f in done:
                key = self._pending.pop(f)
                try:
                    res: object = f.result()
                except BrokenProcessPool as e:
                    self._drop_executor()
                    res = WorkerDied(f"the reconstruction worker process died ({e}); rerun to retry this record")
                except Exception as e:  # noqa: BLE001
                    res = e
                yield key, res

    def _drop_executor(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=False, cancel_futures=True)
            self._ex = None

    def cancel_waiting(self) -> int:
        """Drop the jobs no worker has started (they stay unfinished: a rerun does them); returns how many."""
        dropped = [f for f in self._pending if f.cancel()]
        for f in dropped:
            del self._pending[f]
        return len(dropped)

    def close(self, wait: bool = True) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=wait, cancel_futures=True)
            self._ex = None
