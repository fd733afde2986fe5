"""Building a dataset from structure files: the logic behind ``create_distmat_data.py``.

Inputs (files, directories, globs, ``.txt`` path lists, seed JSON) -> ``collect_inputs`` -> one
``FileResult`` per file (``read_inputs``, in worker processes) -> filters (``filter_reason``) ->
de-duplication -> MMseqs2 clusters and splits (``proteinmtp.splits``) -> ``Sample`` lists per split with
global statistics from the train split (the schema: ``proteinmtp.dataset``) and a report of every file
skipped or partly skipped.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from proteinmtp.buildreport import BuildReport, length_summary
from proteinmtp.dataset import Sample, SampleFieldError, compute_global_stats
from proteinmtp.geometry import chain_breaks

SEED_COORD_KEYS = ("ca", "coords", "coordinates", "ca_coords")
SEED_ID_KEYS = ("id", "name", "pdb_id", "protein_id")
_LIST_SUFFIXES = (".txt", ".list", ".lst")
_GLOB_CHARS = set("*?[")
SEARCH_MODES = ("auto", "exhaustive", "prefilter")


class BuildInputError(ValueError):
    """A user input to the builder is wrong (missing path, bad flag combination); one-line message."""


class NothingUsableError(BuildInputError):
    """No chain could be kept (no readable file, or every chain filtered out). ``report`` holds the
    report dict (summary and every file's reason), to be written although no dataset is."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass
class BuildConfig:
    """Builder settings; every field is a create_distmat_data.py flag of the same name."""

    min_len: int = 30                  # residues (modelled) a chain must have at least
    max_seq_len: int = 1000            # residues; longer chains are dropped (0 = no limit)
    max_missing_ca: float = 0.1        # largest allowed fraction of residues without Cα
    max_unknown: float = 0.5           # largest allowed fraction of X residues
    chains: str = ""                   # "A,B" (ids in any file) and/or "1ABC:A" (stem:chain); "" = all
    identity: float = 0.3              # MMseqs2 clustering identity (fraction)
    coverage: float = 0.0              # fraction of the shorter chain an alignment must cover (0 = any)
    search: str = "auto"               # clustering search: "exhaustive" (every pair), "prefilter" (k-mer), "auto"
    verify_split: bool = False         # after a prefilter clustering, align held-out x all exhaustively (exact)
    val_fraction: float = 0.1          # fraction of unique chains in val (whole clusters)
    test_fraction: float = 0.1         # fraction of unique chains in test (whole clusters)
    max_cluster_share: float = 0.05    # largest cluster a val/test split takes, as a fraction of its size
    seed: int = 0
    max_samples: int = 0               # keep at most this many unique chains (0 = all), chosen by seed
    workers: int = 1                   # parsing processes
    threads: int = 0                   # MMseqs2 threads (0 = same as workers)

    def validate(self) -> None:
        if self.min_len < 1:
            raise BuildInputError(f"--min_len must be >= 1, got {self.min_len}")
        if self.max_seq_len and self.max_seq_len < self.min_len:
            raise BuildInputError(f"--max_seq_len {self.max_seq_len} is below --min_len {self.min_len}")
        for name in ("max_missing_ca", "max_unknown", "identity", "coverage", "val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise BuildInputError(f"--{name} must be a fraction in [0, 1], got {v}")
        if not 0.0 < self.max_cluster_share <= 1.0:
            raise BuildInputError(f"--max_cluster_share must be in (0, 1], got {self.max_cluster_share}")
        if self.val_fraction + self.test_fraction > 1.0:
            raise BuildInputError("--val_fraction + --test_fraction must not exceed 1")
        if self.workers < 1:
            raise BuildInputError(f"--workers must be >= 1, got {self.workers}")
        if self.max_samples < 0:
            raise BuildInputError(f"--max_samples must be >= 0, got {self.max_samples}")
        if self.search not in SEARCH_MODES:
            raise BuildInputError(f"--search must be one of {', '.join(SEARCH_MODES)}, got {self.search!r}")


@dataclass
class FileResult:
    """Outcome of reading one input: its chains (as unsplit Samples) or the reason it failed."""

    file: str
    samples: list[Sample]
    error: str | None = None
    error_kind: str = "unreadable"  # why it was not read (with error): one of SKIP_KINDS
    notes: list[str] = field(default_factory=list)
    record_errors: list[dict] = field(default_factory=list)  # seed-format records that failed


def _expand_one(arg: str, out: list[tuple[str, str]], ignored: list[str] | None = None) -> None:
    """Append (kind, path) pairs for one --input argument; kind is 'structure' or 'seed'.

    A directory contributes every entry with a structure name (BinaryCIF included) that is not a
    directory: dangling symbolic links and FIFOs too, so that they are reported, never dropped unseen
    (they are not opened here). Other files in it are counted in ``ignored``.
    """
    p = Path(arg)
    if any(c in _GLOB_CHARS for c in arg) and not p.exists():
        import glob

        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            raise BuildInputError(f"--input {arg!r}: the pattern matches no file")
        for m in matches:
            if Path(m).is_dir():
                _expand_one(m, out, ignored)
            elif _is_seed_json(m):
                out.append(("seed", m))
            elif _structure_name(m):
                out.append(("structure", m))
        return
    if not p.exists():
        if p.is_symlink():
            raise BuildInputError(f"--input {arg!r}: dangling symbolic link (its target {os.readlink(p)} does not exist)")
        raise BuildInputError(f"--input {arg!r}: no such file or directory")
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_dir():
                continue
            if _structure_name(str(f)):
                out.append(("structure", str(f)))
            elif ignored is not None:
                ignored.append(str(f))
        return
    name = p.name.lower()
    if name.endswith(_LIST_SUFFIXES):
        for lineno, line in enumerate(p.read_text().splitlines(), start=1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            q = Path(entry)
            if not q.is_absolute() and not q.exists():
                q = p.parent / entry  # relative to the list file
            if not q.exists() and not any(c in _GLOB_CHARS for c in entry):
                raise BuildInputError(f"{p}: line {lineno}: {entry!r} does not exist")
            _expand_one(str(q), out, ignored)
        return
    if _is_seed_json(str(p)):
        out.append(("seed", str(p)))
        return
    out.append(("structure", str(p)))  # an explicit file is read whatever its extension


def _structure_name(path: str) -> bool:
    from proteinmtp.structure import is_binary_cif, is_structure_file

    return is_structure_file(path) or is_binary_cif(path)


def _is_seed_json(path: str) -> bool:
    return path.lower().endswith((".json", ".json.gz"))


def collect_inputs(inputs: Sequence[str], ignored: list[str] | None = None) -> list[tuple[str, str]]:
    """Expand files, directories (recursive; structure extensions only), globs and .txt lists of paths
    into a sorted, de-duplicated list of (kind, path), kind 'structure' or 'seed' (JSON records).
    Files of a directory without a structure extension are appended to ``ignored``."""
    out: list[tuple[str, str]] = []
    for arg in inputs:
        _expand_one(arg, out, ignored)
    seen: set[str] = set()
    unique = []
    for kind, path in out:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append((kind, path))
    return sorted(unique, key=lambda kp: kp[1])


def file_ids(paths: Sequence[str]) -> dict[str, str]:
    """The id of each structure file's chains (before ``:chain``): the file's stem, unless files in OTHER
    folders share that stem — then the stem prefixed with the shortest trailing part of its folder path
    that no other such folder ends with, joined by "/": a/prot.pdb, b/prot.pdb → a/prot, b/prot;
    x/a/p.pdb, y/a/p.pdb, b/p.pdb → x/a/p, y/a/p, b/p; target1/ranked_0.pdb → target1/ranked_0. Files
    of one stem in one folder (1ABC.pdb, 1ABC.cif) share the id, and the build keeps the first by path.
    Depends only on the set of paths (made absolute), never on reading order or --workers.
    """
    from proteinmtp.structure import structure_stem

    by_stem: dict[str, list[str]] = {}
    for path in paths:
        by_stem.setdefault(structure_stem(path), []).append(path)
    out: dict[str, str] = {}
    for stem, group in by_stem.items():
        folder = {path: Path(os.path.abspath(path)).parent.parts[1:] for path in group}  # without the root
        distinct = set(folder.values())
        for path in group:
            d = folder[path]
            others = distinct - {d}
            suffix: tuple[str, ...] = ()
            for k in range(1, len(d) + 1) if others else ():
                suffix = d[-k:]
                if all(o[-k:] != suffix for o in others):
                    break
            out[path] = "/".join((*suffix, stem))
    return out


def _seed_coords(rec: dict) -> np.ndarray:
    for key in SEED_COORD_KEYS:
        if key in rec and rec[key] is not None:
            rows = rec[key]
            break
    else:
        raise ValueError(f"no coordinate key (one of {list(SEED_COORD_KEYS)})")
    out = np.full((len(rows), 3), np.nan)
    for i, r in enumerate(rows):
        if r is None:
            continue
        a = np.asarray(r, dtype=np.float64)
        if a.shape == (3,):
            out[i] = a
        elif a.ndim == 2 and a.shape[1] == 3 and a.shape[0] >= 2:
            out[i] = a[1]  # per-residue backbone [N, CA, C, ...]: take CA
        else:
            raise ValueError(f"residue {i}: coordinates of shape {a.shape}, expected [3] or [n_atoms, 3]")
    return out


def read_seed_records(path: str) -> FileResult:
    """Seed-era ``protein_coords_data.json``: a list of {sequence, coords (or ca), [id|name]} records.

    Coordinates are [L, 3] Å (null where missing) or [L, n_atoms, 3] with Cα second (N, CA, C, O).
    A proteinmtp dataset file (with 'format') is also accepted: its samples are re-read.
    """
    stem = Path(path).name
    for suffix in (".gz", ".json"):
        stem = stem.removesuffix(suffix)
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            data = json.load(f)
    except (OSError, EOFError, zlib.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        return FileResult(path, [], error=f"unreadable JSON ({e})")
    if isinstance(data, dict) and "samples" in data:
        data = data["samples"]
    if not isinstance(data, list):
        return FileResult(path, [], error="expected a JSON list of records with 'sequence' and 'coords'")
    samples, bad = [], []
    for i, rec in enumerate(data):
        try:
            if not isinstance(rec, dict) or not isinstance(rec.get("sequence"), str):
                raise ValueError("record without a 'sequence' string")
            seq = rec["sequence"].strip().upper()
            ca = _seed_coords(rec)
            if len(ca) != len(seq):
                raise ValueError(f"{len(seq)} residues but {len(ca)} coordinate rows")
            rid = next((str(rec[k]) for k in SEED_ID_KEYS if rec.get(k)), f"{stem}_{i}")
            if "chain" in rec and ":" not in rid:
                rid = f"{rid}:{rec['chain']}"
            elif ":" not in rid:
                rid = f"{rid}:A"
            rids = rec.get("residue_ids") or [str(k + 1) for k in range(len(seq))]
            sample = Sample(id=rid, sequence=seq, ca=ca, residue_ids=[str(r) for r in rids],
                            source=path, split="", cb=None, breaks=list(chain_breaks(ca)))
            sample.check()
            samples.append(sample)
        except (ValueError, TypeError) as e:
            bad.append({"record": i, "reason": f"invalid record: {e}"})
    return FileResult(path, samples, record_errors=bad)


# Why a file was not read (report.json "kind", counted in the summary's files_failed_by_kind).
SKIP_KINDS = ("unreadable", "unsupported_format", "dangling_symlink", "not_a_regular_file")


def _not_regular(path: str) -> tuple[str, str] | None:
    """(kind, reason) when ``path`` is not a regular file (checked without opening it: a FIFO would block)."""
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "dangling_symlink", f"dangling symbolic link (its target {os.readlink(path)} does not exist)"
        return "unreadable", "file disappeared before it was read"
    except OSError as e:
        return "unreadable", f"cannot access the file ({e.strerror or e})"
    if stat.S_ISFIFO(st.st_mode):
        return "not_a_regular_file", "a named pipe (FIFO), not a regular file; not read"
    if not stat.S_ISREG(st.st_mode):
        return "not_a_regular_file", "not a regular file (socket or device); not read"
    return None


def read_input(item: tuple[str, str]) -> FileResult:
    """Read one collected input (worker function; picklable in and out)."""
    from proteinmtp.secondary import chain_ss8
    from proteinmtp.structure import BINARY_CIF_REASON, StructureReadError, read_structure

    kind, path = item
    why = _not_regular(path)
    if why is not None:
        return FileResult(path, [], error=why[1], error_kind=why[0])
    if kind == "seed":
        return read_seed_records(path)
    notes: list[str] = []
    try:
        chains = read_structure(path, notes)
    except StructureReadError as e:
        kind = "unsupported_format" if BINARY_CIF_REASON in str(e) else "unreadable"
        return FileResult(path, [], error=str(e).removeprefix(f"{path}: "), error_kind=kind)
    except Exception as e:  # a parser bug must not stop a 10,000-file build; it is reported
        return FileResult(path, [], error=f"unexpected {type(e).__name__}: {e}", error_kind="unreadable")
    samples = [Sample(id=c.id, sequence=c.sequence, ca=c.ca, residue_ids=list(c.residue_ids), source=c.source,
                      split="", cb=c.cb, breaks=list(c.breaks), ss8=chain_ss8(c)) for c in chains]
    return FileResult(path, samples, notes=notes)


def read_inputs(items: Sequence[tuple[str, str]], workers: int = 1, progress: bool = True) -> list[FileResult]:
    """Read every input, in parallel when workers > 1; results in input order."""
    from tqdm import tqdm

    bar = dict(total=len(items), desc="reading structures", unit="file", disable=not progress, smoothing=0.05)
    if workers <= 1 or len(items) < 2:
        return [read_input(it) for it in tqdm(items, **bar)]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        return list(tqdm(pool.imap(read_input, items, chunksize=4), **bar))


def _parse_selection(spec: str) -> tuple[set[str], set[str]]:
    bare, full = set(), set()
    for tok in (t.strip() for t in spec.split(",")):
        if tok:
            (full if ":" in tok else bare).add(tok)
    return bare, full


def filter_reason(s: Sample, cfg: BuildConfig, bare: set[str], full: set[str]) -> str | None:
    """Why a chain is dropped (None = kept). Reasons are stable keys used in the summary."""
    if bare or full:
        chain_id = s.id.rsplit(":", 1)[-1]
        if chain_id not in bare and s.id not in full and s.id.rsplit("/", 1)[-1] not in full:
            return "not_selected"
    n = len(s.sequence)
    if n < cfg.min_len:
        return "too_short"
    if cfg.max_seq_len and n > cfg.max_seq_len:
        return "too_long"
    if (~s.mask()).sum() > cfg.max_missing_ca * n:
        return "too_many_missing_ca"
    if s.sequence.count("X") > cfg.max_unknown * n:
        return "too_many_unknown"
    return None


def _candidates(results: Sequence[FileResult], ids: dict[str, str], cfg: BuildConfig, rep: BuildReport) -> list[Sample]:
    """Chains of the readable files that pass the filters (ids made unique across folders); the rest is
    noted in ``rep``."""
    from proteinmtp.structure import structure_stem

    bare, full = _parse_selection(cfg.chains)
    out: list[Sample] = []
    for r in results:
        if r.error is not None:
            rep.n_failed += 1
            rep.failed_by_kind[r.error_kind] = rep.failed_by_kind.get(r.error_kind, 0) + 1
            rep.note(r.file, "skipped", reason=r.error, kind=r.error_kind)
            continue
        rep.n_read += 1
        if r.notes:
            rep.n_repaired += 1
            rep.note(r.file, "repaired", notes=r.notes)
        if r.record_errors:
            rep.note(r.file, "partial", records=r.record_errors)
            rep.dropped["invalid_record"] = rep.dropped.get("invalid_record", 0) + len(r.record_errors)
        if not r.samples and not r.record_errors:
            rep.n_noprotein += 1
            rep.note(r.file, "skipped", reason="no protein chains in the first model")
            continue
        seen_ids: set[str] = set()
        stem, fid = structure_stem(r.file), ids.get(r.file)
        for s in r.samples:
            if fid is not None and fid != stem and s.id.startswith(stem + ":"):
                s.id = fid + s.id[len(stem):]       # same file name in another folder: a/prot:A, b/prot:A
            rep.n_found += 1
            if s.id in seen_ids:
                rep.drop(s, "duplicate_id")
                continue
            seen_ids.add(s.id)
            try:
                s.check()               # the rules a dataset file obeys: never write one the reader refuses
            except SampleFieldError as e:
                rep.drop(s, "invalid_chain", str(e))
                continue
            reason = filter_reason(s, cfg, bare, full)
            if reason:
                rep.drop(s, reason)
            else:
                out.append(s)
    return out


def _deduplicate(candidates: list[Sample], cfg: BuildConfig, rep: BuildReport) -> list[Sample]:
    """Identical sequences kept once (most resolved Cα, then lexicographic id), one chain per id (first by
    source path), then at most ``cfg.max_samples`` chains chosen by ``cfg.seed``."""
    by_seq: dict[str, list[Sample]] = {}
    for s in candidates:
        by_seq.setdefault(s.sequence, []).append(s)
    unique: list[Sample] = []
    for group in by_seq.values():
        group.sort(key=lambda s: (-int(s.mask().sum()), s.id))
        unique.append(group[0])
        for s in group[1:]:
            rep.drop(s, "duplicate_sequence", detail=f"same sequence as {group[0].id}")
    # The same id from two inputs (e.g. 1ABC.pdb and 1ABC.cif): keep the first by source path.
    unique.sort(key=lambda s: (s.id, s.source))
    kept: list[Sample] = []
    for s in unique:
        if kept and kept[-1].id == s.id:
            rep.drop(s, "duplicate_id", detail=f"id also read from {kept[-1].source}")
        else:
            kept.append(s)
    if cfg.max_samples and len(kept) > cfg.max_samples:
        rng = np.random.default_rng(cfg.seed)
        chosen = set(rng.choice(len(kept), size=cfg.max_samples, replace=False).tolist())
        for i, s in enumerate(kept):
            if i not in chosen:
                rep.drop(s, "max_samples")
        kept = [s for i, s in enumerate(kept) if i in chosen]
    return kept


def nothing_usable(rep: BuildReport, file_summary: dict, n_inputs: int) -> NothingUsableError:
    """The error (with the report) when no chain is left, saying at which stage everything was lost."""
    report = {"summary": {**file_summary, "chains_kept": 0, "chains_dropped": dict(sorted(rep.dropped.items()))},
              "files": rep.file_entries()}
    if rep.n_read == 0:
        kinds = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(rep.failed_by_kind.items()))
        return NothingUsableError(f"no input file was readable ({n_inputs} file(s): {kinds})", report)
    if rep.n_found == 0:
        return NothingUsableError(f"no protein chain in the {rep.n_read} readable file(s) "
                                  f"({rep.n_failed} more unreadable, {rep.n_noprotein} without protein chains)", report)
    return NothingUsableError(
        f"no chain passed the filters ({rep.n_found} chains in {rep.n_read} readable files; dropped: {rep.dropped}); "
        "check --min_len/--max_seq_len/--max_missing_ca/--chains", report)


def _split(kept: list[Sample], cfg: BuildConfig, workdir: str | None) -> tuple[dict[str, list[Sample]], dict, dict]:
    """MMseqs2 clusters (skipped when everything goes to train) and whole-cluster splits, verified with
    ``cfg.verify_split`` after a prefilter clustering; sets each sample's split and cluster. Returns
    (splits, cluster_of, clustering report)."""
    from proteinmtp.splits import assign_splits, cluster_sequences, verify_split

    seqs = {s.id: s.sequence for s in kept}
    threads = cfg.threads or cfg.workers
    info: dict = {}
    if cfg.val_fraction == 0 and cfg.test_fraction == 0:
        cluster_of = {k: k for k in seqs}  # everything goes to train: no clustering needed
    else:
        cluster_of = cluster_sequences(seqs, identity=cfg.identity, coverage=cfg.coverage, threads=threads,
                                       exhaustive={"auto": None, "exhaustive": True, "prefilter": False}[cfg.search],
                                       workdir=workdir, stats=info)
    split_of = assign_splits(cluster_of, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                             seed=cfg.seed, max_cluster_share=cfg.max_cluster_share)
    if cfg.verify_split and info and not info["exhaustive"]:  # an exhaustive clustering is exact already
        info["verify"] = {}
        split_of, cluster_of = verify_split(seqs, split_of, cluster_of, identity=cfg.identity,
                                            coverage=cfg.coverage, threads=threads, workdir=workdir,
                                            stats=info["verify"])
    splits: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for s in kept:
        s.split = split_of[s.id]
        s.cluster = cluster_of[s.id]
        splits[s.split].append(s)
    return splits, cluster_of, info


def build_dataset(inputs: Sequence[str], cfg: BuildConfig, *, progress: bool = True,
                  workdir: str | None = None) -> tuple[dict[str, list[Sample]], dict, dict]:
    """Collect, read, filter, de-duplicate, cluster and split.

    Returns (splits {"train"|"val"|"test": [Sample]}, global_stats (train only), report dict with
    "summary" and "files" (every input skipped or partly skipped, with the reason)).
    """
    cfg.validate()
    ignored: list[str] = []
    items = collect_inputs(inputs, ignored)
    if not items:
        other = f"; {len(ignored)} other file(s) ignored for their extension" if ignored else ""
        raise NothingUsableError(
            f"no structure files found in --input (extensions: .pdb .ent .brk .cif .mmcif [.gz]){other}",
            {"summary": {"inputs": 0, "files_read": 0, "files_ignored_extension": len(ignored)}, "files": []})
    ids = file_ids([path for kind, path in items if kind == "structure"])
    results = read_inputs(items, workers=cfg.workers, progress=progress)
    rep = BuildReport()
    kept = _deduplicate(_candidates(results, ids, cfg, rep), cfg, rep)
    del results  # the chains dropped above need not stay in memory
    file_summary = rep.file_summary(len(items), len(ignored))
    if not kept:
        raise nothing_usable(rep, file_summary, len(items))
    splits, cluster_of, clustering = _split(kept, cfg, workdir)
    if not splits["train"]:
        raise BuildInputError("the training split is empty; lower --val_fraction/--test_fraction or add data")
    stats = compute_global_stats(splits["train"])
    summary = {
        **file_summary,
        "chains_kept": len(kept),
        "chains_dropped": dict(sorted(rep.dropped.items())),
        "splits": {k: {"chains": len(v), "clusters": len({s.cluster for s in v}),
                       "largest_cluster": max(Counter(s.cluster for s in v).values(), default=0),
                       "residues": int(sum(len(s) for s in v))} for k, v in splits.items()},
        "clusters_total": len(set(cluster_of.values())),
        "clustering": clustering,
        "length": length_summary([len(s) for s in kept]),
        "length_by_split": {k: length_summary([len(s) for s in v]) for k, v in splits.items()},
    }
    return splits, stats, {"summary": summary, "files": rep.file_entries()}
