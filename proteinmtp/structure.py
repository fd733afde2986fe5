"""Reading protein chains from PDB/mmCIF files (plain or gzipped); writing Cα traces is ``structure_writer``.

Reading goes through gemmi (a bare gemmi read is ~25x faster than Bio.PDB on these files); the atoms
of the first model are then taken as numpy columns (gemmi.FlatStructure), not residue by residue in
Python. For every protein chain of the FIRST model we keep the modelled residues, in file order:

    sequence     one letter per residue: the 20 standard amino acids; modified residues such as
                 MSE -> M, SEP -> S, MLY -> K where gemmi's residue table knows the parent; anything
                 else (UNK, unknown HETATM residues inside the polymer) -> X
    ca           [L, 3] float64 Å, NaN row where the residue has no Cα atom
    cb           [L, 3] float64 Å, Cβ (Cα for Gly), NaN where missing
    residue_ids  author residue number + insertion code, as strings ("52", "52A")
    backbone     [L, 4, 3] float64 Å, atoms N, CA, C, O (NaN where missing; same altloc as the Cα): the
                 input of the DSSP assignment (proteinmtp.secondary), not stored in datasets
    breaks       indices i with |Cα(i+1) - Cα(i)| > 4.2 Å (recorded, never closed)

Alternate locations: per residue, the altloc with the highest summed occupancy is kept (ties: the
first letter); point mutations modelled as two residues at one position keep the one whose Cα has
the higher occupancy. Waters, ligands, caps (ACE, NH2) and DNA/RNA chains are skipped.

Example::

    from proteinmtp.structure import read_structure
    from proteinmtp.structure_writer import write_pdb
    chains = read_structure("data/demo/structures/1A2K_l_u.pdb.gz")
    write_pdb("ca_trace.pdb", chains[0].ca, chains[0].sequence, model_name="native")
"""

from __future__ import annotations

import functools
import io
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath

import gemmi
import numpy as np

from proteinmtp.constants import STANDARD_AA
from proteinmtp.fileio import read_bytes
from proteinmtp.geometry import chain_breaks

# File extensions recognised as structures (after stripping .gz). Order matters for stems: longest first.
PDB_EXTENSIONS = (".pdb", ".ent", ".brk")
CIF_EXTENSIONS = (".cif", ".mmcif")
STRUCTURE_EXTENSIONS = CIF_EXTENSIONS + PDB_EXTENSIONS
# Structure formats recognised but not readable: gemmi 0.7.5 has no BinaryCIF reader (gemmi.read_structure
# says "Unknown format"), so such files are reported with this reason instead of being skipped unseen.
BINARY_CIF_EXTENSIONS = (".bcif",)
BINARY_CIF_REASON = (f"BinaryCIF is not supported (gemmi {gemmi.__version__} cannot read it); "
                     "convert it to text mmCIF (.cif) first")

_PROTEIN_TYPES = (gemmi.PolymerType.PeptideL, gemmi.PolymerType.PeptideD)
_NUCLEIC_TYPES = (gemmi.PolymerType.Dna, gemmi.PolymerType.Rna, gemmi.PolymerType.DnaRnaHybrid)


BLANK_CHAIN = "_"  # written in sample ids for a blank author chain id ("1ACB_l_u:_"); chain_id stays ""


class StructureReadError(ValueError):
    """A structure file could not be read; the message names the file and the reason."""


@dataclass(frozen=True)
class Chain:
    """One protein chain of the first model of a structure file."""

    id: str                        # "<stem>:<author chain id>" ("_" for a blank chain id)
    chain_id: str                  # author chain id
    sequence: str                  # [L] one-letter codes (20 standard, else X)
    ca: np.ndarray                 # [L, 3] float64 Å, NaN row where the residue has no Cα
    cb: np.ndarray                 # [L, 3] float64 Å, Cβ (Cα for Gly), NaN where missing
    residue_ids: tuple[str, ...]   # [L] author number + insertion code
    source: str                    # the file path as given
    breaks: tuple[int, ...]        # i such that |Cα(i+1) - Cα(i)| > 4.2 Å
    backbone: np.ndarray | None = None  # [L, 4, 3] float64 Å, N/CA/C/O (NaN where missing), for DSSP

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def mask(self) -> np.ndarray:
        """[L] bool, True where the residue has a Cα."""
        return ~np.isnan(self.ca).any(axis=1)


def is_structure_file(path: str | Path) -> bool:
    """True if the name ends in a structure extension (.pdb/.ent/.brk/.cif/.mmcif, optionally .gz)."""
    name = _file_name(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(STRUCTURE_EXTENSIONS)


def _file_name(path: str | Path) -> str:
    return path.name if isinstance(path, PurePath) else Path(path).name


def is_binary_cif(path: str | Path) -> bool:
    """True if the name ends in .bcif (optionally .gz): a BinaryCIF file, which cannot be read."""
    name = _file_name(path).lower().removesuffix(".gz")
    return name.endswith(BINARY_CIF_EXTENSIONS)


def _looks_like_binary_cif(raw: bytes) -> bool:
    """MessagePack map (BinaryCIF's encoding) with a "dataBlocks" key at the start."""
    return len(raw) > 0 and (0x80 <= raw[0] <= 0x8F or raw[0] in (0xDE, 0xDF)) and b"dataBlocks" in raw[:64]


def structure_stem(path: str | Path) -> str:
    """File name without .gz and without its structure extension: ``3KPR.cif.gz`` -> ``3KPR``."""
    name = _file_name(path)
    if name.lower().endswith(".gz"):
        name = name[:-3]
    for ext in STRUCTURE_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


@functools.lru_cache(maxsize=4096)
def one_letter(resname: str) -> str:
    """One-letter code of a residue name: standard -> itself, modified -> parent if known, else X."""
    info = gemmi.find_tabulated_residue(resname)
    if info is None or not info.is_amino_acid():
        return "X"
    code = info.one_letter_code.upper()
    return code if code in STANDARD_AA else "X"


@functools.lru_cache(maxsize=4096)
def _tabulated_amino_acid(resname: str) -> bool | None:
    """True/False if gemmi's residue table knows the name, None if it does not."""
    info = gemmi.find_tabulated_residue(resname)
    if info is not None and info.found() and info.kind != gemmi.ResidueKind.UNKNOWN:
        return info.is_amino_acid()
    return None


def _read_text(path: Path) -> str:
    if is_binary_cif(path):
        raise StructureReadError(f"{path}: {BINARY_CIF_REASON}")
    try:
        raw = read_bytes(path)
    except OSError as e:
        raise StructureReadError(f"{path}: cannot open file ({e.strerror or e})") from e
    except ValueError as e:
        raise StructureReadError(f"{path}: {e}") from e
    if not raw.strip():
        raise StructureReadError(f"{path}: file is empty")
    if _looks_like_binary_cif(raw):
        raise StructureReadError(f"{path}: {BINARY_CIF_REASON}")
    if b"\x00" in raw[:4096]:
        raise StructureReadError(f"{path}: binary content, not a PDB or mmCIF text file")
    return raw.decode("latin-1")


def _looks_like_cif(path: Path, text: str) -> bool:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(CIF_EXTENSIONS):
        return True
    if name.endswith(PDB_EXTENSIONS):
        return False
    for line in io.StringIO(text[:20000]):
        s = line.strip()
        if s and not s.startswith("#"):
            return s.startswith("data_")
    return False


_PDB_ATOM = re.compile(r"^(?:ATOM  |HETATM)", re.M)
_PDB_ALTLOC = re.compile(r"\n(?:ATOM  |HETATM).{10}[^ ]")  # "\n" anchor: 5x faster than re.M "^"


def _parse(path: Path, notes: list[str] | None = None) -> tuple[gemmi.Structure, Callable[[], bool]]:
    """Parse with gemmi; returns (structure, whether the file marks alternate locations).

    The second is a function: it scans the whole text (PDB: column 17 of the ATOM/HETATM records; mmCIF:
    _atom_site.label_alt_id), and the reader needs it only for files whose first model has altloc atoms.
    """
    text = _read_text(path)
    try:
        if _looks_like_cif(path, text):
            doc = gemmi.cif.read_string(text)
            if len(doc) == 0:
                raise StructureReadError(f"{path}: mmCIF file has no data block")
            block = doc.sole_block() if len(doc) == 1 else doc[0]
            _check_cif_atom_site(path, block)
            def has_altloc() -> bool:
                return not set(block.find_values("_atom_site.label_alt_id")) <= {".", "?"}

            st = gemmi.make_structure_from_block(block)
        else:
            if _PDB_ATOM.search(text) is None:
                raise StructureReadError(f"{path}: no ATOM/HETATM records; not a PDB file")
            _check_pdb_last_line(path, text)
            def has_altloc() -> bool:
                return _PDB_ALTLOC.search("\n" + text[:80]) is not None or _PDB_ALTLOC.search(text) is not None

            try:
                st = gemmi.read_pdb_string(text)
            except RuntimeError as e:
                if "charge" not in str(e).lower():
                    raise
                # Columns 73-80 (segment id, element, charge) hold junk in some files (e.g. DB5.5 bound
                # structures): read columns 1-72 only; gemmi then infers elements from atom names.
                st = gemmi.read_pdb_string(text, max_line_length=72)
                if notes is not None:
                    notes.append(f"columns 73-80 ignored ({e})")
    except StructureReadError:
        raise
    except (RuntimeError, ValueError, IndexError) as e:
        reason = "truncated or corrupt file" if "too short" in str(e) else "malformed structure file"
        raise StructureReadError(f"{path}: {reason} ({e})") from e
    if len(st) == 0 or not any(len(ch) for ch in st[0]):
        raise StructureReadError(f"{path}: no atoms in the first model")
    return st, has_altloc


def _check_cif_atom_site(path: Path, block: gemmi.cif.Block) -> None:
    """The _atom_site table must exist and every row must be an ATOM or HETATM record."""
    table = block.find("_atom_site.", ["Cartn_x", "Cartn_y", "Cartn_z"])
    if len(table) == 0:
        raise StructureReadError(f"{path}: mmCIF block has no _atom_site coordinates")
    groups = list(block.find_values("_atom_site.group_PDB"))
    if not set(groups) <= {"ATOM", "HETATM"}:
        row, value = next((row, v) for row, v in enumerate(groups, start=1) if v not in ("ATOM", "HETATM"))
        raise StructureReadError(
            f"{path}: invalid mmCIF: _atom_site row {row} has group_PDB {value!r} (expected ATOM or HETATM)"
        )
    try:
        np.array([list(table.column(k)) for k in range(3)], dtype=np.float64)  # float() of every value
    except ValueError:
        for row, xyz in enumerate(table, start=1):
            try:
                float(xyz[0]), float(xyz[1]), float(xyz[2])
            except ValueError:
                raise StructureReadError(
                    f"{path}: invalid mmCIF: _atom_site row {row} has non-numeric coordinates {list(xyz)}"
                ) from None
        raise


def _check_pdb_last_line(path: Path, text: str) -> None:
    """A file cut inside its last ATOM record is truncated: the last line has no newline and is
    shorter than the ATOM record before it (gemmi itself rejects records too short for x, y, z)."""
    if text.endswith("\n"):
        return
    start = text.rfind("\n") + 1
    last = text[start:].rstrip("\r")
    if not last.startswith(("ATOM  ", "HETATM")):
        return
    prev_start = text.rfind("\n", 0, max(start - 1, 0)) + 1
    prev = text[prev_start : max(start - 1, 0)].rstrip("\r")
    if len(last) < 54 or (prev.startswith(("ATOM  ", "HETATM")) and len(last) < len(prev)):
        lineno = text.count("\n") + 1
        raise StructureReadError(f"{path}: line {lineno}: last ATOM record is cut short (truncated file)")


_POLYMER = gemmi.EntityType.Polymer.value
_BACKBONE = ("N", "CA", "C", "O")  # backbone column order; CB is kind 4
_KINDS = {name: k for k, name in enumerate((*_BACKBONE, "CB"))}
_NO_NUM = np.iinfo(np.int32).min  # gemmi's SeqId.num "none" (Python None) as FlatStructure stores it


def _name_code(name: str) -> int:
    """A name padded to 8 bytes, read as one little-endian uint64: how FlatStructure's char[8] columns compare."""
    return int.from_bytes(name.encode().ljust(8, b"\0"), "little")


_KIND_SORTED = np.sort(np.array([_name_code(n) for n in _KINDS], dtype=np.uint64))
_KIND_ORDER = np.array([next(k for n, k in _KINDS.items() if _name_code(n) == c) for c in _KIND_SORTED.tolist()])


@dataclass
class _Atoms:
    """The first model as flat columns: atoms in file order, grouped into residues and chains."""

    pos: np.ndarray        # [N, 3] float64
    occ: np.ndarray        # [N] float32
    altloc: np.ndarray     # [N] uint8, 0 = none
    kind: np.ndarray       # [N] int8: index into _KINDS (N, CA, C, O, CB), -1 for any other atom
    res_start: np.ndarray  # [R + 1] first atom of each residue
    res_name: np.ndarray   # [R] index into names
    names: list[str]       # residue names
    resnum: np.ndarray     # [R] int32 (_NO_NUM when gemmi has none)
    icode: np.ndarray      # [R] uint8
    entity: np.ndarray     # [R] gemmi.EntityType value
    chain_start: np.ndarray  # [C + 1] first residue of each chain


def _flat_atoms(model: gemmi.Model, st: gemmi.Structure) -> _Atoms:
    """Flat columns of the model, through gemmi.FlatStructure (st must hold only this model).

    FlatStructure has no residue index: a residue starts where the number, insertion code or name
    changes. Every such change is a residue boundary, so when their count equals gemmi's residue count
    all boundaries were found. gemmi's readers never put two residues with the same number and name next
    to each other in a chain part, but a chain part may start like the previous one ends, and PDB
    residues may differ only by segment id; there, or where FlatStructure refuses a name of 8+
    characters, the columns are collected residue by residue instead (_walked_atoms).
    """
    sizes = [len(chain) for chain in model]
    try:
        fs = gemmi.FlatStructure(st)
    except RuntimeError:
        return _walked_atoms(model)
    name = fs.residue_names.view(np.uint64).ravel()
    resnum = fs.resnums
    icode = fs.icodes.view(np.uint8)
    new = np.ones(len(name), dtype=bool)
    new[1:] = (resnum[1:] != resnum[:-1]) | (icode[1:] != icode[:-1]) | (name[1:] != name[:-1])
    first = np.flatnonzero(new)
    if len(first) != sum(sizes):
        return _walked_atoms(model)
    codes = np.unique(name[first])
    atom = fs.atom_names.view(np.uint64).ravel()
    i = np.searchsorted(_KIND_SORTED, atom) % len(_KIND_SORTED)
    kind = np.where(_KIND_SORTED[i] == atom, _KIND_ORDER[i], -1).astype(np.int8)
    return _Atoms(
        pos=fs.pos, occ=fs.occ, altloc=fs.altlocs.view(np.uint8), kind=kind,
        res_start=np.append(first, len(name)), res_name=np.searchsorted(codes, name[first]),
        names=[int(c).to_bytes(8, "little").rstrip(b"\0").decode() for c in codes],
        resnum=resnum[first], icode=icode[first], entity=fs.entity_type[first],
        chain_start=np.cumsum([0, *sizes]),
    )


def _walked_atoms(model: gemmi.Model) -> _Atoms:
    """The same columns as _flat_atoms, collected residue by residue (files FlatStructure cannot take)."""
    pos: list[list[float]] = []
    occ: list[float] = []
    altloc: list[int] = []
    kind: list[int] = []
    res_start: list[int] = []
    res_name: list[int] = []
    names: dict[str, int] = {}
    resnum: list[int] = []
    icode: list[int] = []
    entity: list[int] = []
    chain_start: list[int] = []
    for chain in model:
        chain_start.append(len(res_start))
        for res in chain:
            res_start.append(len(occ))
            res_name.append(names.setdefault(res.name, len(names)))
            num = res.seqid.num
            resnum.append(_NO_NUM if num is None else num)
            icode.append(ord(res.seqid.icode))
            entity.append(res.entity_type.value)
            for a in res:
                pos.append(a.pos.tolist())
                occ.append(a.occ)
                altloc.append(ord(a.altloc))
                kind.append(_KINDS.get(a.name, -1))
    return _Atoms(
        pos=np.array(pos, dtype=np.float64).reshape(-1, 3), occ=np.array(occ, dtype=np.float32),
        altloc=np.array(altloc, dtype=np.uint8), kind=np.array(kind, dtype=np.int8),
        res_start=np.array([*res_start, len(occ)], dtype=np.int64), res_name=np.array(res_name, dtype=np.int64),
        names=list(names), resnum=np.array(resnum, dtype=np.int32), icode=np.array(icode, dtype=np.uint8),
        entity=np.array(entity, dtype=np.uint8), chain_start=np.array([*chain_start, len(res_start)], dtype=np.int64),
    )


def _first_per_group(*keys: np.ndarray) -> np.ndarray:
    """Positions (in lexsort order of ``keys``, last key primary) of the first row of each primary group."""
    order = np.lexsort(keys)
    g = keys[-1][order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    return order[first]


def _chosen_altloc(at: _Atoms, res_of: np.ndarray) -> np.ndarray:
    """[R] per residue the altloc letter with the highest summed occupancy (ties: first letter), 0 if none."""
    chosen = np.zeros(len(at.res_name), dtype=np.uint8)
    idx = np.flatnonzero(at.altloc)
    if len(idx):
        keys, inv = np.unique(res_of[idx] * 256 + at.altloc[idx], return_inverse=True)
        total = np.bincount(inv, weights=at.occ[idx].astype(np.float64))  # summed in atom order
        res, letter = keys // 256, keys % 256
        best = _first_per_group(letter, -total, res)
        chosen[res[best]] = letter[best]
    return chosen


def _picked_atoms(at: _Atoms, res_of: np.ndarray, has_altloc: bool) -> np.ndarray:
    """[R, 5] per residue the atom index of N, CA, C, O, CB (-1 where missing).

    Without altlocs in the file: the first atom of that name. With: the first one with no altloc or the
    residue's chosen altloc, else the highest-occupancy one (first on ties).
    """
    idx = np.flatnonzero(at.kind >= 0)
    res, kind = res_of[idx], at.kind[idx]
    if has_altloc:
        a = at.altloc[idx]
        preferred = (a == 0) | (a == _chosen_altloc(at, res_of)[res])
        occ = np.where(preferred, 0.0, -at.occ[idx].astype(np.float64))
        best = _first_per_group(idx, occ, ~preferred, res * 8 + kind)
    else:
        key = res * len(_KINDS) + kind
        out = np.full(len(at.res_name) * len(_KINDS), -1, dtype=np.int64)
        if len(key) and np.bincount(key).max() == 1:  # each name once per residue: nothing to choose
            out[key] = idx
            return out.reshape(-1, len(_KINDS))
        order = np.argsort(key, kind="stable")  # first atom of each (residue, name)
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[order][1:] != key[order][:-1]
        best = order[first]
    out = np.full((len(at.res_name), len(_KINDS)), -1, dtype=np.int64)
    out[res[best], kind[best]] = idx[best]
    return out


def _one_per_position(sel: np.ndarray, at: _Atoms, ca_occ: np.ndarray) -> np.ndarray:
    """Residues at one number + insertion code (two residue names, altloc A/B): the higher max Cα occupancy."""
    num, ic = at.resnum[sel], at.icode[sel]
    same = (num[1:] == num[:-1]) & (ic[1:] == ic[:-1])
    if not same.any():
        return sel
    group = np.concatenate(([0], np.cumsum(~same)))
    keep = _first_per_group(np.arange(len(sel)), -ca_occ[sel], group)
    return sel[np.sort(keep)]


_ICODE_SUFFIX = np.array(["" if c == ord(" ") else chr(c) for c in range(256)])  # blank insertion code: none


def _residue_ids(num: np.ndarray, icode: np.ndarray) -> tuple[str, ...]:
    """"52", "52A": author number and insertion code (gemmi's "no number" reads "None", as str(None))."""
    ids = list(map(str, num.tolist()))
    for i in np.flatnonzero(num == _NO_NUM).tolist():
        ids[i] = "None"
    if (icode != ord(" ")).any():
        return tuple(map(operator.add, ids, _ICODE_SUFFIX[icode].tolist()))
    return tuple(ids)


def read_structure(path: str | Path, notes: list[str] | None = None) -> list[Chain]:
    """Protein chains of the first model of a PDB/mmCIF file (plain or .gz).

    Returns an empty list for a valid structure with no protein chain (e.g. DNA only).
    Raises StructureReadError (naming the file and the reason) for an empty, truncated, binary or
    otherwise unreadable file. Repairs made while reading (e.g. junk in PDB columns 73-80) are
    appended to ``notes`` when a list is given.
    """
    source = str(path)
    path = Path(path)
    st, has_altloc = _parse(path, notes)
    del st[1:]  # only the first model is read: later models need no entity set-up
    st.setup_entities()
    stem = structure_stem(path)
    model = st[0]
    names = [chain.name for chain in model]
    spans: list[tuple[int, int, bool]] = []  # (chain index, polymer length, protein polymer type)
    for i, chain in enumerate(model):
        polymer = chain.get_polymer()
        if len(polymer) == 0:
            continue
        ptype = polymer.check_polymer_type()
        if ptype not in _NUCLEIC_TYPES:
            spans.append((i, len(polymer), ptype in _PROTEIN_TYPES))
    if not spans:
        return []
    at = _flat_atoms(model, st)
    n_res = len(at.res_name)
    res_of = np.repeat(np.arange(n_res), np.diff(at.res_start))
    ca_atoms = np.flatnonzero(at.kind == _KINDS["CA"])
    has_ca = np.zeros(n_res, dtype=bool)
    has_ca[res_of[ca_atoms]] = True
    ca_occ = np.full(n_res, -1.0)  # max Cα occupancy, -1 without Cα
    if len(ca_atoms):
        r = res_of[ca_atoms]
        first = np.flatnonzero(np.concatenate(([True], r[1:] != r[:-1])))  # Cα atoms come residue by residue
        ca_occ[r[first]] = np.maximum.reduceat(at.occ[ca_atoms].astype(np.float64), first)
    # amino acid: by gemmi's residue table; a name it does not know counts if the residue has a Cα
    known = np.array([{True: 1, False: 0, None: -1}[_tabulated_amino_acid(n)] for n in at.names], dtype=np.int8)
    amino = (known[at.res_name] == 1) | ((known[at.res_name] == -1) & has_ca)
    letters = np.frombuffer("".join(one_letter(n) for n in at.names).encode(), dtype=np.uint8)[at.res_name]

    by_name: dict[str, list[np.ndarray]] = {}
    for i, length, protein in spans:
        r0, r1 = at.chain_start[i], at.chain_start[i + 1]
        start = r0 + int(np.argmax(at.entity[r0:r1] == _POLYMER))  # gemmi's get_polymer() begins here
        sel = _one_per_position(start + np.flatnonzero(amino[start:start + length]), at, ca_occ)
        if not protein and int(has_ca[sel].sum()) < 2:
            continue
        if len(sel):
            by_name.setdefault(names[i], []).append(sel)
    if not by_name:
        return []
    # without altloc atoms in the first model both rules of _picked_atoms agree: skip the scan for marks
    picked = _picked_atoms(at, res_of, bool(at.altloc.any()) and has_altloc())
    chains: list[Chain] = []
    for name, parts in by_name.items():
        sel = np.concatenate(parts)
        atoms = picked[sel]
        gly = letters[sel] == ord("G")
        atoms[gly, _KINDS["CB"]] = atoms[gly, _KINDS["CA"]]  # Gly: Cβ := Cα
        xyz = at.pos[atoms]  # [L, 5, 3]
        xyz[atoms < 0] = np.nan  # missing atom (index -1)
        ca = np.ascontiguousarray(xyz[:, _KINDS["CA"]])
        chains.append(
            Chain(
                id=f"{stem}:{name or BLANK_CHAIN}",
                chain_id=name,
                sequence=letters[sel].tobytes().decode("ascii"),
                ca=ca,
                cb=np.ascontiguousarray(xyz[:, _KINDS["CB"]]),
                residue_ids=_residue_ids(at.resnum[sel], at.icode[sel]),
                source=source,
                breaks=chain_breaks(ca),
                backbone=np.ascontiguousarray(xyz[:, :4]),
            )
        )
    return chains
