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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from proteinmtp.constants import ALLOWED_AA
from proteinmtp.fileio import atomic_open
from proteinmtp.geometry import DEFAULT_METHOD
from proteinmtp.geometry import METHODS as RECONSTRUCTION_METHODS

if TYPE_CHECKING:  # pragma: no cover
    from proteinmtp.model import DistancePrediction, LoadedRun

logger = logging.getLogger(__name__)
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


def parse_fasta(text: str, source: str = "FASTA") -> list[tuple[str, str]]:
    """(record id, raw sequence) pairs of FASTA text; the id is the header up to the first whitespace.

    Raises :class:`InputError` when there is no record or sequence text comes before the first ``>``.
    Sequences are NOT checked here (see :func:`clean_sequence`).
    """
    records: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            header = line[1:].strip()
            rid = header.split()[0] if header else f"record_{len(records) + 1}"
            records.append((rid, []))
        elif not records:
            raise InputError(f"{source}: line {lineno} has sequence text before the first '>' header; "
                             "is this a FASTA file?")
        else:
            records[-1][1].append(line)
    if not records:
        raise InputError(f"{source}: no FASTA record found (records start with '>')")
    return [(rid, "".join(parts)) for rid, parts in records]


def decode_text(raw: bytes, source: str, notes: list[str] | None = None) -> str:
    """Text of a file's bytes: UTF-8 (a leading byte-order mark is dropped), UTF-16 when it starts with a
    UTF-16 byte-order mark; bytes that are not UTF-8 are read as Latin-1 (every byte is one character, so a
    stray byte in a header is kept, and one in a sequence gives the usual bad-letter error with its position).
    The Latin-1 fallback is reported in ``notes`` with the line of the first non-UTF-8 byte."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as e:
            raise InputError(f"{source}: starts with a UTF-16 byte-order mark but is not valid UTF-16 ({e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        if notes is not None:
            notes.append(f"{source}: line {line} has a byte that is not UTF-8 (0x{raw[e.start]:02x}); "
                         "the file was read as Latin-1")
        return raw.removeprefix(b"\xef\xbb\xbf").decode("latin-1")


def read_fasta(path: str | Path, notes: list[str] | None = None) -> list[tuple[str, str]]:
    """Records of a FASTA file, plain or gzipped (see :func:`parse_fasta`; encodings: :func:`decode_text`).

    InputError if it cannot be read. Notes on how it was decoded are appended to ``notes``.
    """
    from proteinmtp.fileio import read_bytes

    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        raise InputError(f"FASTA file {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read FASTA file {path}: {e}") from None
    return parse_fasta(decode_text(raw, str(path), notes), source=str(path))


def record_stems(record_ids: Sequence[str], notes: list[str] | None = None) -> list[str]:
    """File-name stems for record ids: unsafe characters → ``_``, at most 100 characters, unique
    (a repeated stem gets ``_2``, ``_3``, … in input order; compared case-insensitively, so the names are
    safe on case-insensitive file systems). Each renaming is reported in ``notes`` (record number, id,
    the record it collides with, the stem used)."""
    out, seen = [], {}
    for n, rid in enumerate(record_ids, 1):
        stem = _STEM_RE.sub("_", rid).strip("._")[:MAX_STEM_LEN] or "record"
        cand, k = stem, 1
        while cand.lower() in seen:
            k += 1
            cand = f"{stem}_{k}"
        if k > 1 and notes is not None:
            first, first_id = seen[stem.lower()]
            same = "repeats the id of" if first_id == rid else "has the same file name as"
            notes.append(f"record {n} {rid!r} {same} record {first} {first_id!r}; its files are named {cand!r}")
        seen[cand.lower()] = (n, rid)
        out.append(cand)
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
    group.add_argument("--mds_method", choices=RECONSTRUCTION_METHODS, default=DEFAULT_METHOD, help=mds_help)
    group.add_argument("--batch_size", type=int, default=1, help="sequences per forward pass (≥ 1)")
    group.add_argument("--device", default="auto",
                       help="torch device: auto (cuda if available, else cpu), cpu, cuda:0 …")
    group.add_argument("--trust_remote_code", action="store_true",
                       help="allow the backbone's own Python code from its model directory (only for backbones "
                            "you trust)")


def resolve_device(device: str) -> str:
    """``--device``: "auto" is cuda when a GPU is available, else cpu; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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


def structure_from_distances(pred: DistancePrediction, method: str = DEFAULT_METHOD,
                             use_confidence: bool = True) -> StructurePrediction:
    """Rebuild coordinates from one ``DistancePrediction`` (``geometry.reconstruct``: "refine" = MDS →
    stress refinement, "distogram" = folding from the distogram, "classical" = MDS only; pair confidence as
    the weights; hand chosen). "distogram" on a prediction without a distogram (e.g. the coords head) falls
    back to "refine", logged, and ``info["method"]`` says which ran."""
    from proteinmtp.geometry import reconstruct

    weights = None
    if use_confidence and pred.pair_confidence is not None:
        w = np.nan_to_num(np.asarray(pred.pair_confidence, dtype=np.float64), nan=0.0)
        weights = np.clip(w, 0.0, None)
        if not (weights > 0).any():
            weights = None
    probs, edges = getattr(pred, "distogram_probs", None), getattr(pred, "bin_edges", None)
    if method == "distogram" and (probs is None or edges is None):
        logger.info("the prediction has no distogram (a head without one, e.g. coords): reconstructing with "
                    "'refine' instead of 'distogram'")
    xyz, info = reconstruct(np.asarray(pred.dist, dtype=np.float64), weights=weights, method=method,
                            distogram=probs, bin_edges=edges)
    return StructurePrediction(sequence=pred.sequence, ca_xyz=xyz,
                               confidence=residue_confidence_100(pred.residue_confidence),
                               distances=pred, info=info)


def iter_predictions(run: LoadedRun, sequences: Sequence[str], *, method: str = "refine", batch_size: int = 1,
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


def predict_structures(run: LoadedRun, sequences: Sequence[str], *, method: str = "refine",
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
    """REMARK text for an output structure: model, run, record, hand chosen, mean confidence."""
    rem = []
    if record_id:
        rem.append(f"RECORD {record_id}")
    rem.append(f"MODEL {model_name or 'unknown'}")
    if run_dir:
        rem.append(f"RUN {Path(run_dir).resolve().name}")
    rem.append(f"HAND {sp.hand.upper()} (HELIX-HANDEDNESS SCORE {float(sp.info.get('hand_score', 0.0)):+.2f}; "
               "MDS CANNOT TELL MIRROR IMAGES APART)")
    rem.append(f"MEAN CONFIDENCE {sp.mean_confidence:.1f} (0-100)")
    if "stress_rmse" in sp.info:
        rem.append(f"DISTANCE FIT RMSE {sp.info['stress_rmse']:.2f} A")
    return rem


def write_structure(path: str | Path, sp: StructurePrediction, *, fmt: str = "pdb", run_dir: str | Path = "",
                    model_name: str = "", record_id: str = "") -> Path:
    """Write a Cα-trace PDB or mmCIF (``fmt``), confidence 0–100 in the B-factor column, REMARKs."""
    from proteinmtp.structure import write_trace

    path = Path(path)
    write_trace(path, sp.ca_xyz, sp.sequence, fmt=fmt, bfactors=sp.confidence,
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
    [n_bins - 1] Å, contact_prob [L, L], pair_confidence [L, L] 0–1, residue_confidence [L] 0–1, sequence.
    """
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
