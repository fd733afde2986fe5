"""Templates: each query chain's structural relatives in a template database, their alignments and features.

A **template database** is any dataset that ``create_distmat_data.py`` built (a ``.json(.gz)`` split file or
a ``.shards/`` directory), read with :func:`proteinmtp.dataio.open_dataset`. By default it is a run's own
training split; ``--val_fraction 0 --test_fraction 0`` turns a user's own structures into one. It must hold
training chains only (no sample of split ``val`` or ``test``), so an evaluated chain can never be copied
from a held-out relative (:meth:`TemplateDatabase.load` refuses one otherwise).

1. **Search** (:func:`search_templates`). One MMseqs2 search of every uncached query against the database,
   through :func:`proteinmtp.splits.search_hits` with the nearest-neighbour baseline's settings
   (``proteinmtp.neighbour``: E <= 10, hits under 15 bits dropped, every pair aligned up to 5 M query x
   database pairs, the k-mer prefilter at sensitivity 7.5 beyond). **Leakage rule:** a query never gets a
   database chain with its own id or with an identical sequence (compared by sequence, whatever the id).
   Each kept hit is re-aligned locally with :func:`proteinmtp.scoring.align_sequences` (Smith-Waterman,
   BLOSUM62, gap -10/-0.5: only the homologous segment is matched, as in the neighbour baseline).
2. **Pool.** A chain keeps the hits that some selection below can use: for every identity ceiling in
   :data:`IDENTITY_CEILINGS` (and none), with and without its own split cluster, the ``max_hits`` best by
   bit score (ties: lower E-value, then the earlier database row). Selecting k <= ``max_hits`` templates
   with one of those ceilings from the pool therefore gives exactly what it would give from all hits.
3. **Cache.** One JSON file per chain under ``CACHE_DIR/<fingerprint[:16]>/``, named by a SHA-256 of the
   chain's id, sequence, cluster and the search settings, written atomically (``proteinmtp.fileio``); the
   **fingerprint** is the SHA-256 of the database's files (:func:`database_fingerprint`), so a changed
   database is searched again and a training run searches each chain once. Delete the folder at will.
4. **Select** (:func:`select_templates`, the training-distribution rule of issue 21 §2). A held-out chain
   has, by construction of the split, no relative of >= 30 % identity (E <= 1e-3) in the training split,
   while a training chain's own cluster mates are often >= 90 %. Two options close that gap, both with
   defaults in :class:`TemplateOptions`: ``template_max_identity`` (0.95) drops hits above an identity
   (AlphaFold's template search likewise drops near-duplicates of the query), and
   ``template_drop_own_cluster`` (0.5) is the probability that a training item sees no template from its
   own split cluster (then its templates are what a held-out chain sees: other clusters only).
   ``template_dropout`` (0.1) is the probability that a training item gets no template at all, so the model
   keeps working without one. At evaluation and inference only the identity ceiling applies. Which
   defaults are best is still to be measured (``benchmarks/bench_templates.py`` shows the identities each
   rule leaves a training chain beside those of the test chains).
5. **Features** (:func:`template_features`), numpy, per query and K templates, zero-padded to K:

   =====================  ================  =================================================================
   key                    shape, dtype      meaning
   =====================  ================  =================================================================
   ``dist_bin``           [K, L, L] int16   distogram bin of the template's Cα–Cα distance mapped onto the
                                            query's residues through the alignment (0 where no pair)
   ``dist_A``             [K, L, L] f32     that distance in Å (0 where no pair)
   ``pair_mask``          [K, L, L] bool    both query residues aligned to template residues with a Cα
   ``aligned``            [K, L] bool       the query residue is aligned (its gap mask is ``~aligned``)
   ``identical``          [K, L] bool       aligned to the same amino acid
   ``similar``            [K, L] bool       aligned to an amino acid with a positive BLOSUM62 score
   ``aatype``             [K, L] int16      the aligned template residue (index in ``ALLOWED_AA``; 25 = gap)
   ``identity``           [K] f32           the hit's identity (MMseqs2 fident of its local alignment)
   ``coverage``           [K] f32           fraction of the query aligned to template residues with a Cα
   ``significance``       [K] f32           the hit's E-value as :func:`hit_significance` (-0.1 .. 1)
   ``template_mask``      [K] bool          a real template (False: padding, or no hit)
   =====================  ================  =================================================================

   Bins are those of the distance head's distogram (:data:`DEFAULT_BIN_EDGES`: 40 of 0.5 Å from 2 to 22 Å,
   below, overflow); bin b holds ``edges[b-1] < d <= edges[b]`` (``torch.bucketize``). ``crop=(start, end)``
   gives the rows and columns ``start:end`` of the whole chain's features (what a training crop takes),
   computed for the crop alone; identity and coverage stay those of the whole chain.

Example::

    from proteinmtp.templates import TemplateDatabase, search_templates, select_templates, template_features
    db = TemplateDatabase.load("data/demo/dataset/train.json.gz")
    found = search_templates(test_samples, db, cache_dir="runs/x/template_cache")   # {id: TemplateHits}
    hits = select_templates(found[s.id], k=4)
    f = template_features(s.sequence, hits, db, k=4)                                 # dict of arrays
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from proteinmtp.config import flag
from proteinmtp.constants import ALLOWED_AA
from proteinmtp.fileio import atomic_write, read_bytes

TEMPLATE_HITS_FORMAT = "proteinmtp-template-hits/1"
DEFAULT_K = 4
DEFAULT_MAX_HITS = 8
DEFAULT_MAX_IDENTITY = 0.95                        # selection's identity ceiling (TemplateOptions)
IDENTITY_CEILINGS = (0.3, 0.5, 0.7, 0.9, 0.95)     # pool rankings (module docstring, step 2)
DEFAULT_BIN_EDGES = np.linspace(2.0, 22.0, 41)     # = heads.HeadConfig().bin_edges() (tested)
GAP = len(ALLOWED_AA)                              # aatype of a query residue aligned to nothing
_AA_INDEX = {a: i for i, a in enumerate(ALLOWED_AA)}


class TemplateError(ValueError):
    """A template database or cache that cannot be used; the message names the file and what to do."""


@dataclass
class TemplateOptions:
    """How templates are chosen from a chain's hits (flags of the scripts that use templates; the number of
    templates K belongs to the model: ``heads.templates.TemplateEmbedConfig.templates``).

    ``template_max_identity`` applies everywhere (training, evaluation, inference), so training sees the
    distribution inference does; ``template_drop_own_cluster`` and ``template_dropout`` only in training.
    """

    template_max_identity: float = field(default=DEFAULT_MAX_IDENTITY, metadata=flag(
        "drop template hits whose identity (MMseqs2 fident, identical residues / alignment length) is above "
        "this fraction; identical sequences are always dropped", type=float))
    template_drop_own_cluster: float = field(default=0.5, metadata=flag(
        "training only: probability that a chain's templates exclude its own split cluster (then it sees "
        "what a held-out chain sees: no relative at or above the split's identity)", type=float))
    template_dropout: float = field(default=0.1, metadata=flag(
        "training only: probability that a chain gets no template at all (the no-template path trains)",
        type=float))

    def validate(self) -> None:
        """TemplateError naming the flag for a value no selection can use."""
        for name in ("template_max_identity", "template_drop_own_cluster", "template_dropout"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise TemplateError(f"--{name} must be a fraction in [0, 1], got {v}")

    def select(self, found: TemplateHits, k: int, *, training: bool = False,
               rng: np.random.Generator | None = None) -> list[TemplateHit]:
        """:func:`select_templates` with these options (the training-only ones when ``training``)."""
        return select_templates(found, k, max_identity=self.template_max_identity,
                                drop_own_cluster=self.template_drop_own_cluster if training else 0.0,
                                dropout=self.template_dropout if training else 0.0, rng=rng)


# ----------------------------------------------------------------------------------------------------
# the database
# ----------------------------------------------------------------------------------------------------
def database_fingerprint(path: str | Path) -> str:
    """SHA-256 (hex) of a template database's files: the file's bytes, or for a directory every regular
    file's relative name and bytes in name order. TemplateError when it cannot be read."""
    path = Path(path)
    h = hashlib.sha256()
    try:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if path.is_dir():
                h.update(f.relative_to(path).as_posix().encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    except OSError as e:
        raise TemplateError(f"{path}: cannot read the template database ({e.strerror or e})") from e
    return h.hexdigest()


@dataclass
class TemplateDatabase:
    """The chains templates are copied from: a dataset's samples and the fingerprint of its files."""

    path: str
    fingerprint: str
    samples: Sequence               # proteinmtp.dataset.Sample, in file order (a hit's ``target`` indexes it)
    global_stats: dict = field(default_factory=dict)    # the dataset's normalisation statistics
    config: dict = field(default_factory=dict)          # how create_distmat_data.py built it

    def __len__(self) -> int:
        return len(self.samples)

    @classmethod
    def load(cls, path: str | Path, *, allow_held_out: bool = False,
             expect_fingerprint: str | None = None) -> TemplateDatabase:
        """Read a dataset as a template database. TemplateError (one line: the file, what is wrong, what to
        pass) for a missing or corrupt file, one whose files' SHA-256 is not ``expect_fingerprint`` (the one a
        run recorded: the database moved or changed), or, unless ``allow_held_out``, one holding val/test
        chains."""
        from proteinmtp.dataio import open_dataset
        from proteinmtp.dataset import DatasetFormatError

        if not Path(path).exists():
            raise TemplateError(f"{path}: template database not found (moved?); pass --template_db with a "
                                "dataset that create_distmat_data.py built (e.g. DIR/train.json.gz)")
        fp = database_fingerprint(path)
        if expect_fingerprint is not None and fp != expect_fingerprint:
            raise TemplateError(f"{path}: template database changed since it was recorded (SHA-256 "
                                f"{fp[:12]}..., recorded {expect_fingerprint[:12]}...); pass --template_db with "
                                "the recorded database, or --templates 0 to predict without templates")
        try:
            ds = open_dataset(path)
        except DatasetFormatError as e:
            raise TemplateError(f"template database {e}") from None
        held = [s for s in ds.samples if s.split in ("val", "test")]
        if held and not allow_held_out:
            raise TemplateError(f"{path}: a template database holds training chains only, but {len(held)} "
                                f"sample(s) are held out (e.g. {held[0].id!r}, split {held[0].split!r}); pass "
                                "the training split (train.json.gz) or a dataset built with --val_fraction 0 "
                                "--test_fraction 0")
        return cls(str(path), fp, list(ds.samples), dict(ds.global_stats or {}), dict(ds.config or {}))

    def check_statistics(self, global_stats: dict) -> None:
        """TemplateError when this database is the training split of another dataset build: its
        normalisation statistics (``log_dist_mean``/``log_dist_std``, computed on a build's training split
        and stored in each of its splits) differ from a run's ``global_stats`` while it was built with held-out
        splits, so its chains may be that run's validation or test chains. A database built whole
        (``--val_fraction 0 --test_fraction 0``: a user's own structures) has its own statistics and passes."""
        keys = ("log_dist_mean", "log_dist_std")
        mine = [self.global_stats.get(k) for k in keys]
        theirs = [global_stats.get(k) for k in keys]
        if None in mine:
            raise TemplateError(f"{self.path}: template database has no normalisation statistics "
                                "(global_stats log_dist_mean/log_dist_std); rebuild it with create_distmat_data.py")
        same = None not in theirs and all(abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
                                          for a, b in zip(mine, theirs))
        held_out = float(self.config.get("val_fraction", 0) or 0) + float(self.config.get("test_fraction", 0) or 0)
        if not same and held_out > 0:
            raise TemplateError(
                f"{self.path}: template database was built with other normalisation statistics (log_dist_mean "
                f"{float(mine[0]):.6f}, the run's {theirs[0] if theirs[0] is None else round(float(theirs[0]), 6)}): "
                "it is the training split of another dataset build, whose chains may be this run's held-out "
                "chains; pass this run's training split, or a database built with --val_fraction 0 "
                "--test_fraction 0")

    def record(self) -> dict:
        """What a run stores about its database: absolute path, SHA-256 of its files, chain count."""
        return {"path": str(Path(self.path).resolve()), "fingerprint": self.fingerprint, "n_chains": len(self)}


# ----------------------------------------------------------------------------------------------------
# hits
# ----------------------------------------------------------------------------------------------------
def _runs(qi: np.ndarray, ti: np.ndarray) -> list[list[int]]:
    """Aligned index pairs -> runs [[q0, t0, n], ...] where both indices step by one (a compact alignment)."""
    out: list[list[int]] = []
    for q, t in zip(qi.tolist(), ti.tolist()):
        if out and q == out[-1][0] + out[-1][2] and t == out[-1][1] + out[-1][2]:
            out[-1][2] += 1
        else:
            out.append([q, t, 1])
    return out


@dataclass
class TemplateHit:
    """One database chain aligned to a query. ``runs`` is the alignment: [[q0, t0, n], ...], query residues
    q0..q0+n-1 matched to template residues t0..t0+n-1."""

    target: int                     # row of the database
    target_id: str
    identity: float                 # MMseqs2 fident (identical residues / alignment length)
    evalue: float
    bits: float
    coverage: float                 # fraction of the query aligned to template residues with a Cα
    target_cluster: str | None = None
    runs: list[list[int]] = field(default_factory=list)

    def alignment(self) -> tuple[np.ndarray, np.ndarray]:
        """(query_idx [M], template_idx [M]) int arrays of the aligned residue pairs, ascending."""
        if not self.runs:
            return np.zeros(0, int), np.zeros(0, int)
        r = np.asarray(self.runs, dtype=int)
        qi = np.concatenate([np.arange(q, q + n) for q, _, n in r])
        ti = np.concatenate([np.arange(t, t + n) for _, t, n in r])
        return qi, ti

    def rank(self) -> tuple:
        return (-self.bits, self.evalue, self.target)


@dataclass
class TemplateHits:
    """A query's pool of hits (best first) in the database of ``fingerprint``."""

    query_id: str
    query_sequence: str
    query_cluster: str | None
    fingerprint: str
    hits: list[TemplateHit]

    def to_dict(self) -> dict:
        return {"format": TEMPLATE_HITS_FORMAT, "query_id": self.query_id, "query_sequence": self.query_sequence,
                "query_cluster": self.query_cluster, "fingerprint": self.fingerprint,
                "hits": [asdict(h) for h in self.hits]}

    @classmethod
    def from_dict(cls, d: dict) -> TemplateHits:
        if not isinstance(d, dict) or d.get("format") != TEMPLATE_HITS_FORMAT:
            raise ValueError(f"not a {TEMPLATE_HITS_FORMAT} record")
        hits = [TemplateHit(target=int(h["target"]), target_id=str(h["target_id"]), identity=float(h["identity"]),
                            evalue=float(h["evalue"]), bits=float(h["bits"]), coverage=float(h["coverage"]),
                            target_cluster=h.get("target_cluster"), runs=[[int(x) for x in r] for r in h["runs"]])
                for h in d["hits"]]
        return cls(str(d["query_id"]), str(d["query_sequence"]), d.get("query_cluster"), str(d["fingerprint"]), hits)


def pool_hits(hits: Sequence[TemplateHit], query_cluster: str | None, max_hits: int) -> list[TemplateHit]:
    """The hits some selection can use (module docstring, step 2), best first."""
    ranked = sorted(hits, key=TemplateHit.rank)
    keep: set[int] = set()
    for ceiling in (*IDENTITY_CEILINGS, 1.0):
        for outside in (False, True):
            if outside and query_cluster is None:
                continue
            chosen = [h for h in ranked if h.identity <= ceiling
                      and not (outside and h.target_cluster == query_cluster)][:max_hits]
            keep.update(id(h) for h in chosen)
    return [h for h in ranked if id(h) in keep]


# ----------------------------------------------------------------------------------------------------
# search and cache
# ----------------------------------------------------------------------------------------------------
def align_template(query_sequence: str, template) -> tuple[list[list[int]], float]:
    """Local alignment of a query to a template chain (``scoring.align_sequences``, Smith-Waterman):
    (runs [[q0, t0, n], ...], coverage = fraction of the query aligned to template residues with a Cα)."""
    from proteinmtp.scoring import align_sequences

    qi, ti, _ = align_sequences(query_sequence, template.sequence, mode="local")
    has_ca = template.mask()[ti] if len(ti) else np.zeros(0, bool)
    coverage = float(has_ca.sum() / len(query_sequence)) if len(query_sequence) else 0.0
    return _runs(qi, ti), coverage


def _cache_key(query, settings: dict) -> str:
    text = json.dumps([query.id, query.sequence, getattr(query, "cluster", None), settings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_path(cache_dir: Path, fingerprint: str, key: str) -> Path:
    return cache_dir / fingerprint[:16] / f"{key[:32]}.json"


def _read_cached(path: Path, query, fingerprint: str) -> TemplateHits | None:
    """The cached record at ``path`` if it is whole and for this query and database, else None (a miss)."""
    if not path.exists():
        return None
    try:
        rec = TemplateHits.from_dict(json.loads(read_bytes(path)))
    except (OSError, ValueError, KeyError, TypeError):
        return None                                 # corrupt or foreign: searched again, then overwritten
    if rec.fingerprint != fingerprint or rec.query_id != query.id or rec.query_sequence != query.sequence:
        return None
    return rec


def search_templates(queries: Sequence, db: TemplateDatabase, *, max_hits: int = DEFAULT_MAX_HITS,
                     evalue: float | None = None, threads: int = 1, exhaustive: bool | None = None,
                     cache_dir: str | Path | None = None, workdir: str | Path | None = None,
                     stats: dict | None = None) -> dict[str, TemplateHits]:
    """Every query's pool of template hits in ``db`` (module docstring): {query id: TemplateHits}.

    ``queries``: objects with ``id``, ``sequence`` and optionally ``cluster`` (dataset Samples); ids must be
    unique. ``exhaustive`` None aligns every pair when the uncached queries x database pairs are at most
    ``neighbour.EXHAUSTIVE_MAX_PAIRS``, else uses the k-mer prefilter. With ``cache_dir``, cached chains are read and only the others searched (one MMseqs2 call).
    ``stats`` receives n_queries, n_cached, n_searched, n_with_hit, search_seconds, seconds.
    ValueError for duplicate ids; MMseqsError when MMseqs2 is missing or fails.
    """
    from proteinmtp.neighbour import DEFAULT_EVALUE, EXHAUSTIVE_MAX_PAIRS, MIN_BITS, PREFILTER_SENSITIVITY
    from proteinmtp.splits import search_hits

    t0 = time.perf_counter()
    ids = [q.id for q in queries]
    if len(set(ids)) < len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"search_templates: duplicate query id(s) {dup[:5]}")
    evalue = DEFAULT_EVALUE if evalue is None else float(evalue)
    settings = {"format": TEMPLATE_HITS_FORMAT, "evalue": evalue, "min_bits": MIN_BITS, "max_hits": int(max_hits),
                "ceilings": list(IDENTITY_CEILINGS), "exhaustive": exhaustive}
    cache = Path(cache_dir) if cache_dir is not None else None
    out: dict[str, TemplateHits] = {}
    todo = []
    for q in queries:
        rec = _read_cached(_cache_path(cache, db.fingerprint, _cache_key(q, settings)), q, db.fingerprint) \
            if cache is not None else None
        if rec is not None:
            out[q.id] = rec
        else:
            todo.append(q)
    n_cached = len(out)
    t_search = 0.0
    if todo:
        if exhaustive is None:
            exhaustive = len(todo) * len(db) <= EXHAUSTIVE_MAX_PAIRS
        # keys by position: ids may repeat between the query set and the database
        qseq = {f"q{i}": q.sequence for i, q in enumerate(todo)}
        tseq = {f"t{j}": s.sequence for j, s in enumerate(db.samples)}
        t1 = time.perf_counter()
        raw = search_hits(qseq, tseq, evalue=evalue, exhaustive=exhaustive, sensitivity=PREFILTER_SENSITIVITY,
                          threads=threads, workdir=workdir) if qseq and tseq else []
        t_search = time.perf_counter() - t1
        by_query: dict[int, list[dict]] = {}
        for h in raw:
            by_query.setdefault(int(h["query"][1:]), []).append(h)
        for i, q in enumerate(todo):
            cluster = getattr(q, "cluster", None)
            cand = []
            for h in by_query.get(i, []):
                t = int(h["target"][1:])
                s = db.samples[t]
                if h["bits"] < MIN_BITS or s.id == q.id or s.sequence == q.sequence:   # the leakage rule
                    continue
                cand.append(TemplateHit(target=t, target_id=s.id, identity=float(h["fident"]),
                                        evalue=float(h["evalue"]), bits=float(h["bits"]), coverage=0.0,
                                        target_cluster=s.cluster))
            pool = pool_hits(cand, cluster, max_hits)
            for hit in pool:
                hit.runs, hit.coverage = align_template(q.sequence, db.samples[hit.target])
            rec = TemplateHits(q.id, q.sequence, cluster, db.fingerprint, pool)
            out[q.id] = rec
            if cache is not None:
                text = json.dumps(rec.to_dict(), separators=(",", ":")) + "\n"
                atomic_write(_cache_path(cache, db.fingerprint, _cache_key(q, settings)), text)
    if stats is not None:
        stats.update(n_queries=len(queries), n_cached=n_cached, n_searched=len(todo),
                     n_with_hit=sum(bool(r.hits) for r in out.values()), search_seconds=round(t_search, 3),
                     seconds=round(time.perf_counter() - t0, 3))
    return {q.id: out[q.id] for q in queries}


# ----------------------------------------------------------------------------------------------------
# selection
# ----------------------------------------------------------------------------------------------------
def select_templates(found: TemplateHits, k: int = DEFAULT_K, *, max_identity: float = DEFAULT_MAX_IDENTITY,
                     drop_own_cluster: float = 0.0, dropout: float = 0.0,
                     rng: np.random.Generator | None = None) -> list[TemplateHit]:
    """Up to ``k`` hits of ``found``, best by bit score, none above ``max_identity``; with probability
    ``drop_own_cluster`` none from the query's own cluster, with probability ``dropout`` none at all
    (both need ``rng``; pass 0 outside training, the defaults)."""
    if (drop_own_cluster > 0 or dropout > 0) and rng is None:
        raise ValueError("select_templates: drop_own_cluster and dropout need an rng")
    if k <= 0 or (dropout > 0 and rng.random() < dropout):
        return []
    drop = drop_own_cluster > 0 and found.query_cluster is not None and rng.random() < drop_own_cluster
    hits = [h for h in sorted(found.hits, key=TemplateHit.rank) if h.identity <= max_identity
            and not (drop and h.target_cluster == found.query_cluster)]
    return hits[:k]


# ----------------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _similar_table() -> np.ndarray:
    """[25, 25] bool: positive BLOSUM62 score between two ALLOWED_AA letters (U, O scored as X)."""
    from Bio.Align import substitution_matrices

    m = substitution_matrices.load("BLOSUM62")
    letters = [a if a in m.alphabet else "X" for a in ALLOWED_AA]
    return np.array([[m[a][b] > 0 for b in letters] for a in letters], dtype=bool)


def _aa_index(seq: str) -> np.ndarray:
    return np.fromiter((_AA_INDEX.get(c, _AA_INDEX["X"]) for c in seq.upper()), dtype=np.int16, count=len(seq))


def hit_significance(evalue: float) -> float:
    """A hit's E-value as a feature: min(max(-log10 E, -1), 10) / 10, so E = 10 -> -0.1, 1 -> 0, 1e-3 -> 0.3,
    <= 1e-10 -> 1 (a chance hit and a clear relative can share identity and coverage; not their E-value)."""
    e = max(float(evalue), 1e-300)
    return min(max(-np.log10(e), -1.0), 10.0) / 10.0


def empty_features(L: int, k: int = DEFAULT_K) -> dict[str, np.ndarray]:
    """Features of ``k`` template slots with no template (the no-hit path: every mask False)."""
    return {"dist_bin": np.zeros((k, L, L), np.int16), "dist_A": np.zeros((k, L, L), np.float32),
            "pair_mask": np.zeros((k, L, L), bool), "aligned": np.zeros((k, L), bool),
            "identical": np.zeros((k, L), bool), "similar": np.zeros((k, L), bool),
            "aatype": np.full((k, L), GAP, np.int16), "identity": np.zeros(k, np.float32),
            "coverage": np.zeros(k, np.float32), "significance": np.zeros(k, np.float32),
            "template_mask": np.zeros(k, bool)}


def template_features(query_sequence: str, hits: Sequence[TemplateHit], db: TemplateDatabase,
                      k: int = DEFAULT_K, *, bin_edges: np.ndarray = DEFAULT_BIN_EDGES,
                      crop: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Template features of one query (module docstring, step 5) for its residues ``crop`` = (start, end)
    (default: all). Hits beyond ``k`` are ignored; a hit whose target is not a row of ``db`` is a
    ValueError."""
    from proteinmtp.geometry import distance_matrix

    L_full = len(query_sequence)
    start, end = (0, L_full) if crop is None else (int(crop[0]), int(crop[1]))
    if not 0 <= start <= end <= L_full:
        raise ValueError(f"template_features: crop {start}:{end} outside the query's {L_full} residues")
    L = end - start
    f = empty_features(L, k)
    edges = np.asarray(bin_edges, dtype=np.float64)
    q_aa = _aa_index(query_sequence[start:end])
    sim = _similar_table()
    for slot, hit in enumerate(hits[:k]):
        if not 0 <= hit.target < len(db.samples) or db.samples[hit.target].id != hit.target_id:
            raise ValueError(f"template {hit.target_id!r} (row {hit.target}) is not in the template database "
                             f"{db.path}; search again")
        t = db.samples[hit.target]
        qi, ti = hit.alignment()
        inside = (qi >= start) & (qi < end)
        qi, ti = qi[inside] - start, ti[inside]
        t_aa = _aa_index(t.sequence)[ti]
        f["aligned"][slot, qi] = True
        f["aatype"][slot, qi] = t_aa
        f["identical"][slot, qi] = t_aa == q_aa[qi]
        f["similar"][slot, qi] = sim[q_aa[qi], t_aa]
        ca = np.asarray(t.ca, dtype=np.float64)[ti]
        ok = np.isfinite(ca).all(axis=1)
        qi, ca = qi[ok], ca[ok]
        if len(qi):
            d = distance_matrix(ca)
            block = np.ix_(qi, qi)
            f["dist_A"][slot][block] = d
            f["dist_bin"][slot][block] = np.searchsorted(edges, d, side="left")
            f["pair_mask"][slot][block] = True
        f["identity"][slot] = hit.identity
        f["coverage"][slot] = hit.coverage
        f["significance"][slot] = hit_significance(hit.evalue)
        f["template_mask"][slot] = True
    np.einsum("kii->ki", f["pair_mask"])[:] = False          # no template "distance" of a residue to itself
    np.einsum("kii->ki", f["dist_A"])[:] = 0.0
    np.einsum("kii->ki", f["dist_bin"])[:] = 0
    return f


def crop_features(f: dict[str, np.ndarray], start: int, end: int) -> dict[str, np.ndarray]:
    """Rows and columns ``start:end`` of whole-chain features (per-hit scalars unchanged)."""
    out = {}
    for key, a in f.items():
        if a.ndim == 3:
            out[key] = a[:, start:end, start:end]
        elif a.ndim == 2:
            out[key] = a[:, start:end]
        else:
            out[key] = a
    return out


def stack_features(feats: Sequence[dict[str, np.ndarray]], L_pad: int) -> dict[str, np.ndarray]:
    """A batch [B, K, ...] of per-query features zero-padded to ``L_pad`` residues (padding: masks False,
    aatype GAP); every query must have the same K."""
    if not feats:
        raise ValueError("stack_features: no features")
    k = len(feats[0]["template_mask"])
    empty = empty_features(L_pad, k)
    out = {key: np.repeat(empty[key][None], len(feats), axis=0) for key in feats[0]}
    for b, f in enumerate(feats):
        if len(f["template_mask"]) != k:
            raise ValueError(f"stack_features: item {b} has {len(f['template_mask'])} template slots, not {k}")
        L = f["aligned"].shape[1]
        for key, a in f.items():
            if a.ndim == 3:
                out[key][b, :, :L, :L] = a
            elif a.ndim == 2:
                out[key][b, :, :L] = a
            else:
                out[key][b] = a
    return out


@dataclass
class TemplateProvider:
    """Features of the chains of one split, for a collator: the database, every chain's searched pool
    (``search_templates``), the selection options, K and the distogram bins.

    ``features(id, sequence, crop, training, rng)`` selects (training rules only when ``training``) and
    builds the features of rows/columns ``crop`` of the whole chain; ValueError when the chain was not
    searched or was searched for another sequence (search again).
    """

    db: TemplateDatabase
    found: dict[str, TemplateHits]
    options: TemplateOptions = field(default_factory=TemplateOptions)
    k: int = DEFAULT_K
    bin_edges: np.ndarray = field(default_factory=lambda: DEFAULT_BIN_EDGES.copy())
    by_sequence: dict[str, TemplateHits] = field(default_factory=dict)   # searched by sequence (query_id)

    def features(self, chain_id: str, sequence: str, crop: tuple[int, int] | None = None, *,
                 training: bool = False, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        rec = self.found.get(chain_id)
        if (rec is None or rec.query_sequence != sequence) and sequence in self.by_sequence:
            rec = self.by_sequence[sequence]
        if rec is None or rec.query_sequence != sequence:
            why = "was not searched" if rec is None else "was searched for another sequence"
            raise ValueError(f"templates: chain {chain_id!r} {why} in {self.db.path}; run search_templates "
                             "for this split")
        if rec.fingerprint != self.db.fingerprint:
            raise ValueError(f"templates: the hits of {chain_id!r} were found in another database than "
                             f"{self.db.path} (fingerprint differs); search again")
        hits = self.options.select(rec, self.k, training=training, rng=rng)
        return template_features(sequence, hits, self.db, self.k, bin_edges=self.bin_edges, crop=crop)


__all__ = ["TemplateError", "TemplateOptions", "TemplateDatabase", "TemplateHit", "TemplateHits",
           "database_fingerprint", "align_template", "pool_hits", "search_templates", "select_templates", "empty_features",
           "template_features", "crop_features", "stack_features", "TemplateProvider", "DEFAULT_K", "DEFAULT_MAX_HITS", "DEFAULT_MAX_IDENTITY",
           "IDENTITY_CEILINGS", "DEFAULT_BIN_EDGES", "GAP", "TEMPLATE_HITS_FORMAT"]
