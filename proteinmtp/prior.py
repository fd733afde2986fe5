"""Length-aware sequence-separation prior: the baseline every model is reported beside.

For a chain of length L the prior predicts d_ij = mean Cα–Cα distance at separation k = |i − j| among
training chains whose length falls in the same length bin as L. Compactness grows with length, so a
length-blind profile flatters long-range predictions; binning by length removes that advantage.

Fallbacks, in order, for a separation k where the bin is thin (fewer than ``min_chains`` chains
reach k): the bin pooled with its two neighbours, then all chains pooled, then (k beyond every
training chain) growth from the last known value as k^ν, ν the exponent of a power law fitted to
the pooled profile's upper half, capped at 0.4 (compact globule). So ``predict`` works for any L ≥ 1.

Saved as JSON (``format`` = "proteinmtp-prior/1") with the run directory; no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from proteinmtp.fileio import write_json
from proteinmtp.geometry import distance_matrix

PRIOR_FORMAT = "proteinmtp-prior/1"
DEFAULT_BIN_EDGES = (0, 64, 96, 128, 160, 192, 256, 320, 384, 512, 768)  # chain length bins (last open)
DEFAULT_MIN_CHAINS = 5
MAX_TAIL_EXPONENT = 0.4   # compact globule: distances grow no faster than ~k^0.4 beyond the data


def _ca_of(sample) -> np.ndarray:
    ca = sample.ca if hasattr(sample, "ca") else sample
    ca = np.asarray(ca, dtype=np.float64)
    if ca.ndim != 2 or ca.shape[1] != 3:
        raise ValueError(f"SeparationPrior.fit: expected Cα coordinates [L, 3], got {ca.shape}")
    return ca


class SeparationPrior:
    """Mean Cα–Cα distance per separation |i − j|, per chain-length bin.

    Attributes: ``bin_edges`` (lengths; bin b holds lo ≤ L < hi, the last bin is open), per bin
    ``sums`` [K] Å, ``n_pairs`` [K], ``n_chains`` [K] (chains reaching separation k; index 0 unused),
    ``min_chains``, and the power-law tail ``(a, b)``.
    """

    def __init__(self, bin_edges: Sequence[int], sums: list[np.ndarray], n_pairs: list[np.ndarray],
                 n_chains: list[np.ndarray], chains_per_bin: Sequence[int], min_chains: int,
                 power_law: tuple[float, float]):
        self.bin_edges = [int(e) for e in bin_edges]
        self.sums = [np.asarray(s, dtype=np.float64) for s in sums]
        self.n_pairs = [np.asarray(n, dtype=np.int64) for n in n_pairs]
        self.n_chains = [np.asarray(n, dtype=np.int64) for n in n_chains]
        self.chains_per_bin = [int(c) for c in chains_per_bin]
        self.min_chains = int(min_chains)
        self.power_law = (float(power_law[0]), float(power_law[1]))

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, samples: Iterable, *, bin_edges: Sequence[int] = DEFAULT_BIN_EDGES,
            min_chains: int = DEFAULT_MIN_CHAINS) -> SeparationPrior:
        """Fit on chains (objects with ``.ca`` [L, 3] Å, NaN rows missing, e.g. dataset.Sample).

        Raises ``ValueError`` if no chain has two present residues.
        """
        edges = list(bin_edges)
        nb = len(edges)
        sums = [np.zeros(1) for _ in range(nb)]
        npairs = [np.zeros(1, np.int64) for _ in range(nb)]
        nch = [np.zeros(1, np.int64) for _ in range(nb)]
        per_bin = [0] * nb
        any_pairs = False
        for s in samples:
            ca = _ca_of(s)
            L = len(ca)
            if L < 2:
                continue
            d = distance_matrix(ca)
            iu, ju = np.triu_indices(L, 1)
            v = d[iu, ju]
            ok = np.isfinite(v)
            if not ok.any():
                continue
            any_pairs = True
            k = (ju - iu)[ok]
            s_k = np.bincount(k, weights=v[ok], minlength=L)
            n_k = np.bincount(k, minlength=L)
            b = int(np.searchsorted(edges, L, side="right") - 1)
            b = max(b, 0)
            if len(sums[b]) < L:
                for arr_list, dtype in ((sums, np.float64), (npairs, np.int64), (nch, np.int64)):
                    old = arr_list[b]
                    grown = np.zeros(L, dtype=dtype)
                    grown[: len(old)] = old
                    arr_list[b] = grown
            sums[b][:L] += s_k
            npairs[b][:L] += n_k
            nch[b][:L] += (n_k > 0)
            per_bin[b] += 1
        if not any_pairs:
            raise ValueError("SeparationPrior.fit: no chain with at least two residues with Cα coordinates")
        prior = cls(edges, sums, npairs, nch, per_bin, min_chains, (1.0, 0.0))
        prior.power_law = prior._fit_power_law()
        return prior

    def _pooled(self, bins: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        K = max(len(self.sums[b]) for b in bins)
        s = np.zeros(K)
        n = np.zeros(K, np.int64)
        c = np.zeros(K, np.int64)
        for b in bins:
            m = len(self.sums[b])
            s[:m] += self.sums[b]
            n[:m] += self.n_pairs[b]
            c[:m] += self.n_chains[b]
        return s, n, c

    def _fit_power_law(self) -> tuple[float, float]:
        s, n, c = self._pooled(range(len(self.bin_edges)))
        k = np.nonzero((n > 0) & (np.arange(len(n)) > 0))[0]
        if len(k) < 2:
            return (float(s[k[0]] / n[k[0]]) if len(k) else 3.8, 0.0)
        k = k[k >= max(k.max() // 2, 1)] if len(k) >= 8 else k
        y = s[k] / n[k]
        b, loga = np.polyfit(np.log(k), np.log(y), 1, w=np.sqrt(n[k]))
        return float(np.exp(loga)), float(max(b, 0.0))

    # ------------------------------------------------------------------ prediction
    def bin_of(self, length: int) -> int:
        """Index of the length bin holding ``length``."""
        return max(int(np.searchsorted(self.bin_edges, length, side="right") - 1), 0)

    def profile(self, length: int) -> np.ndarray:
        """Predicted mean distance at separations 0..L−1 for a chain of ``length`` L. [L] Å, [0] = 0."""
        L = int(length)
        if L < 1:
            raise ValueError(f"SeparationPrior.profile: length must be ≥ 1, got {length}")
        b = self.bin_of(L)
        nb = len(self.bin_edges)
        out = np.full(L, np.nan)
        out[0] = 0.0
        levels = [[b], [x for x in (b - 1, b, b + 1) if 0 <= x < nb], list(range(nb))]
        for bins in levels:
            s, n, c = self._pooled(bins)
            K = min(len(s), L)
            k = np.arange(K)
            good = (c[:K] >= self.min_chains) & (n[:K] > 0) & np.isnan(out[:K])
            if bins is levels[-1]:
                good = (n[:K] > 0) & np.isnan(out[:K])   # last data level: any data at all
            out[k[good]] = s[:K][good] / n[:K][good]
        missing = np.isnan(out)
        if missing.any():  # beyond every training chain: grow from the last known value as k^ν
            nu = min(self.power_law[1], MAX_TAIL_EXPONENT)
            known = np.nonzero(~missing)[0]
            k_last = int(known[known > 0].max()) if (known > 0).any() else 0
            kk = np.arange(L)[missing].astype(np.float64)
            if k_last > 0:
                out[missing] = out[k_last] * (kk / k_last) ** nu
            else:
                out[missing] = self.power_law[0] * kk ** self.power_law[1]
        return out

    def predict(self, length: int) -> np.ndarray:
        """Prior distance matrix for a chain of ``length`` L: [L, L] Å, symmetric, zero diagonal."""
        prof = self.profile(length)
        idx = np.arange(int(length))
        return prof[np.abs(idx[:, None] - idx[None, :])]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "format": PRIOR_FORMAT,
            "bin_edges": self.bin_edges,
            "min_chains": self.min_chains,
            "power_law": list(self.power_law),
            "bins": [
                {"chains": self.chains_per_bin[b], "sums": self.sums[b].round(4).tolist(),
                 "n_pairs": self.n_pairs[b].tolist(), "n_chains": self.n_chains[b].tolist()}
                for b in range(len(self.bin_edges))
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> SeparationPrior:
        fmt = d.get("format") if isinstance(d, dict) else None
        if fmt != PRIOR_FORMAT:
            raise ValueError(f"SeparationPrior: unknown format {fmt!r} (this version reads {PRIOR_FORMAT!r})")
        try:
            bins = d["bins"]
            return cls(d["bin_edges"], [b["sums"] for b in bins], [b["n_pairs"] for b in bins],
                       [b["n_chains"] for b in bins], [b["chains"] for b in bins], d["min_chains"],
                       tuple(d["power_law"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"SeparationPrior: malformed prior dict ({e!r})") from e

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (temporary file + os.replace)."""
        write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | Path) -> SeparationPrior:
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a valid prior JSON ({e})") from e
        return cls.from_dict(d)


# ---------------------------------------------------------------------- shipped with the dataset
SHIPPED_PRIOR_NAME = "prior.json"   # written by create_distmat_data.py beside train.json(.gz)


def stored_coords(ca) -> np.ndarray:
    """[L, 3] Cα as a dataset file stores and loads them: rounded to 1e-3 Å, a row with any NaN all NaN
    (``proteinmtp.dataset`` JSON), so a prior fitted at build time equals one fitted on the loaded file."""
    ca = np.round(np.asarray(ca, dtype=np.float64), 3)
    ca[np.isnan(ca).any(axis=1)] = np.nan
    return ca


def training_fingerprint(samples: Iterable) -> dict:
    """Provenance of a prior: {"n_chains", "sha256"} over the chains' ids, sequences and stored Cα, in order."""
    import hashlib

    h = hashlib.sha256()
    n = 0
    for s in samples:
        ca = stored_coords(s.ca)
        ok = ~np.isnan(ca).any(axis=1)
        h.update(f"{s.id}\t{s.sequence}\t{len(ca)}\n".encode())
        h.update(ok.tobytes())
        h.update(np.where(ok[:, None], ca, 0.0).tobytes())
        n += 1
    return {"n_chains": n, "sha256": h.hexdigest()}


def fit_shipped(train_samples: Sequence) -> dict:
    """The prior of a training split, fitted on its coordinates as stored, with its provenance
    (``training_chains``): the content of the dataset's ``prior.json``."""
    prior = SeparationPrior.fit(stored_coords(s.ca) for s in train_samples)
    return {**prior.to_dict(), "training_chains": training_fingerprint(train_samples)}


def prior_for_training(train_path: str | Path, train_samples: Sequence) -> tuple[SeparationPrior, str]:
    """(prior, one line saying where it came from) for training on ``train_samples`` read from
    ``train_path``: the dataset's shipped ``prior.json`` when it is there, readable, and its
    ``training_chains`` fingerprint matches these chains; otherwise fitted on them (the same result,
    computed again)."""
    path = Path(train_path).parent / SHIPPED_PRIOR_NAME
    why = f"no {path}"
    if path.is_file():
        try:
            with open(path) as f:
                d = json.load(f)
            shipped = SeparationPrior.from_dict(d)
        except (OSError, ValueError) as e:
            why = f"{path} unreadable ({e})"
        else:
            if d.get("training_chains") == training_fingerprint(train_samples):
                return shipped, f"separation prior: {path} (shipped with the dataset; its training chains match)"
            why = f"{path} was fitted on other training chains"
    return SeparationPrior.fit(train_samples), f"separation prior: fitted on the training split ({why})"
