"""The nearest-training-neighbour baseline: what copying the closest training chain's distances gives.

For each query chain (an evaluated chain):

1. **Search.** One MMseqs2 search of all queries against all training chains
   (:func:`proteinmtp.splits.search_hits`), with no identity or coverage floor and E-value
   <= ``evalue`` (default 10, BLAST's permissive default: anything worse is indistinguishable from
   chance). Up to :data:`EXHAUSTIVE_MAX_PAIRS` query x train pairs every pair gets a Smith-Waterman
   alignment (``--prefilter-mode 2``, the most sensitive setting; ~2.3e-5 s per pair on one thread,
   so 5 M pairs take about two minutes); beyond that the k-mer prefilter at sensitivity 7.5 is used.
2. **Pick.** The hit with the highest bit score (ties: lower E-value, then the earlier training
   chain) is the neighbour, whatever its identity. Hits under :data:`MIN_BITS` (15) bits are dropped:
   MMseqs2 reports E ~ 0 for the 1-2-residue alignments it finds for low-complexity chains (poly-Pro
   against anything with a Pro, 4 bits), and E <= 10 already demands more than 15 bits of a
   100-residue query against any training set above ~3,300 residues (E ~ m n 2^-bits), so the floor
   drops only such artefacts. A query without any hit is counted and gets the prior everywhere.
3. **Align.** The pair is re-aligned with :func:`proteinmtp.scoring.align_sequences` in local mode
   (Smith-Waterman, BLOSUM62, gap -10/-0.5): only the homologous segment is matched, as in MMseqs2's own
   local alignment. (A global alignment would also pair up the non-homologous rest of two remote
   chains and copy distances that mean nothing.)
4. **Distances.** Pair (i, j) of the query takes the neighbour's Cα–Cα distance when both i and j are
   aligned to neighbour residues that have a Cα; every other pair takes the fallback (the run's
   separation prior), see :meth:`Neighbour.filled`.

``identity`` is MMseqs2's fident (identical residues / alignment length of its local alignment, as in
the leakage check); ``aligned_fraction`` is the fraction of the query's residues that receive a
neighbour residue with a Cα.

Compute once, reuse for every evaluation of the same test set (the prior is filled in per run)::

    from proteinmtp.neighbour import find_neighbours
    nbs = find_neighbours(train.samples, test.samples)          # NeighbourSet, one MMseqs2 search
    ev = evaluate_run(run, test.samples, neighbours=nbs)         # proteinmtp.evaluation
    nbs.save("neighbours.json.gz"); nbs = NeighbourSet.load("neighbours.json.gz")   # optional cache file
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from proteinmtp.fileio import atomic_write, read_bytes
from proteinmtp.geometry import distance_matrix
from proteinmtp.scoring import align_sequences
from proteinmtp.splits import search_hits

if TYPE_CHECKING:  # pragma: no cover
    from proteinmtp.dataset import Sample

DEFAULT_EVALUE = 10.0
MIN_BITS = 15.0
EXHAUSTIVE_MAX_PAIRS = 5_000_000
PREFILTER_SENSITIVITY = 7.5
NEIGHBOUR_FORMAT = "proteinmtp-neighbours/1"


@dataclass
class Neighbour:
    """The nearest training chain of one query and the aligned Cα coordinates it lends.

    query_idx [M] int: query residues aligned to a neighbour residue with a Cα (ascending);
    neighbour_idx [M] int: those neighbour residues; neighbour_ca [M, 3] Å their Cα coordinates.
    ``neighbour_id`` is None (and M = 0) when the search found no hit.
    """

    query_id: str
    query_sequence: str
    neighbour_id: str | None = None
    identity: float | None = None     # MMseqs2 fident of the hit
    evalue: float | None = None
    bits: float | None = None
    query_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    neighbour_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    neighbour_ca: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    @property
    def length(self) -> int:
        return len(self.query_sequence)

    @property
    def aligned_fraction(self) -> float:
        """Fraction of the query's residues that receive a neighbour residue with a Cα."""
        return len(self.query_idx) / self.length if self.length else 0.0

    def mask(self) -> np.ndarray:
        """[L, L] bool: True where the pair's distance comes from the neighbour."""
        m = np.zeros(self.length, bool)
        m[self.query_idx] = True
        return m[:, None] & m[None, :]

    def distances(self) -> np.ndarray:
        """[L, L] Å: the neighbour's Cα–Cα distances at aligned pairs, NaN elsewhere."""
        L = self.length
        out = np.full((L, L), np.nan)
        if len(self.query_idx):
            out[np.ix_(self.query_idx, self.query_idx)] = distance_matrix(self.neighbour_ca)
        return out

    def filled(self, fallback: np.ndarray) -> np.ndarray:
        """[L, L] Å: the neighbour's distances where aligned, ``fallback`` [L, L] (the prior) elsewhere."""
        fallback = np.asarray(fallback, dtype=np.float64)
        if fallback.shape != (self.length, self.length):
            raise ValueError(f"neighbour of {self.query_id!r}: fallback matrix {fallback.shape} does not match "
                             f"the query length {self.length}")
        d = self.distances()
        return np.where(np.isfinite(d), d, fallback)

    def to_dict(self) -> dict:
        return {"query_id": self.query_id, "query_sequence": self.query_sequence,
                "neighbour_id": self.neighbour_id, "identity": self.identity, "evalue": self.evalue,
                "bits": self.bits, "query_idx": [int(i) for i in self.query_idx],
                "neighbour_idx": [int(i) for i in self.neighbour_idx],
                "neighbour_ca": np.round(np.asarray(self.neighbour_ca, float), 3).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Neighbour:
        ca = np.asarray(d["neighbour_ca"], dtype=np.float64).reshape(-1, 3)
        return cls(query_id=str(d["query_id"]), query_sequence=str(d["query_sequence"]),
                   neighbour_id=d.get("neighbour_id"), identity=d.get("identity"), evalue=d.get("evalue"),
                   bits=d.get("bits"), query_idx=np.asarray(d["query_idx"], dtype=int),
                   neighbour_idx=np.asarray(d["neighbour_idx"], dtype=int), neighbour_ca=ca)


@dataclass
class NeighbourSet:
    """Neighbours of a set of queries (id → :class:`Neighbour`) and how they were found (``info``)."""

    by_id: dict[str, Neighbour]
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.by_id)

    def for_sample(self, sample: Sample) -> Neighbour:
        """The neighbour of ``sample``; ValueError when it is missing or was computed for another sequence."""
        nb = self.by_id.get(sample.id)
        if nb is None:
            raise ValueError(f"no precomputed neighbour for chain {sample.id!r}; compute the neighbours for "
                             "this test set (find_neighbours)")
        if nb.query_sequence != sample.sequence:
            raise ValueError(f"precomputed neighbour of {sample.id!r} was found for a different sequence; "
                             "recompute the neighbours for this test set")
        return nb

    def to_dict(self) -> dict:
        return {"format": NEIGHBOUR_FORMAT, "info": self.info,
                "neighbours": [nb.to_dict() for nb in self.by_id.values()]}

    @classmethod
    def from_dict(cls, d: dict, where: str = "neighbours") -> NeighbourSet:
        fmt = d.get("format") if isinstance(d, dict) else None
        if fmt != NEIGHBOUR_FORMAT:
            raise ValueError(f"{where}: unknown format {fmt!r} (this version reads {NEIGHBOUR_FORMAT!r})")
        try:
            nbs = [Neighbour.from_dict(x) for x in d["neighbours"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: malformed neighbour record ({e!r})") from None
        return cls({nb.query_id: nb for nb in nbs}, dict(d.get("info") or {}))

    def save(self, path: str | Path) -> Path:
        """Write JSON (gzipped when the name ends in .gz) atomically."""
        text = json.dumps(self.to_dict(), separators=(",", ":")) + "\n"
        data = gzip.compress(text.encode(), mtime=0) if str(path).endswith(".gz") else text
        return atomic_write(path, data)

    @classmethod
    def load(cls, path: str | Path) -> NeighbourSet:
        try:
            d = json.loads(read_bytes(path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a valid neighbour JSON ({e})") from None
        return cls.from_dict(d, where=str(path))


def _best_hits(hits: Sequence[dict]) -> dict[str, dict]:
    """query key → its best hit (highest bits, then lowest E-value, then the earliest target key)."""
    best: dict[str, dict] = {}
    for h in hits:
        if h["bits"] < MIN_BITS:
            continue
        rank = (-h["bits"], h["evalue"], int(h["target"][1:]))
        cur = best.get(h["query"])
        if cur is None or rank < (-cur["bits"], cur["evalue"], int(cur["target"][1:])):
            best[h["query"]] = h
    return best


def align_neighbour(query: Sample | str, neighbour: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Local alignment of a query sequence (or sample) to a neighbour chain:
    (query_idx [M], neighbour_idx [M]) of aligned pairs whose neighbour residue has a Cα."""
    seq = query if isinstance(query, str) else query.sequence
    qi, ti, _ = align_sequences(seq, neighbour.sequence, mode="local")
    keep = neighbour.mask()[ti] if len(ti) else np.zeros(0, bool)
    return qi[keep].astype(int), ti[keep].astype(int)


def find_neighbours(train: Sequence[Sample], queries: Sequence[Sample], *, evalue: float = DEFAULT_EVALUE,
                    exhaustive: bool | None = None, threads: int = 1,
                    workdir: str | Path | None = None) -> NeighbourSet:
    """The nearest training chain of every query (module docstring): one MMseqs2 search, then alignments.

    ``exhaustive`` None picks by size (exhaustive up to EXHAUSTIVE_MAX_PAIRS query x train pairs).
    ValueError for duplicate query ids; MMseqsError when MMseqs2 is missing or fails.
    """
    t0 = time.perf_counter()
    ids = [q.id for q in queries]
    dup = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if dup:
        raise ValueError(f"find_neighbours: duplicate query id(s) {dup[:5]}")
    if exhaustive is None:
        exhaustive = len(queries) * len(train) <= EXHAUSTIVE_MAX_PAIRS
    # keys by position: ids may repeat between the sets (search_hits drops same-key "self" hits)
    qseq = {f"q{i}": q.sequence for i, q in enumerate(queries)}
    tseq = {f"t{j}": t.sequence for j, t in enumerate(train)}
    hits = search_hits(qseq, tseq, evalue=evalue, exhaustive=exhaustive, sensitivity=PREFILTER_SENSITIVITY,
                       threads=threads, workdir=workdir) if qseq and tseq else []
    t_search = time.perf_counter() - t0
    best = _best_hits(hits)
    by_id: dict[str, Neighbour] = {}
    for i, q in enumerate(queries):
        h = best.get(f"q{i}")
        if h is None:
            by_id[q.id] = Neighbour(q.id, q.sequence)
            continue
        t = train[int(h["target"][1:])]
        qi, ti = align_neighbour(q, t)
        by_id[q.id] = Neighbour(q.id, q.sequence, neighbour_id=t.id, identity=float(h["fident"]),
                                evalue=float(h["evalue"]), bits=float(h["bits"]), query_idx=qi,
                                neighbour_idx=ti, neighbour_ca=np.asarray(t.ca, dtype=np.float64)[ti])
    n_hit = sum(nb.neighbour_id is not None for nb in by_id.values())
    info = {"evalue": float(evalue), "min_bits": MIN_BITS,
            "search": "exhaustive (every pair aligned, --prefilter-mode 2)" if exhaustive
                      else f"k-mer prefilter, sensitivity {PREFILTER_SENSITIVITY}",
            "alignment": "local (Smith-Waterman, BLOSUM62, gap -10/-0.5) of the best hit by bit score",
            "n_train_chains": len(train), "n_queries": len(queries), "n_with_hit": n_hit,
            "n_without_hit": len(queries) - n_hit, "search_seconds": round(t_search, 3),
            "seconds": round(time.perf_counter() - t0, 3)}
    return NeighbourSet(by_id, info)

