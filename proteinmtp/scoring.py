"""Score a predicted structure (any predictor's PDB/mmCIF) against a native structure.

Residues are matched by a global sequence alignment of the two chains (identity when the sequences
are equal): ``Bio.Align.PairwiseAligner`` in global mode, BLOSUM62, gap open −10 / extend −0.5, end
gaps free (the EMBOSS needle defaults). Chains of a multi-chain file are paired greedily by alignment score (each
chain used once). The scores are computed over the NATIVE's residues (Cα present) of the *matched*
native chains, all chain pairs together: a native residue the prediction lacks (unaligned, or without
Cα) scores 0 in TM-score, GDT and lDDT (the CASP / OpenStructure convention), so a prediction of part
of the chain cannot score as if it were the whole. TM-score and GDT are normalised by that native
residue count (``n_native``); lDDT pools every native Cα pair within 15 Å; RMSD is over the residues
present in both (``n_aligned``). Native chains with no counterpart (e.g. a partner in a complex) are
left out.

The identity (identical residues over the aligned pairs) and the aligned fraction (aligned pairs over the
matched native chains' residues) are reported with the scores; below ``MIN_IDENTITY`` or
``MIN_ALIGNED_FRACTION`` the chains are unrelated and the pair is refused unless ``allow_mismatch``.

Pair list files (``--pairs``): one "pred<TAB>native" per line; blank lines, lines starting with "#",
and a header line "pred<TAB>native" are skipped. A relative path is taken as given (relative to the
working directory) when it exists, else relative to the TSV file's folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from proteinmtp.metric_registry import pair_metrics, structure_scores
from proteinmtp.structure import Chain, read_structure

# Below either, the chains are taken as unrelated and the pair is refused (unless allow_mismatch): a score of
# a prediction against another protein's native means nothing.
MIN_IDENTITY = 0.3            # identical residues / aligned residue pairs
MIN_ALIGNED_FRACTION = 0.5    # aligned residue pairs / residues of the matched native chains


class SequenceMismatchError(ValueError):
    """The prediction's sequence does not match the native's (identity or aligned fraction too low)."""


@lru_cache(maxsize=2)
def _aligner(mode: str = "global"):
    from Bio.Align import PairwiseAligner, substitution_matrices

    al = PairwiseAligner()
    al.mode = mode
    al.substitution_matrix = substitution_matrices.load("BLOSUM62")
    al.open_gap_score = -10.0
    al.extend_gap_score = -0.5
    al.open_end_gap_score = 0.0      # end gaps are free, as in needle (a truncated prediction is not
    al.extend_end_gap_score = 0.0    # split to put its last residue on the native's last one)
    return al


def _clean(seq: str) -> str:
    allowed = set("ARNDCQEGHILKMFPSTWYVBZX")
    return "".join(c if c in allowed else "X" for c in seq.upper())


def align_sequences(seq_a: str, seq_b: str, mode: str = "global") -> tuple[np.ndarray, np.ndarray, float]:
    """Alignment -> (idx_a [M], idx_b [M] matched residue indices, score). Identity if equal.

    ``mode``: "global" (whole chains, the default) or "local" (Smith-Waterman: only the best-scoring
    segment pair is matched); same BLOSUM62 and gap scores either way.
    """
    if mode not in ("global", "local"):
        raise ValueError(f"align_sequences: mode must be 'global' or 'local', got {mode!r}")
    if seq_a == seq_b:
        idx = np.arange(len(seq_a))
        return idx, idx.copy(), float(len(seq_a))
    if not seq_a or not seq_b:
        return np.zeros(0, int), np.zeros(0, int), 0.0
    al = _aligner(mode)
    aln = al.align(_clean(seq_a), _clean(seq_b))[0]
    ia, ib = [], []
    for (a0, a1), (b0, b1) in zip(*aln.aligned):
        ia.extend(range(a0, a1))
        ib.extend(range(b0, b1))
    return np.asarray(ia, dtype=int), np.asarray(ib, dtype=int), float(aln.score)


def match_chains(pred: Sequence[Chain], native: Sequence[Chain]) -> list[tuple[Chain, Chain, np.ndarray, np.ndarray]]:
    """Pair predicted and native chains greedily by alignment score (best pairs first).

    Returns [(pred_chain, native_chain, idx_pred [M], idx_native [M])]; unpaired chains are dropped.
    """
    cands = []
    for i, p in enumerate(pred):
        for j, n in enumerate(native):
            ia, ib, score = align_sequences(p.sequence, n.sequence)
            same_id = p.chain_id == n.chain_id
            cands.append((score, same_id, -i, -j, i, j, ia, ib))
    cands.sort(key=lambda c: (c[0], c[1], c[2], c[3]), reverse=True)
    used_p, used_n, out = set(), set(), []
    for score, _, _, _, i, j, ia, ib in cands:
        if i in used_p or j in used_n or len(ia) == 0 or score <= 0:
            continue
        used_p.add(i)
        used_n.add(j)
        out.append((pred[i], native[j], ia, ib))
    return out


def sequence_agreement(matches: Sequence[tuple[Chain, Chain, np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(identity, aligned fraction) of matched chains: identical residues over the aligned residue pairs, and
    aligned residue pairs over the residues of the matched native chains (0.0 when nothing is aligned)."""
    n_aligned = sum(len(ia) for _, _, ia, _ in matches)
    same = sum(sum(p.sequence[a] == n.sequence[b] for a, b in zip(ia, ib)) for p, n, ia, ib in matches)
    n_native = sum(len(n.sequence) for _, n, _, _ in matches)
    return (same / n_aligned if n_aligned else 0.0), (n_aligned / n_native if n_native else 0.0)


def score_chains(pred: Sequence[Chain], native: Sequence[Chain], *, allow_mismatch: bool = False) -> dict:
    """Scores of predicted chains against native chains (see module docstring).

    Returns {n_aligned, rmsd, tm_score, gdt_ts, gdt_ha, lddt, n_native, identity, aligned_fraction,
    chains: [[pred id, native id], …]}. Raises ``ValueError`` if no residue pair with both Cα can be
    matched, and :class:`SequenceMismatchError` when the identity is below ``MIN_IDENTITY`` or the aligned
    fraction below ``MIN_ALIGNED_FRACTION`` (:func:`sequence_agreement`), unless ``allow_mismatch``.
    """
    matches = match_chains(pred, native)
    identity, aligned_fraction = sequence_agreement(matches)
    if matches and not allow_mismatch and (identity < MIN_IDENTITY or aligned_fraction < MIN_ALIGNED_FRACTION):
        raise SequenceMismatchError(
            f"the sequences do not match: identity {identity:.2f} over the aligned residues (need ≥ "
            f"{MIN_IDENTITY}), {aligned_fraction:.0%} of the native aligned (need ≥ {MIN_ALIGNED_FRACTION:.0%}); "
            "pass --allow_mismatch to score them anyway")
    xs, ys = [], []
    for p, n, ia, ib in matches:
        x = np.full_like(n.ca, np.nan)          # the prediction laid out on the native's residues
        x[ib] = p.ca[ia]
        xs.append(x)
        ys.append(n.ca)
    if not xs:
        raise ValueError("no chain of the prediction aligns to a chain of the native")
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    present = np.isfinite(y).all(axis=1)
    ok = np.isfinite(x).all(axis=1) & present
    if ok.sum() < 3:
        raise ValueError(f"only {int(ok.sum())} aligned residues have Cα in both structures (need ≥ 3)")
    n_native = int(present.sum())
    out = structure_scores(x, y, pairs=True)    # over the native's residues; normalised by n_native
    out["n_native"] = n_native
    out["identity"] = identity
    out["aligned_fraction"] = aligned_fraction
    out["chains"] = [[p.id, n.id] for p, n, _, _ in matches]
    return out


def score_files(pred_path: str | Path, native_path: str | Path, *, allow_mismatch: bool = False) -> dict:
    """Score one predicted structure file against one native file.

    Returns {pred, native, n_aligned, rmsd, tm_score, gdt_ts, gdt_ha, lddt, n_native, identity,
    aligned_fraction, chains}.
    Raises ``structure.StructureReadError`` / ``ValueError`` with the file named.
    """
    pred = read_structure(pred_path)
    native = read_structure(native_path)
    if not pred:
        raise ValueError(f"{pred_path}: no protein chain found")
    if not native:
        raise ValueError(f"{native_path}: no protein chain found")
    try:
        res = score_chains(pred, native, allow_mismatch=allow_mismatch)
    except ValueError as e:
        raise type(e)(f"{pred_path} vs {native_path}: {e}") from e
    return {"pred": str(pred_path), "native": str(native_path), **res}


def read_pairs_tsv(path: str | Path) -> tuple[list[tuple[int, str, str]], list[dict]]:
    """Read a pair list (see module docstring).

    Returns (pairs [(line number, pred path, native path)], failures [{line, text, reason}] for lines
    that are not two tab-separated columns). Raises ``OSError`` when the file cannot be read and
    ``ValueError`` when it holds no pair line at all.
    """
    path = Path(path)
    base = path.parent
    pairs, failures = [], []
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            cols = s.split("\t")
            if len(cols) != 2:
                failures.append({"line": lineno, "text": s[:200],
                                 "reason": f"expected 'pred<TAB>native', got {len(cols)} column(s)"})
                continue
            if cols[0].lower() == "pred" and cols[1].lower() == "native":
                continue
            resolved = []
            for c in cols:
                p = Path(c.strip())
                if not p.is_absolute() and not p.exists() and (base / p).exists():
                    p = base / p
                resolved.append(str(p))
            pairs.append((lineno, resolved[0], resolved[1]))
    if not pairs and not failures:
        raise ValueError(f"{path}: no pairs found")
    return pairs, failures


def mean_scores(rows: Iterable[dict]) -> dict:
    """Mean of n_aligned, identity, aligned_fraction and each score over rows (NaN-safe; None when no row has the value)."""
    rows = list(rows)
    out: dict = {"n_pairs": len(rows)}
    for k in ("n_aligned", "identity", "aligned_fraction", *(m.name for m in pair_metrics())):
        vals = np.array([r[k] for r in rows if r.get(k) is not None], dtype=np.float64)
        out[k] = float(np.nanmean(vals)) if len(vals) and np.isfinite(vals).any() else None
    return out


def score_pairs(pairs: Sequence[tuple[int, str, str]], progress: bool = True,
                failures: Sequence[dict] = (), allow_mismatch: bool = False) -> dict:
    """Score many (line number, pred, native) pairs; a pair that cannot be scored (missing or unreadable
    file, no protein chain, nothing aligns) is listed with its line and reason and the others go on.

    Returns {"pairs": [row …] (each with its "line"), "mean": {...} over the scored pairs,
    "failed": [{line, pred, native, reason} …] (``failures`` from reading the list first), "n_failed"}.
    """
    rows, failed = [], list(failures)
    for lineno, p, n in tqdm(pairs, desc="scoring", unit="pair", disable=not progress):
        try:
            rows.append({"line": lineno, **score_files(p, n, allow_mismatch=allow_mismatch)})
        except (ValueError, OSError) as e:  # StructureReadError is a ValueError
            failed.append({"line": lineno, "pred": p, "native": n, "reason": str(e)})
    failed.sort(key=lambda f: f["line"])
    return {"pairs": rows, "mean": mean_scores(rows), "failed": failed, "n_failed": len(failed)}
