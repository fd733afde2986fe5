"""The checks a sharded dataset (proteinmtp.shards) passes whenever it is opened, and the fixed-point codes
they check: the schema of each shard entry of the index (counts, files as plain names inside the directory,
field specs), and every stored value of a shard in vectorised passes (offsets, letters, coordinate rows,
float arrays, metadata framing). Every failure is a DatasetFormatError naming the file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from proteinmtp.constants import ALLOWED_AA
from proteinmtp.dataset import COORD_LIMIT, DatasetFormatError
from proteinmtp.secondary import NO_STATE, SS8

COORD_SCALE = 1000.0                       # 1e-3 Å, the JSON's (and PDB's) precision
COORD_MISSING = np.iinfo(np.int32).min     # a missing (NaN) row
COORD_NEG_ZERO = COORD_MISSING + 1         # -0.0 Å (JSON writes "-0.0"; the integer 0 would lose the sign)
COORD_LIMIT_K = int(COORD_LIMIT * COORD_SCALE)
FIELD_KINDS = ("coords", "array", "chars", "json", "internal")
INTERNAL_FIELDS = ("offsets", "meta", "meta_offsets")
_CHUNK_ROWS = 1 << 22                      # rows per vectorised check (bounds the temporaries to ~50 MB)


def is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def check_entry(entry: Any, k: int, f: Path, directory: Path) -> None:
    """Schema of one shard entry of the index (DatasetFormatError naming the index and the entry)."""
    where = f"{f}: shards[{k}]"
    if not isinstance(entry, dict):
        raise DatasetFormatError(f"{where}: must be a JSON object, got {type(entry).__name__}")
    for key in ("n_samples", "n_residues"):
        if not is_count(entry.get(key)):
            raise DatasetFormatError(f"{where}: {key} is {entry.get(key)!r}, not a count (integer >= 0)")
    files, fields = entry.get("files"), entry.get("fields")
    if not isinstance(files, dict):
        raise DatasetFormatError(f"{where}: 'files' is missing or not an object")
    if not isinstance(fields, dict):
        raise DatasetFormatError(f"{where}: 'fields' is missing or not an object")
    for name, info in files.items():
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\0" in name:
            raise DatasetFormatError(f"{where}: file name {name!r} is not a plain name inside {directory} "
                                     "(no directories, absolute paths or '..')")
        resolved = (directory / name).resolve()
        if resolved.parent != directory.resolve():
            raise DatasetFormatError(f"{where}: file {name!r} resolves to {resolved}, outside {directory}")
        if not isinstance(info, dict) or not is_count(info.get("bytes")) or not isinstance(info.get("sha256"), str):
            raise DatasetFormatError(f"{where}: files[{name!r}] needs 'bytes' (integer >= 0) and 'sha256'")
    for name in (*INTERNAL_FIELDS, "sequence", "ca"):
        if name not in fields:
            raise DatasetFormatError(f"{where}: field {name!r} is missing")
    for name, spec in fields.items():
        if not isinstance(spec, dict) or spec.get("kind") not in FIELD_KINDS:
            raise DatasetFormatError(f"{where}: field {name!r} needs a 'kind' of {list(FIELD_KINDS)}")
        if spec["kind"] == "json":
            continue
        shape = spec.get("shape")
        if spec.get("file") not in files or not isinstance(spec.get("dtype"), str) or not (
                isinstance(shape, list) and shape and all(is_count(n) for n in shape)):
            raise DatasetFormatError(f"{where}: field {name!r} needs 'file' (one of 'files'), 'dtype' and 'shape'")
    if fields["ca"]["kind"] != "coords" or any(fields[n]["kind"] != "internal" for n in INTERNAL_FIELDS):
        raise DatasetFormatError(f"{where}: fields 'ca' and {list(INTERNAL_FIELDS)} have the wrong kind")


def _lut(alphabet: str) -> np.ndarray:
    t = np.zeros(256, bool)
    t[np.frombuffer(alphabet.encode("ascii"), np.uint8)] = True
    return t


_SEQ_OK, _SS8_OK = _lut(ALLOWED_AA), _lut(SS8 + NO_STATE + "\0")     # \0: an absent ss8 (see "_absent")


def _first_bad(ok_rows: Iterator[tuple[int, np.ndarray]]) -> int | None:
    for start, ok in ok_rows:
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def _chunks(a: np.ndarray, fn) -> Iterator[tuple[int, np.ndarray]]:
    for i in range(0, len(a), _CHUNK_ROWS):
        yield i, fn(np.asarray(a[i:i + _CHUNK_ROWS]))


_BAND = np.uint32(-COORD_LIMIT_K - (COORD_NEG_ZERO + 1))      # see _coord_rows_ok


def _coord_rows_ok(k: np.ndarray) -> np.ndarray:
    """[n] bool per row of int32 [n, 3] codes: all missing, or each a value within ±COORD_LIMIT_K or -0.0
    (COORD_MISSING and COORD_NEG_ZERO are the two smallest int32 values). Fast path, three passes over the
    values: max <= limit, and no value in (NEG_ZERO, -limit): shifted by NEG_ZERO + 1 (int32 wrap-around)
    and read as uint32, those are exactly the values below _BAND; plus the missing-row test on the columns."""
    flat = k.reshape(-1)
    shifted = (flat - np.int32(COORD_NEG_ZERO + 1)).view(np.uint32)
    m0 = k[:, 0] == COORD_MISSING
    mixed = (m0 != (k[:, 1] == COORD_MISSING)) | (m0 != (k[:, 2] == COORD_MISSING))
    if not len(flat) or (flat.max() <= COORD_LIMIT_K and shifted.min() >= _BAND and not mixed.any()):
        return np.ones(len(k), bool)
    bad = (flat > COORD_LIMIT_K) | ((flat < -COORD_LIMIT_K) & (flat > COORD_NEG_ZERO))
    return ~(bad.reshape(k.shape).any(axis=1) | mixed)


def check_shard(directory: Path, entry: dict, got: dict[str, np.ndarray]) -> None:
    """Offsets and every stored value of one shard, vectorised (DatasetFormatError naming the file)."""
    fields = entry["fields"]

    def fail(name: str, msg: str):
        raise DatasetFormatError(f"{directory / fields[name]['file']}: {msg} (corrupt shard); convert the dataset again")

    n, R = entry["n_samples"], entry["n_residues"]
    off, moff, meta = np.asarray(got["offsets"]), np.asarray(got["meta_offsets"]), got["meta"]
    if off.shape != (n + 1,) or off.dtype.kind != "i" or moff.shape != (n + 1,) or moff.dtype.kind != "i":
        fail("offsets", f"offsets must be {n + 1} integers (n_samples + 1)")
    if off[0] != 0 or off[-1] != R or not (np.diff(off) > 0).all():
        fail("offsets", f"offsets must rise strictly from 0 to n_residues = {R} (every sample >= 1 residue)")
    if moff[0] != 0 or moff[-1] != len(meta) or not (np.diff(moff) >= 2).all():
        fail("meta_offsets", f"metadata offsets must rise from 0 to the blob's {len(meta)} bytes")
    if n and not ((np.asarray(meta[moff[:-1]]) == ord("{")) & (np.asarray(meta[moff[1:] - 1]) == ord("}"))).all():
        fail("meta", "a sample's metadata is not a JSON object")
    for name, spec in fields.items():
        if spec["kind"] in ("json", "internal"):
            continue
        a = got[name]
        if len(a) != R:
            fail(name, f"{len(a)} rows for {R} residues")
        if spec["kind"] == "coords":
            if a.dtype != np.int32 or a.shape[1:] != (3,):
                fail(name, f"coordinates must be int32 [R, 3], not {a.dtype} {list(a.shape)}")
            bad = _first_bad(_chunks(a, _coord_rows_ok))
            if bad is not None:
                fail(name, f"residue row {bad} is {np.asarray(a[bad]).tolist()} (1e-3 Å): coordinates must be "
                           f"within ±{COORD_LIMIT:g} Å, a missing row missing in x, y and z")
        elif spec["kind"] == "chars":
            if a.dtype != np.uint8 or a.ndim != 1:
                fail(name, f"letters must be uint8 [R], not {a.dtype} {list(a.shape)}")
            lut = _SEQ_OK if name == "sequence" else _SS8_OK if name == "ss8" else None
            bad = None if lut is None else _first_bad(_chunks(a, lut.__getitem__))
            if bad is not None:
                fail(name, f"residue row {bad} holds byte {int(a[bad])}, not a letter of the {name} alphabet")
        elif a.dtype.kind in "fc":
            bad = _first_bad(_chunks(a, lambda x: ~np.isinf(x).reshape(len(x), -1).any(axis=1)))
            if bad is not None:
                fail(name, f"residue row {bad} holds an infinite value")
