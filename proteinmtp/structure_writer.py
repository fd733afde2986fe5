"""Writing Cα traces as PDB or mmCIF (built by gemmi): confidence in the B-factor column, REMARKs made
printable, HELIX/SHEET records from predicted states, and a flag on any trace that breaks the geometry
bounds of a predicted structure (``metrics.clash_check``).

Example::

    from proteinmtp.structure_writer import write_pdb
    write_pdb("ca_trace.pdb", ca_xyz, sequence, model_name="native")   # ca_xyz [L, 3] Å
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import gemmi
import numpy as np

from proteinmtp.constants import AA1_TO_AA3
from proteinmtp.fileio import atomic_write


def _check_trace(ca_xyz: np.ndarray, sequence: str, residue_numbers, bfactors) -> tuple[np.ndarray, list, np.ndarray]:
    xyz = np.asarray(ca_xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"ca_xyz must have shape [L, 3], got {xyz.shape}")
    if len(sequence) != len(xyz):
        raise ValueError(f"sequence length {len(sequence)} != number of coordinates {len(xyz)}")
    if not np.isfinite(xyz).all():
        bad = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
        raise ValueError(f"ca_xyz has NaN/inf at residue index {bad[:5].tolist()}; cannot write a structure")
    if np.abs(xyz).max(initial=0.0) >= 1e4:
        raise ValueError("ca_xyz has coordinates beyond ±9999.999 Å, which the PDB format cannot hold")
    if residue_numbers is None:
        numbers = [str(i + 1) for i in range(len(xyz))]
    else:
        numbers = [str(n) for n in residue_numbers]
        if len(numbers) != len(xyz):
            raise ValueError(f"residue_numbers has {len(numbers)} entries for {len(xyz)} residues")
    if bfactors is None:
        b = np.zeros(len(xyz))
    else:
        b = np.asarray(bfactors, dtype=np.float64).reshape(-1)
        if len(b) != len(xyz) or not np.isfinite(b).all():
            raise ValueError("bfactors must be [L] finite values (confidence 0-100)")
        b = np.clip(b, 0.0, 999.99)
    return xyz, numbers, b


def _split_number(num: str) -> tuple[int, str]:
    digits = num.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    icode = num[len(digits):]
    try:
        return int(digits), (icode[:1] or " ")
    except ValueError:
        raise ValueError(f"residue number {num!r} is not an integer with an optional insertion code") from None


def printable(text: object) -> str:
    r"""``text`` as printable ASCII for a file's contents: every other character (control characters such as
    NUL, \x01, ESC, tab and newline; DEL; non-ASCII) becomes a Python-style escape (``\x1b``, ``\xe9``),
    so a FASTA id cannot inject terminal sequences, break a record, or end a PDB line. Printable ASCII
    (0x20–0x7e) is kept as it is.

    >>> printable("a\x00b\x1b[31m\u00e9")
    'a\\x00b\\x1b[31m\\xe9'
    """
    out = []
    for c in str(text):
        if " " <= c <= "~":
            out.append(c)
        else:
            out.append(c.encode("unicode_escape").decode("ascii") if c not in "\t\n\r" else f"\\x{ord(c):02x}")
    return "".join(out)


def _remark(number: int, text: str) -> list[str]:
    """REMARK records of at most 80 columns (long text continues on the next record); ``text`` is made
    printable ASCII first (``printable``)."""
    import textwrap

    lines = textwrap.wrap(printable(text), 68, break_on_hyphens=False) or [""]
    return [f"REMARK {number:3d} {line}".ljust(80) for line in lines]


def geometry_flag(xyz: np.ndarray, breaks: Sequence[int] = ()) -> str | None:
    """Why the Cα trace ``xyz`` [L, 3] Å breaks the bounds of a predicted structure (``metrics.clash_check``:
    non-bonded pairs ≥ 3.5 Å, i, i+2 ≥ 4.2 Å, bonds 3.8 ± 0.1 Å; ``breaks`` = i where i, i+1 are not bonded),
    as one line; None when it keeps them."""
    from proteinmtp.constants import BOND_TOLERANCE, CA_CA_BOND, CLASH_MIN_CA_CA, I2_MIN_CA_CA
    from proteinmtp.metrics import clash_check

    c = clash_check(xyz, breaks)
    if c["ok"]:
        return None
    parts = []
    if c["n_clashes"]:
        parts.append(f"{c['n_clashes']} non-bonded CA pairs < {CLASH_MIN_CA_CA:.1f} A ({c['clashes']:.1f} per 100 "
                     f"residues, closest {c['min_nonbonded']:.2f} A)")
    if c["n_i2_short"]:
        parts.append(f"{c['n_i2_short']} i,i+2 CA pairs < {I2_MIN_CA_CA:.1f} A (closest {c['min_i2']:.2f} A)")
    if c["n_bond_outliers"]:
        parts.append(f"{c['n_bond_outliers']} CA-CA bonds off {CA_CA_BOND:.2f} A by > {BOND_TOLERANCE:.2f} A "
                     f"(worst {c['max_bond_deviation']:.2f} A)")
    return "CA geometry out of bounds: " + "; ".join(parts)


def _resname(letter: str) -> str:
    return AA1_TO_AA3.get(letter.upper(), "UNK")


TRACE_FORMATS = ("pdb", "cif")


def _trace_structure(xyz: np.ndarray, sequence: str, numbers: list[str], b: np.ndarray, chain_id: str,
                     model_name: str) -> gemmi.Structure:
    """One model, one chain, one CA atom per residue (occupancy 1, B-factor = confidence) as gemmi builds it."""
    st = gemmi.Structure()
    st.name = re.sub(r"[^A-Za-z0-9._-]+", "_", printable(model_name or "proteinmtp"))   # the mmCIF data_ name
    st.info["_struct_keywords.pdbx_keywords"] = "PREDICTED CA TRACE"      # the PDB HEADER record
    model = gemmi.Model(1)
    chain = gemmi.Chain(chain_id)
    for i in range(len(xyz)):
        res = gemmi.Residue()
        res.name = _resname(sequence[i])
        num, icode = _split_number(numbers[i])
        res.seqid = gemmi.SeqId(num, icode)
        res.subchain = chain_id
        res.label_seq = i + 1
        res.entity_type = gemmi.EntityType.Polymer
        atom = gemmi.Atom()
        atom.name = "CA"
        atom.element = gemmi.Element("C")
        atom.pos = gemmi.Position(*xyz[i])
        atom.occ = 1.0
        atom.b_iso = float(b[i])
        res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    return st


def trace_string(
    ca_xyz: np.ndarray,
    sequence: str,
    *,
    fmt: str = "pdb",
    chain_id: str = "A",
    residue_numbers: Sequence[int | str] | None = None,
    bfactors: np.ndarray | None = None,
    model_name: str = "",
    method: str = "",
    remarks: Sequence[str] = (),
    ss8: str | None = None,
    breaks: Sequence[int] = (),
) -> str:
    """PDB (``fmt="pdb"``) or mmCIF (``fmt="cif"``) text of a Cα trace, built by gemmi from one structure.

    ca_xyz [L, 3] Å; sequence [L] one-letter codes (X -> UNK); residue_numbers [L] author numbers with an
    optional insertion code ("3A"; default 1..L); bfactors [L] confidence 0-100 written in the B-factor
    column (0 when None). The model name, reconstruction method and ``remarks`` go into REMARK 1 / 250
    records (PDB) or ``_proteinmtp.*`` items (mmCIF), as printable ASCII (``printable``: control characters
    from a FASTA id are escaped). ``ss8`` [L] DSSP 8-state letters (predicted) become HELIX/SHEET records
    (mmCIF: _struct_conf / _struct_sheet_range) via ``secondary.annotate_structure``.

    The trace is checked against the bounds of a predicted structure (``geometry_flag``; ``breaks``: i where
    residues i and i+1 are not bonded): one that breaks them is written, and flagged in ``REMARK 500`` (PDB's
    geometry remark) or ``_proteinmtp.geometry_check`` (mmCIF). Flagged rather than refused: the coordinates
    are still the user's result (and a native trace with a gap or a cis peptide is legitimately outside the
    bounds), and the flag tells every reader, people and programs, before they use it.
    """
    if fmt not in TRACE_FORMATS:
        raise ValueError(f"output format must be 'pdb' or 'cif', got {fmt!r}")
    xyz, numbers, b = _check_trace(ca_xyz, sequence, residue_numbers, bfactors)
    if fmt == "pdb" and len(chain_id) != 1:
        raise ValueError(f"PDB chain id must be one character, got {chain_id!r}")
    flag = geometry_flag(xyz, breaks)
    st = _trace_structure(xyz, sequence, numbers, b, chain_id, model_name)
    if ss8 is not None:
        from proteinmtp.secondary import annotate_structure, check_ss8

        annotate_structure(st, check_ss8(ss8, len(xyz), "ss8"))
    if fmt == "pdb":
        rem = _remark(1, f"MODEL {model_name or 'unknown'}")
        rem += _remark(1, f"RECONSTRUCTION {method or 'unknown'}")
        rem += _remark(1, "B-FACTOR COLUMN = PER-RESIDUE CONFIDENCE (0-100)")
        for r in remarks:
            rem += _remark(250, str(r))
        if flag:
            rem += _remark(500, flag.upper())
        st.raw_remarks = rem
        opt = gemmi.PdbWriteOptions()
        opt.cryst1_record = False            # a predicted trace has no unit cell
        return st.make_pdb_string(opt)
    doc = st.make_mmcif_document()
    block = doc.sole_block()
    block.set_pair("_proteinmtp.model_name", gemmi.cif.quote(printable(model_name or "unknown")))
    block.set_pair("_proteinmtp.reconstruction_method", gemmi.cif.quote(printable(method or "unknown")))
    block.set_pair("_proteinmtp.bfactor_meaning", gemmi.cif.quote("per-residue confidence (0-100)"))
    for k, r in enumerate(remarks):
        block.set_pair(f"_proteinmtp.remark_{k + 1}", gemmi.cif.quote(printable(r)))
    if flag:
        block.set_pair("_proteinmtp.geometry_check", gemmi.cif.quote(flag))
    return doc.as_string()


def pdb_string(ca_xyz: np.ndarray, sequence: str, **kwargs) -> str:
    """PDB text of a Cα trace: HEADER, REMARKs, one CA ATOM per residue, TER, END (``trace_string``)."""
    return trace_string(ca_xyz, sequence, fmt="pdb", **kwargs)


def mmcif_string(ca_xyz: np.ndarray, sequence: str, **kwargs) -> str:
    """mmCIF text of a Cα trace (same content as :func:`pdb_string`; ``trace_string``)."""
    return trace_string(ca_xyz, sequence, fmt="cif", **kwargs)


def write_trace(path: str | Path, ca_xyz: np.ndarray, sequence: str, *, fmt: str = "pdb", **kwargs) -> Path:
    """Write a Cα-trace PDB or mmCIF atomically (keyword arguments of :func:`trace_string`)."""
    return atomic_write(path, trace_string(ca_xyz, sequence, fmt=fmt, **kwargs))


def write_pdb(path: str | Path, ca_xyz: np.ndarray, sequence: str, **kwargs) -> None:
    """Write a Cα-trace PDB atomically (``write_trace`` with fmt="pdb")."""
    write_trace(path, ca_xyz, sequence, fmt="pdb", **kwargs)


def write_mmcif(path: str | Path, ca_xyz: np.ndarray, sequence: str, **kwargs) -> None:
    """Write a Cα-trace mmCIF atomically (``write_trace`` with fmt="cif")."""
    write_trace(path, ca_xyz, sequence, fmt="cif", **kwargs)

