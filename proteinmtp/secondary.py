"""Secondary structure: DSSP states from a backbone, the 8/3-state alphabets, Q3/Q8 scoring, and the
HELIX/SHEET annotation of predicted structures.

DSSP (Kabsch & Sander 1983, Biopolymers 22:2577) as implemented here
---------------------------------------------------------------------
No field-standard DSSP (the PDB-REDO ``dssp``/``mkdssp`` program or its Python bindings) installs as a wheel
on our package index; ``pydssp`` (pinned) is a simplified 3-state re-implementation (H/E/loop only, no
bridge/bulge/turn/bend rules, its own amide-H placement, no chain-break handling). So the 8 states are
derived here from the Kabsch–Sander rules, in the order of the classic DSSP 2.x program:

* H-bond energy E = 0.084 · 332 · (1/r_ON + 1/r_CH − 1/r_OH − 1/r_CN) kcal/mol between the C=O of residue
  i and the N–H of residue j, the amide H placed at N_j + unit(C_{j-1} − O_{j-1}) (K&S; no H on proline,
  on the first residue or after a chain break, where |C_{j-1} − N_j| > 2.5 Å); pairs with Cα–Cα ≥ 9 Å are
  not evaluated; an H-bond is E < −0.5 kcal/mol and, as in DSSP, each N–H keeps its two best acceptors.
* n-turn(i) (n = 3, 4, 5): H-bond C=O(i) → N–H(i+n) with no chain break in between.
* Bridges (|i − j| ≥ 3): parallel if [Hb(i−1, j) and Hb(j, i+1)] or [Hb(j−1, i) and Hb(i, j+1)];
  antiparallel if [Hb(i, j) and Hb(j, i)] or [Hb(i−1, j+1) and Hb(j−1, i+1)].
  Consecutive bridges of one type form ladders; two ladders of one type are joined across a β-bulge when
  the gap is < 3 residues on one strand and < 6 on the other (DSSP's rule). Residues of ladders with more
  than one bridge (or joined by a bulge, including the bulge residues) are E, of a lone bridge B.
* Helices: two consecutive n-turns at i−1 and i make residues i … i+n−1 helical. α (H, n = 4) is set
  first (over E/B, as in DSSP 2.x), then 3₁₀ (G) where all three residues are loop or G, then π (I,
  n = 5) where all five are loop or π.
* T (turn): a loop residue inside an n-turn (i < k < i+n for some n-turn at i); S (bend): a remaining loop
  residue whose Cα(i−2)→Cα(i) / Cα(i)→Cα(i+2) angle exceeds 70°. ``-``: anything else.
* ``?``: a residue without all of N, CA, C, O gets no state (masked in training and scoring).

DSSP 4's polyproline (P) state is not produced. The implementation is checked in tests against the
HELIX/SHEET records of deposited PDB files and against pydssp's H-bond energies and 3-state output.

Alphabets: 8-state ``SS8 = "HGIEBTS-"`` (index 0..7; class targets of the model's SS head) and 3-state
``SS3 = "HEC"`` with the usual reduction H, G, I → H; E, B → E; T, S, - → C. ``?`` stays ``?``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

SS8 = "HGIEBTS-"          # class order of the SS head's [L, 8] probabilities
SS3 = "HEC"
NO_STATE = "?"
SS8_TO_SS3 = {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "-": "C", NO_STATE: NO_STATE}
SS8_INDEX = {c: k for k, c in enumerate(SS8)}
IGNORE_INDEX = -100       # the label of a residue without a state (torch's cross-entropy ignore_index)

HBOND_MAX_ENERGY = -0.5   # kcal/mol
_HBOND_MIN_ENERGY = -9.9  # kcal/mol, DSSP's floor (atoms closer than 0.5 Å)
_COUPLING = 0.084 * 332.0
_CA_CUTOFF = 9.0          # Å, pairs evaluated for H-bonds
_PEPTIDE_MAX = 2.5        # Å, C(i)–N(i+1) longer than this is a chain break
_BEND_MIN_DEG = 70.0


def ss8_to_ss3(ss8: str) -> str:
    """3-state string of an 8-state DSSP string (H,G,I→H; E,B→E; T,S,-→C; ``?`` stays)."""
    try:
        return "".join(SS8_TO_SS3[c] for c in ss8)
    except KeyError as e:
        raise ValueError(f"not a DSSP 8-state letter: {e.args[0]!r} (expected one of {SS8!r} or {NO_STATE!r})") from None


def check_ss8(ss8: str, length: int, where: str = "ss8") -> str:
    """``ss8`` if it is a string of ``length`` letters from SS8 + ``?``; ValueError saying what is wrong."""
    if not isinstance(ss8, str):
        raise ValueError(f"{where} must be a string, got {type(ss8).__name__}")
    if len(ss8) != length:
        raise ValueError(f"{where} has {len(ss8)} states for {length} residues")
    bad = sorted(set(ss8) - set(SS8 + NO_STATE))
    if bad:
        raise ValueError(f"{where} has letters {bad} outside the DSSP alphabet {SS8!r} + {NO_STATE!r}")
    return ss8


def ss8_labels(ss8: str) -> np.ndarray:
    """[L] int64 class indices into SS8; IGNORE_INDEX where the state is ``?``."""
    return np.array([SS8_INDEX.get(c, IGNORE_INDEX) for c in ss8], dtype=np.int64)


def probs_to_ss8(probs: np.ndarray) -> str:
    """Most probable 8-state letter per residue of [L, 8] probabilities."""
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] != len(SS8):
        raise ValueError(f"SS probabilities must have shape [L, {len(SS8)}], got {p.shape}")
    return "".join(SS8[k] for k in p.argmax(axis=1))


# ---------------------------------------------------------------------------------------------
# DSSP
# ---------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / n


def hbond_energy(backbone: np.ndarray, hydrogens: np.ndarray, acceptor: np.ndarray, donor: np.ndarray) -> np.ndarray:
    """K&S electrostatic energy (kcal/mol) of C=O(acceptor) · · · H–N(donor) for index arrays of pairs."""
    o, c = backbone[acceptor, 3], backbone[acceptor, 2]
    n, h = backbone[donor, 0], hydrogens[donor]
    r_on = np.linalg.norm(o - n, axis=-1)
    r_ch = np.linalg.norm(c - h, axis=-1)
    r_oh = np.linalg.norm(o - h, axis=-1)
    r_cn = np.linalg.norm(c - n, axis=-1)
    close = np.minimum.reduce([r_on, r_ch, r_oh, r_cn]) < 0.5
    with np.errstate(divide="ignore"):
        e = _COUPLING * (1.0 / r_on + 1.0 / r_ch - 1.0 / r_oh - 1.0 / r_cn)
    return np.where(close, _HBOND_MIN_ENERGY, np.maximum(e, _HBOND_MIN_ENERGY))


def amide_hydrogens(backbone: np.ndarray, sequence: str, peptide_ok: np.ndarray) -> np.ndarray:
    """[L, 3] K&S amide H positions; NaN for proline, the first residue and residues after a break."""
    h = np.full((len(backbone), 3), np.nan)
    if len(backbone) > 1:
        h[1:] = backbone[1:, 0] + _unit(backbone[:-1, 2] - backbone[:-1, 3])
        h[1:][~peptide_ok] = np.nan
    pro = np.array([a == "P" for a in sequence], dtype=bool)
    h[pro] = np.nan
    return h


def hbond_matrix(backbone: np.ndarray, sequence: str) -> np.ndarray:
    """[L, L] bool, [i, j] True where C=O(i) accepts an H-bond from N–H(j) (E < −0.5 kcal/mol, each N–H
    keeping its two lowest-energy acceptors, as DSSP does)."""
    from scipy.spatial import cKDTree

    L = len(backbone)
    valid = np.isfinite(backbone).all(axis=(1, 2))
    peptide_ok = _peptide_ok(backbone, valid)
    h = amide_hydrogens(backbone, sequence, peptide_ok)
    hb = np.zeros((L, L), dtype=bool)
    idx = np.flatnonzero(valid)
    if len(idx) < 2:
        return hb
    pairs = cKDTree(backbone[idx, 1]).query_pairs(_CA_CUTOFF, output_type="ndarray")
    if len(pairs) == 0:
        return hb
    a, b = idx[pairs[:, 0]], idx[pairs[:, 1]]
    acc = np.concatenate([a, b])
    don = np.concatenate([b, a])
    keep = np.isfinite(h[don]).all(axis=1) & (don != acc + 1)
    acc, don = acc[keep], don[keep]
    e = hbond_energy(backbone, h, acc, don)
    ok = e < HBOND_MAX_ENERGY
    acc, don, e = acc[ok], don[ok], e[ok]
    if len(e):
        order = np.lexsort((e, don))              # by donor, then energy
        acc, don = acc[order], don[order]
        first = np.r_[True, don[1:] != don[:-1]]
        rank = np.arange(len(don)) - np.maximum.accumulate(np.where(first, np.arange(len(don)), 0))
        best2 = rank < 2
        hb[acc[best2], don[best2]] = True
    return hb


def _peptide_ok(backbone: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[L-1] bool: residues i and i+1 both complete and |C(i) − N(i+1)| ≤ 2.5 Å."""
    if len(backbone) < 2:
        return np.zeros(0, dtype=bool)
    d = np.linalg.norm(backbone[:-1, 2] - backbone[1:, 0], axis=-1)
    with np.errstate(invalid="ignore"):
        return valid[:-1] & valid[1:] & (d <= _PEPTIDE_MAX)


def _bulge_joinable(kind: str, first: dict, second: dict) -> bool:
    iei = first["i"][-1]
    jbi, jei = first["j"][0], first["j"][-1]
    ibj = second["i"][0]
    jbj, jej = second["j"][0], second["j"][-1]
    # DSSP computes these gaps in unsigned arithmetic: a negative gap (overlap, wrong order) never joins
    if not (0 <= ibj - iei < 6 and iei < ibj):
        return False
    gap_j = jbj - jei if kind == "p" else jbi - jej
    return gap_j >= 0 and ((gap_j < 6 and ibj - iei < 3) or gap_j < 3)


def _ladders(hb: np.ndarray, peptide_ok: np.ndarray) -> list[dict]:
    """Bridges grouped into ladders (DSSP): dicts with kind 'p'/'a', residue lists i (ascending) and j."""
    L = len(hb)
    if L < 5:
        return []
    # cont[k]: residues k-1, k, k+1 exist and are bonded (no break)
    cont = np.zeros(L, dtype=bool)
    cont[1:-1] = peptide_ok[:-1] & peptide_ok[1:]
    H = hb
    Hm = np.zeros_like(H)  # Hm[i, j] = H[i-1, j]
    Hm[1:] = H[:-1]
    # parallel: H[i-1, j] & H[j, i+1]  |  H[j-1, i] & H[i, j+1]
    T = H.T                                   # T[i, j] = H[j, i]
    Tp = np.zeros_like(H)                     # Tp[i, j] = H[j, i+1] = T[i+1, j]
    Tp[:-1] = T[1:]
    par = Hm & Tp
    par |= par.T                              # the second term is the first with i, j swapped
    # antiparallel: H[i, j] & H[j, i]  |  H[i-1, j+1] & H[j-1, i+1]
    anti = H & T
    X = np.zeros_like(H)                      # X[i, j] = H[i-1, j+1]
    X[1:, :-1] = H[:-1, 1:]
    anti |= X & X.T
    ok = cont[:, None] & cont[None, :] & (np.arange(L)[None, :] - np.arange(L)[:, None] >= 3)
    par &= ok
    anti &= ok
    bridges = sorted([(int(i), int(j), "p") for i, j in np.argwhere(par)]
                     + [(int(i), int(j), "a") for i, j in np.argwhere(anti)])
    ladders: list[dict] = []
    for i, j, kind in bridges:
        for lad in ladders:
            if lad["kind"] != kind or lad["i"][-1] != i - 1:
                continue
            if (kind == "p" and lad["j"][-1] == j - 1) or (kind == "a" and lad["j"][0] == j + 1):
                lad["i"].append(i)
                if kind == "p":
                    lad["j"].append(j)
                else:
                    lad["j"].insert(0, j)
                break
        else:
            ladders.append({"kind": kind, "i": [i], "j": [j], "bulge": False})
    # join ladders across beta-bulges
    merged = True
    while merged:
        merged = False
        for x in range(len(ladders)):
            for y in range(len(ladders)):
                lx, ly = ladders[x], ladders[y]
                if x == y or lx["kind"] != ly["kind"] or not _bulge_joinable(lx["kind"], lx, ly):
                    continue
                lx["i"] = sorted(set(range(lx["i"][0], ly["i"][-1] + 1)))
                lo, hi = min(lx["j"][0], ly["j"][0]), max(lx["j"][-1], ly["j"][-1])
                lx["j"] = list(range(lo, hi + 1))
                lx["bulge"] = True
                del ladders[y]
                merged = True
                break
            if merged:
                break
    return ladders


def dssp_ss8(backbone: np.ndarray, sequence: str) -> str:
    """8-state DSSP string (letters of SS8, ``?`` where N, CA, C or O is missing) of one chain.

    backbone: [L, 4, 3] Å, atoms N, CA, C, O per residue (NaN where missing); sequence: [L] one-letter
    codes (only proline matters: it has no amide H).
    """
    bb = np.asarray(backbone, dtype=np.float64)
    if bb.ndim != 3 or bb.shape[1:] != (4, 3):
        raise ValueError(f"backbone must have shape [L, 4, 3] (N, CA, C, O), got {bb.shape}")
    if len(sequence) != len(bb):
        raise ValueError(f"sequence length {len(sequence)} != backbone length {len(bb)}")
    L = len(bb)
    valid = np.isfinite(bb).all(axis=(1, 2))
    ss = np.array(["-"] * L, dtype="<U1")
    if L == 0:
        return ""
    peptide_ok = _peptide_ok(bb, valid)
    hb = hbond_matrix(bb, sequence)
    # no break between i and i+n
    brk_prefix = np.concatenate([[0], np.cumsum(~peptide_ok)])    # breaks before residue k

    def no_break(i: np.ndarray, n: int) -> np.ndarray:
        return brk_prefix[i + n] - brk_prefix[i] == 0

    # beta ladders first; helices overwrite them (DSSP 2.x order)
    for lad in _ladders(hb, peptide_ok):
        letter = "E" if (len(lad["i"]) > 1 or lad["bulge"]) else "B"
        for k in list(lad["i"]) + list(lad["j"]):
            if letter == "E" or ss[k] != "E":
                ss[k] = letter
    turn: dict[int, np.ndarray] = {}
    for n in (3, 4, 5):
        t = np.zeros(L, dtype=bool)
        if L > n:
            i = np.arange(L - n)
            t[: L - n] = hb[i, i + n] & no_break(i, n)
        turn[n] = t
    starts = {n: np.flatnonzero(turn[n][1:] & turn[n][:-1]) + 1 for n in (3, 4, 5)}
    for i in starts[4]:
        ss[i:i + 4] = "H"
    for i in starts[3]:
        if np.all((ss[i:i + 3] == "-") | (ss[i:i + 3] == "G")):
            ss[i:i + 3] = "G"
    for i in starts[5]:
        if np.all((ss[i:i + 5] == "-") | (ss[i:i + 5] == "I")):
            ss[i:i + 5] = "I"
    # turns: loop residues strictly inside an n-turn
    in_turn = np.zeros(L, dtype=bool)
    for n in (3, 4, 5):
        for i in np.flatnonzero(turn[n]):
            in_turn[i + 1:i + n] = True
    ss[(ss == "-") & in_turn] = "T"
    # bends on the Cα trace
    ca = bb[:, 1]
    if L >= 5:
        k = np.arange(2, L - 2)
        v1 = ca[k] - ca[k - 2]
        v2 = ca[k + 2] - ca[k]
        with np.errstate(invalid="ignore", divide="ignore"):
            cosang = np.einsum("ij,ij->i", v1, v2) / (np.linalg.norm(v1, axis=1) * np.linalg.norm(v2, axis=1))
            bend = np.degrees(np.arccos(np.clip(cosang, -1, 1))) > _BEND_MIN_DEG
        bend &= no_break(k - 2, 4)
        kk = k[bend]
        ss[kk[ss[kk] == "-"]] = "S"
    ss[~valid] = NO_STATE
    return "".join(ss.tolist())


def chain_ss8(chain) -> str | None:
    """DSSP 8-state string of a ``structure.Chain`` (None when the chain carries no backbone)."""
    backbone = getattr(chain, "backbone", None)
    if backbone is None:
        return None
    return dssp_ss8(backbone, chain.sequence)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def _pairs(true: Iterable[str], pred: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    t_all, p_all = [], []
    for t, p in zip(true, pred, strict=True):
        if len(t) != len(p):
            raise ValueError(f"true and predicted SS strings differ in length ({len(t)} vs {len(p)})")
        t_all.append(t)
        p_all.append(p)
    t = np.array(list("".join(t_all)), dtype="<U1")
    p = np.array(list("".join(p_all)), dtype="<U1")
    keep = t != NO_STATE
    return t[keep], p[keep]


def q_score(true: Iterable[str], pred: Iterable[str]) -> float:
    """Fraction of residues (pooled over chains) whose predicted state equals the true one; residues with
    true state ``?`` are skipped. Works for 8-state (Q8) or 3-state (Q3) strings alike. NaN if none."""
    t, p = _pairs(true, pred)
    return float((t == p).mean()) if len(t) else float("nan")


def majority_baseline(true: Iterable[str]) -> tuple[str, float]:
    """(most frequent state, its frequency) over residues with a state: the Q of always predicting it."""
    t = np.array(list("".join(true)), dtype="<U1")
    t = t[t != NO_STATE]
    if len(t) == 0:
        return "", float("nan")
    letters, counts = np.unique(t, return_counts=True)
    k = int(counts.argmax())
    return str(letters[k]), float(counts[k] / len(t))


def eval_pairs(sample, pred) -> list[tuple[str, str]]:
    """``[(true ss8, predicted ss8)]`` of one evaluated chain (a dataset Sample and its DistancePrediction);
    ``[]`` when the sample has no DSSP labels or the model no SS head."""
    probs = getattr(pred, "ss_probs", None)
    true = getattr(sample, "ss8", None)
    if probs is None or true is None:
        return []
    return [(true, probs_to_ss8(probs))]


def ss_block(pairs: Sequence[tuple[str, str]]) -> dict | None:
    """The ``ss`` block of eval_results.json from (true, predicted) ss8 strings per chain: ``q3``, ``q8``,
    ``q3_majority`` (Q3 of always predicting the test set's most frequent 3-state class), the 8-state
    majority, and counts, pooled over residues with a true state. None when no chain has any."""
    pairs = [(t, p) for t, p in pairs if set(t) - {NO_STATE}]
    if not pairs:
        return None
    t8 = [t for t, _ in pairs]
    p8 = [p for _, p in pairs]
    t3 = [ss8_to_ss3(t) for t in t8]
    p3 = [ss8_to_ss3(p) for p in p8]
    maj3, q3_maj = majority_baseline(t3)
    maj8, q8_maj = majority_baseline(t8)
    return {
        "q3": q_score(t3, p3),
        "q8": q_score(t8, p8),
        "q3_majority": q3_maj,
        "q3_majority_state": maj3,
        "q8_majority": q8_maj,
        "q8_majority_state": maj8,
        "n_chains": len(pairs),
        "n_residues": int(sum(sum(c != NO_STATE for c in t) for t in t8)),
    }


# ---------------------------------------------------------------------------------------------
# HELIX / SHEET annotation
# ---------------------------------------------------------------------------------------------

# PDB helix classes (HELIX record columns 39-40): 1 right-handed α, 3 right-handed π, 5 right-handed 3₁₀
_HELIX_CLASS = {"H": "RAlpha", "I": "RPi", "G": "R310"}
MIN_HELIX = {"H": 4, "G": 3, "I": 5}   # shortest run written as a HELIX record
MIN_STRAND = 2                          # shortest E run written as a SHEET strand


def segments(ss8: str) -> list[tuple[str, int, int]]:
    """Runs of one letter: (letter, first index, last index) for H/G/I (at least MIN_HELIX) and E (at
    least MIN_STRAND residues)."""
    out = []
    i = 0
    while i < len(ss8):
        j = i
        while j + 1 < len(ss8) and ss8[j + 1] == ss8[i]:
            j += 1
        c = ss8[i]
        n = j - i + 1
        if (c in MIN_HELIX and n >= MIN_HELIX[c]) or (c == "E" and n >= MIN_STRAND):
            out.append((c, i, j))
        i = j + 1
    return out


def annotate_structure(st, ss8: str) -> None:
    """Add helices and (one-strand-each) sheets of the predicted states to a one-chain gemmi Structure, so
    that gemmi writes PDB HELIX/SHEET records and mmCIF _struct_conf/_struct_sheet_range.

    Strand pairing is not predicted, so every E segment becomes its own one-strand sheet (S1, S2, …): the
    records say where strands are, not how they pair.
    """
    import gemmi

    chain = st[0][0]
    if len(ss8) != len(chain):
        raise ValueError(f"ss8 has {len(ss8)} states for {len(chain)} residues")

    def address(k: int):
        res = chain[k]
        return gemmi.AtomAddress(chain.name, res.seqid, res.name, "CA")

    n_sheet = 0
    for letter, i, j in segments(ss8):
        if letter in _HELIX_CLASS:
            helix = gemmi.Helix()
            helix.start = address(i)
            helix.end = address(j)
            helix.pdb_helix_class = getattr(gemmi.Helix.HelixClass, _HELIX_CLASS[letter])
            helix.length = j - i + 1
            st.helices.append(helix)
        else:
            n_sheet += 1
            sheet = gemmi.Sheet(f"S{n_sheet}")
            strand = gemmi.Sheet.Strand()
            strand.start = address(i)
            strand.end = address(j)
            strand.name = "1"
            strand.sense = 0
            sheet.strands.append(strand)
            st.sheets.append(sheet)
