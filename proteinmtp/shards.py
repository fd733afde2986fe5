"""The sharded binary dataset format: numpy shards plus a JSON index, read by memory map.

JSON (``proteinmtp.dataset``) stays the interchange format for small sets; this one is for corpora
where every torchrun rank (and every DataLoader worker) would otherwise parse and hold the whole split.
The arrays are opened with ``np.load(mmap_mode="r")``: the pages live in the OS page cache, once per
machine, and processes map them instead of copying them. Nothing is pickled (``allow_pickle=False``).

Layout of a dataset directory (``train.shards/``; written under a temporary name and renamed)::

    index.json             {"format": "proteinmtp-shards/1", "sample_format": "proteinmtp-dataset/1",
                            "config": {...}, "global_stats": {...}, "n_samples": N, "n_residues": R,
                            "shards": [{"n_samples", "n_residues", "fields": {name: {"kind", "dtype",
                                        "shape"}}, "files": {file: {"bytes", "sha256"}}}, ...]}
    00000.offsets.npy      int64 [n + 1]   first residue row of each sample in this shard
    00000.ca.npy           int32 [r, 3]    Cα in 1e-3 Å (fixed point), INT32_MIN = missing row
    00000.cb.npy           int32 [r, 3]    Cβ, same encoding
    00000.sequence.npy     uint8 [r]       one ASCII letter per residue
    00000.<field>.npy      any other per-residue field of Sample (``ss8``: uint8 letters; arrays: own dtype)
    00000.meta.npy         uint8 blob      one JSON object per sample: the other fields (id, residue_ids,
    00000.meta_offsets.npy int64 [n + 1]   source, split, breaks, cluster, ...) and "_absent": the
                                           per-residue fields that are None for this sample

Fields are taken from the ``Sample`` dataclass generically, per shard (``kind``): ``coords`` (``ca``,
``cb``), ``array`` (any other ndarray field with L rows, stored in its own dtype), ``chars`` (a string
field with one ASCII character per residue: ``sequence``, ``ss8``) and ``json`` (everything else), so a
field added to Sample comes through without a change here. Coordinates keep the JSON's precision
exactly: JSON rounds to 1e-3 Å and stores k/1000; this stores k as int32 and decodes k / 1000.0, the
same float64, so JSON -> binary -> JSON is byte-identical (4 bytes a coordinate, as float32, but exact).

A coordinate of -0.0 Å (what JSON writes for a value in (-0.0005, 0)) is stored as ``COORD_NEG_ZERO`` so
that it comes back as -0.0, not 0.0: the JSON -> binary -> JSON round trip is byte-identical.

Shards hold whole samples and at most ``shard_mb`` MB (a single larger sample gets a shard of its own).
Opening (:func:`open_shards`, cheap and always; the checks are proteinmtp.shardcheck) checks the index schema and version, that every file is a
plain name inside the directory and has the size, dtype and shape the index says, that the offsets start
at 0, increase strictly (no empty sample) and end at the arrays' lengths, and every stored value with
vectorised passes: sequence and ss8 letters in their alphabets, every coordinate row missing or within
±COORD_LIMIT Å, float arrays without ±inf, each sample's metadata a JSON object. A Sample is checked in
full (:func:`proteinmtp.dataset.check_sample`) when it is built; :func:`verify` also checks the SHA-256
of every file, builds and checks every sample, and that the ids are unique. Every failure is one line
(DatasetFormatError) naming the file. The writer checks every sample before it writes.

Read either format through ``proteinmtp.dataio.open_dataset``; convert and verify with
``python -m proteinmtp.dataio convert|verify``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from proteinmtp.constants import DATASET_FORMAT
from proteinmtp.dataset import (
    COORD_LIMIT,
    DatasetFormatError,
    DistMatDataset,
    Sample,
    SampleFieldError,
    _parse_format,
    check_header,
    check_unique_ids,
    sample_error,
)
from proteinmtp.fileio import atomic_write, umask_mode
from proteinmtp.shardcheck import (
    COORD_LIMIT_K,
    COORD_MISSING,
    COORD_NEG_ZERO,
    COORD_SCALE,
    check_entry,
    check_shard,
    is_count,
)

SHARDS_FORMAT = "proteinmtp-shards/1"
INDEX_NAME = "index.json"
DEFAULT_SHARD_MB = 256.0
COORD_FIELDS = ("ca", "cb")
SCALAR_FIELDS = ("id", "source", "split", "cluster")   # strings that are never per-residue
_NAME, _, _VERSION = SHARDS_FORMAT.partition("/")


def is_shards(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a sharded dataset (its index.json)."""
    return (Path(path) / INDEX_NAME).is_file()


# ----------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------
class _HashingWriter:
    """A binary file that hashes what is written to it (np.save writes through ``write``)."""

    def __init__(self, path: Path):
        self.fh = open(path, "wb")
        self.sha = hashlib.sha256()
        self.n = 0

    def write(self, b) -> int:
        self.sha.update(b)
        self.n += len(b)
        return self.fh.write(b)

    def close(self) -> dict:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return {"bytes": self.n, "sha256": self.sha.hexdigest()}


def _encode_coords(xyz: np.ndarray, where: str) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{where}: coordinates must be [L, 3], got shape {xyz.shape}")
    missing = np.isnan(xyz).any(axis=1)
    k = np.rint(np.where(missing[:, None], 0.0, xyz) * COORD_SCALE)   # = np.round(x, 3) * 1000, as JSON
    if np.abs(k).max(initial=0) > COORD_LIMIT_K:
        raise ValueError(f"{where}: a coordinate beyond ±{COORD_LIMIT:g} Å cannot be stored")
    out = k.astype(np.int32)
    out[(k == 0) & np.signbit(k)] = COORD_NEG_ZERO
    out[missing] = COORD_MISSING
    return out


def _decode_coords(raw: np.ndarray) -> np.ndarray:
    out = raw / COORD_SCALE                      # float64, correctly rounded: the JSON's value
    out[raw == COORD_NEG_ZERO] = -0.0
    out[raw[:, 0] == COORD_MISSING] = np.nan
    return out


def _is_chars(v: Any, L: int) -> bool:
    return isinstance(v, str) and len(v) == L and v.isascii()


def _field_kinds(samples: list[Sample]) -> dict[str, str]:
    """Per field of the samples' dataclass: coords | array | chars | json (see the module docstring)."""
    kinds = {}
    for f in dataclasses.fields(type(samples[0])):
        vals = [(getattr(s, f.name), len(s.sequence)) for s in samples]
        present = [(v, L) for v, L in vals if v is not None]
        if f.name in COORD_FIELDS:
            kinds[f.name] = "coords"
        elif f.name != "sequence" and (f.name in SCALAR_FIELDS or not present):
            kinds[f.name] = "json"
        elif present and all(isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == L for v, L in present):
            tails = {v.shape[1:] for v, _ in present}
            kinds[f.name] = "array" if len(tails) == 1 else "json"
        elif present and all(_is_chars(v, L) for v, L in present):
            kinds[f.name] = "chars"
        else:
            kinds[f.name] = "json"
        if kinds[f.name] == "json" and any(isinstance(v, np.ndarray) for v, _ in present):
            raise ValueError(f"field {f.name!r}: arrays must have one row per residue to be stored")
    return kinds


def _sample_bytes(s: Sample) -> int:
    """Rough stored size of one sample (to bound the shard size)."""
    L = len(s.sequence)
    n = 8 + 40 + len(s.id) + len(s.source) + 6 * L          # offsets, metadata (residue_ids ~6 B each)
    for f in dataclasses.fields(s):
        v = getattr(s, f.name)
        if isinstance(v, np.ndarray):
            n += 12 * L if f.name in COORD_FIELDS else v.nbytes
        elif isinstance(v, str) and f.name not in SCALAR_FIELDS:
            n += len(v)
    return n


def _dir_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def _json_default(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


def _write_shard(tmp: Path, number: int, samples: list[Sample]) -> dict:
    kinds = _field_kinds(samples)
    if kinds["sequence"] != "chars":
        raise ValueError("sequences must be ASCII letters")
    lengths = np.array([len(s.sequence) for s in samples], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    R = int(offsets[-1])
    arrays: dict[str, np.ndarray] = {"offsets": offsets}
    metas: list[dict] = []
    for s in samples:
        m: dict[str, Any] = {}
        absent = []
        for name, kind in kinds.items():
            v = getattr(s, name)
            if kind == "json":
                m[name] = v
            elif v is None:
                absent.append(name)
        if absent:
            m["_absent"] = absent
        metas.append(m)
    for name, kind in kinds.items():
        if kind == "json":
            continue
        vals = [getattr(s, name) for s in samples]
        if kind == "coords":
            parts = [_encode_coords(v, f"sample {s.id!r} {name!r}") if v is not None
                     else np.full((len(s.sequence), 3), COORD_MISSING, np.int32) for v, s in zip(vals, samples)]
            for p, s in zip(parts, samples):
                if len(p) != len(s.sequence):
                    raise ValueError(f"sample {s.id!r}: {len(s.sequence)} residues but {len(p)} {name!r} rows")
            arrays[name] = np.concatenate(parts) if parts else np.zeros((0, 3), np.int32)
        elif kind == "chars":
            arrays[name] = np.frombuffer("".join(v if v is not None else "\0" * len(s.sequence)
                                                 for v, s in zip(vals, samples)).encode("ascii"), np.uint8)
        else:   # array
            ref = next(v for v in vals if v is not None)
            dtype = np.result_type(*[v.dtype for v in vals if v is not None])
            fill = np.nan if np.issubdtype(dtype, np.floating) else 0
            arrays[name] = np.concatenate([np.asarray(v, dtype) if v is not None
                                           else np.full((len(s.sequence), *ref.shape[1:]), fill, dtype)
                                           for v, s in zip(vals, samples)])
        if len(arrays[name]) != R:
            raise ValueError(f"field {name!r}: {len(arrays[name])} rows for {R} residues")
    blobs = [json.dumps(m, separators=(",", ":"), default=_json_default).encode() for m in metas]
    arrays["meta_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    arrays["meta"] = np.frombuffer(b"".join(blobs), np.uint8)
    entry: dict[str, Any] = {"n_samples": len(samples), "n_residues": R, "fields": {}, "files": {}}
    for name, arr in arrays.items():
        fname = f"{number:05d}.{name}.npy"
        w = _HashingWriter(tmp / fname)
        try:
            np.save(w, np.ascontiguousarray(arr), allow_pickle=False)
        finally:
            info = w.close()
        os.chmod(tmp / fname, umask_mode())
        entry["files"][fname] = info
        entry["fields"][name] = {"kind": kinds.get(name, "internal"), "dtype": arr.dtype.str,
                                 "shape": list(arr.shape), "file": fname}
    for name, kind in kinds.items():
        if kind == "json":
            entry["fields"][name] = {"kind": "json"}
    return entry


def save_shards(path: str | Path, samples: Iterable[Sample], global_stats: dict, config: dict,
                shard_mb: float = DEFAULT_SHARD_MB) -> Path:
    """Write ``samples`` (any iterable: streamed, one shard in memory at a time) as a sharded dataset
    directory at ``path``, atomically: everything goes into a temporary sibling directory that is renamed
    into place once complete (an existing sharded dataset at ``path`` is replaced only then; a failure
    leaves it, or nothing, behind). Refuses to replace a directory that is not a sharded dataset."""
    if not shard_mb > 0:
        raise ValueError(f"shard size must be > 0 MB, got {shard_mb}")
    out = Path(path)
    if out.exists() and not (is_shards(out) or (out.is_dir() and not any(out.iterdir()))):
        raise ValueError(f"{out} exists and is not a sharded dataset; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        limit = shard_mb * 1e6
        shards, buf, size = [], [], 0
        n_samples = n_res = 0
        for s in samples:
            try:
                s.check()
            except SampleFieldError as e:
                raise sample_error(str(out), n_samples, s.id, e) from None
            b = _sample_bytes(s)
            if buf and size + b > limit:
                shards.append(_write_shard(tmp, len(shards), buf))
                buf, size = [], 0
            buf.append(s)
            size += b
            n_samples += 1
            n_res += len(s.sequence)
        if buf:
            shards.append(_write_shard(tmp, len(shards), buf))
        index = {"format": SHARDS_FORMAT, "sample_format": DATASET_FORMAT, "config": config,
                 "global_stats": global_stats, "n_samples": n_samples, "n_residues": n_res,
                 "shard_mb": shard_mb, "shards": shards}
        atomic_write(tmp / INDEX_NAME, json.dumps(index, indent=1) + "\n")   # the index last
        os.chmod(tmp, _dir_mode())          # mkdtemp makes 0o700; a plain mkdir's mode instead
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------
def read_index(path: str | Path) -> dict:
    """The checked index.json of a sharded dataset (DatasetFormatError naming the file otherwise): format,
    version, the schema of every shard entry, file names inside the directory, sample counts adding up."""
    f = Path(path) / INDEX_NAME
    try:
        index = json.loads(f.read_bytes())
    except OSError as e:
        raise DatasetFormatError(f"{f}: cannot open the shards index ({e.strerror or e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise DatasetFormatError(f"{f}: not valid JSON (truncated or corrupt?): {e}; convert the dataset "
                                 "again (python -m proteinmtp.dataio convert)") from None
    if not isinstance(index, dict):
        raise DatasetFormatError(f"{f}: the index must be a JSON object")
    fmt = index.get("format")
    name, _, version = str(fmt).partition("/")
    if name != _NAME or not version.isdigit():
        raise DatasetFormatError(f"{f}: unknown shards format {fmt!r}; this code reads {SHARDS_FORMAT!r}")
    if int(version) > int(_VERSION):
        raise DatasetFormatError(f"{f}: shards format {fmt!r} is newer than this code reads ({SHARDS_FORMAT!r}); "
                                 "update ProteinMTP or convert the dataset with this version")
    if int(version) < 1:
        raise DatasetFormatError(f"{f}: unknown shards format version {fmt!r}")
    _parse_format(index.get("sample_format"), str(f))
    missing = [k for k in ("config", "global_stats", "n_samples", "shards") if k not in index]
    if missing:
        raise DatasetFormatError(f"{f}: missing key(s) {missing}")
    check_header(index["global_stats"], index["config"], str(f))
    if not isinstance(index["shards"], list):
        raise DatasetFormatError(f"{f}: 'shards' must be a list of shard entries, got {index['shards']!r:.40}")
    for k, entry in enumerate(index["shards"]):
        check_entry(entry, k, f, Path(path))
    for key, part in (("n_samples", "n_samples"), ("n_residues", "n_residues")):
        total = index.get(key)
        if key == "n_residues" and total is None:
            continue
        if not is_count(total) or sum(e[part] for e in index["shards"]) != total:
            raise DatasetFormatError(f"{f}: the shards' {part} do not add up to {key} ({total!r})")
    return index


def _open_array(path: Path, spec: dict, info: dict) -> np.ndarray:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DatasetFormatError(f"{path}: cannot open shard file ({e.strerror or e})") from e
    if size != int(info["bytes"]):
        raise DatasetFormatError(f"{path}: {size} bytes, the index says {info['bytes']} (truncated or "
                                 "replaced shard file); convert the dataset again")
    try:
        mmap = "r" if int(np.prod(spec["shape"])) > 0 else None     # an empty file cannot be mapped
        arr = np.load(path, mmap_mode=mmap, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetFormatError(f"{path}: not a readable .npy shard file ({e}); convert the dataset again") from None
    if arr.dtype.str != spec["dtype"] or list(arr.shape) != list(spec["shape"]):
        raise DatasetFormatError(f"{path}: holds {arr.dtype.str} {list(arr.shape)}, the index says "
                                 f"{spec['dtype']} {spec['shape']} (corrupt shard file); convert the dataset again")
    return arr


class ShardedSamples(Sequence):
    """The samples of a sharded dataset, materialised (as ``Sample``) only when indexed.

    Memory: the index plus the mapped pages a process touches, shared with every other process that maps
    them. Picklable and fork-safe: the maps are not pickled and are reopened in a new process (DataLoader
    workers). ``view[i]`` / slicing / ``select(indices)`` give views; ``lengths()`` and ``n_present()``
    (residues with a Cα, per sample) come from the arrays without building Samples.
    """

    def __init__(self, path: str | Path, rows: np.ndarray | None = None, _index: dict | None = None):
        self.path = Path(path)
        self.index = _index if _index is not None else read_index(self.path)
        counts = [int(s["n_samples"]) for s in self.index["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._open: dict[int, dict[str, np.ndarray]] = {}
        self._pid = os.getpid()
        self._n_present: np.ndarray | None = None
        if _index is None:                  # a fresh open: every file and value, now (not lazily in training)
            for k in range(len(self.index["shards"])):
                check_shard(self.path, self.index["shards"][k], self._shard(k))

    # -- pickling / processes -------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = -1

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        if self._pid != os.getpid():        # a forked or unpickled copy maps the files itself
            self._open, self._pid = {}, os.getpid()
        got = self._open.get(k)
        if got is None:
            entry = self.index["shards"][k]
            got = {name: _open_array(self.path / spec["file"], spec, entry["files"][spec["file"]])
                   for name, spec in entry["fields"].items() if spec["kind"] != "json"}
            self._open[k] = got
        return got

    # -- sequence protocol ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._starts[-1]) if self.rows is None else len(self.rows)

    def _global(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample index {i} out of range for {n} samples")
        i = i % n
        return i if self.rows is None else int(self.rows[i])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.select(np.arange(len(self))[i])
        return self._materialise(self._global(int(i)))

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def select(self, indices) -> ShardedSamples:
        """A view of the samples at ``indices`` (positions in this view)."""
        idx = np.asarray(indices, dtype=np.int64)
        rows = idx if self.rows is None else self.rows[idx]
        view = ShardedSamples(self.path, rows=rows, _index=self.index)
        view._open, view._pid = self._open, self._pid
        return view

    def _all_rows(self) -> np.ndarray:
        return np.arange(self._starts[-1]) if self.rows is None else self.rows

    def lengths(self) -> np.ndarray:
        """[n] residues per sample (from the offsets; no Sample is built)."""
        parts = [np.diff(np.asarray(self._shard(k)["offsets"])) for k in range(len(self.index["shards"]))]
        all_len = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return all_len[self._all_rows()]

    def n_present(self) -> np.ndarray:
        """[n] residues with a Cα per sample (from the ca array; no Sample is built)."""
        if self._n_present is None:
            parts = []
            for k in range(len(self.index["shards"])):
                a = self._shard(k)
                ok = np.concatenate([[0], np.cumsum(np.asarray(a["ca"][:, 0]) != COORD_MISSING)])
                off = np.asarray(a["offsets"])
                parts.append(ok[off[1:]] - ok[off[:-1]])
            allp = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            self._n_present = allp
        return self._n_present[self._all_rows()]

    def _materialise(self, g: int) -> Sample:
        k = int(np.searchsorted(self._starts, g, side="right") - 1)
        j = g - int(self._starts[k])
        a = self._shard(k)
        entry = self.index["shards"][k]
        lo, hi = int(a["offsets"][j]), int(a["offsets"][j + 1])
        m0, m1 = int(a["meta_offsets"][j]), int(a["meta_offsets"][j + 1])
        where = self.path / entry["fields"]["meta"]["file"]
        try:
            meta = json.loads(bytes(a["meta"][m0:m1]))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise DatasetFormatError(f"{where}: sample {j} of the shard has corrupt metadata ({e})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("_absent", []), list):
            raise DatasetFormatError(f"{where}: sample {j} of the shard has corrupt metadata (not an object)")
        absent = set(meta.pop("_absent", ()))
        kw = dict(meta)
        for name, spec in entry["fields"].items():
            kind = spec["kind"]
            if kind in ("internal", "json"):
                continue
            if name in absent:
                kw[name] = None
            elif kind == "coords":
                kw[name] = _decode_coords(np.asarray(a[name][lo:hi]))
            elif kind == "chars":
                kw[name] = bytes(a[name][lo:hi]).decode("ascii")
            else:
                kw[name] = np.array(a[name][lo:hi])
        try:
            sample = Sample(**kw)
        except TypeError as e:
            raise DatasetFormatError(f"{self.path}: sample fields {sorted(kw)} do not match this code's Sample "
                                     f"({e}); written by a newer ProteinMTP?") from None
        try:
            sample.check()
        except SampleFieldError as e:
            raise sample_error(str(self.path), g, kw.get("id"), e) from None
        return sample


def open_shards(path: str | Path) -> DistMatDataset:
    """A sharded dataset with lazy samples (``ShardedSamples``), checked at open (see the module docstring).
    Callers use ``proteinmtp.dataio.open_dataset``."""
    samples = ShardedSamples(path)
    ix = samples.index
    return DistMatDataset(samples=samples, global_stats=dict(ix["global_stats"] or {}),
                          config=dict(ix["config"] or {}), format=ix["format"], path=str(path))


def verify(path: str | Path) -> dict:
    """Everything opening checks, plus every file's SHA-256 against the index, every sample built and
    checked in full, and unique ids; returns the index. DatasetFormatError naming the file otherwise."""
    ds = open_shards(path)
    index = ds.samples.index
    for entry in index["shards"]:
        for fname, info in entry["files"].items():
            f = Path(path) / fname
            h = hashlib.sha256()
            try:
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            except OSError as e:
                raise DatasetFormatError(f"{f}: cannot open shard file ({e.strerror or e})") from e
            if h.hexdigest() != info["sha256"]:
                raise DatasetFormatError(f"{f}: SHA-256 differs from the index (corrupt shard file); "
                                         "convert the dataset again")
    check_unique_ids((s.id for s in ds.samples), str(path))
    return index
