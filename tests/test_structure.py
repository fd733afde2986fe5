"""structure.py against an independent reader (Biopython + its own three->one table) and round trips."""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import gemmi
import numpy as np
import pytest
from Bio.Data.PDBData import protein_letters_1to3, protein_letters_3to1_extended
from Bio.PDB import MMCIFParser, PDBParser

from proteinmtp.structure import StructureReadError, is_structure_file, read_structure, structure_stem
from proteinmtp.structure_writer import mmcif_string, pdb_string, write_mmcif, write_pdb

STANDARD3 = {
    "ALA", "CYS", "ASP", "GLU", "PHE", "GLY", "HIS", "ILE", "LYS", "LEU",
    "MET", "ASN", "PRO", "GLN", "ARG", "SER", "THR", "VAL", "TRP", "TYR",
}


def biopython_chains(path: Path) -> dict[str, tuple[str, np.ndarray, list[str]]]:
    """Independent read: Biopython, first model, residues with a CA or N (amino acids), own 3->1 table.

    Biopython's DisorderedAtom selects the highest-occupancy altloc, which is our rule too.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    name = str(path).removesuffix(".gz")
    parser = MMCIFParser(QUIET=True) if name.endswith(".cif") else PDBParser(QUIET=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with opener(path, "rt") as fh:
            st = parser.get_structure("x", fh)
    out = {}
    for chain in next(iter(st)):
        seq, ca, ids = [], [], []
        for res in chain:
            het, num, icode = res.id
            if het == "W":
                continue
            is_aa = res.resname in STANDARD3 or res.resname in protein_letters_3to1_extended
            if not is_aa or (het != " " and "CA" not in res):
                continue
            seq.append(protein_letters_3to1_extended.get(res.resname, "X"))
            ca.append(res["CA"].coord if "CA" in res else [np.nan] * 3)
            ids.append(f"{num}{icode.strip()}")
        if seq:
            out[chain.id] = ("".join(seq), np.array(ca, dtype=float), ids)
    return out


@pytest.mark.parametrize(
    "name",
    ["3KPR.pdb.gz", "3KPR.cif.gz", "1A8O.pdb.gz", "1A8O.cif.gz", "19hc.pdb.gz", "2BEG.pdb.gz",
     "2XHE.pdb.gz", "1LCD.pdb.gz", "nmr_neopetrosiamide.pdb.gz", "disordered.pdb.gz"],
)
def test_matches_biopython(test_data_dir: Path, name: str) -> None:
    ours = {c.chain_id: c for c in read_structure(test_data_dir / name)}
    ref = biopython_chains(test_data_dir / name)
    assert set(ours) == set(ref)
    for cid, (seq, ca, ids) in ref.items():
        c = ours[cid]
        assert c.sequence == seq
        assert list(c.residue_ids) == ids
        np.testing.assert_allclose(c.ca, ca, atol=1e-3)
        assert c.id == f"{structure_stem(name)}:{cid}"


def test_pdb_and_mmcif_identical_3kpr(test_data_dir: Path) -> None:
    a = read_structure(test_data_dir / "3KPR.pdb.gz")
    b = read_structure(test_data_dir / "3KPR.cif.gz")
    assert [c.chain_id for c in a] == [c.chain_id for c in b] == list("ABCDEFGHIJ")
    for x, y in zip(a, b):
        assert x.id == y.id and x.sequence == y.sequence and x.residue_ids == y.residue_ids
        np.testing.assert_array_equal(x.ca, y.ca)
        np.testing.assert_array_equal(x.cb, y.cb)


def test_plain_and_gz_identical(test_data_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "disordered.pdb"
    with gzip.open(test_data_dir / "disordered.pdb.gz", "rb") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    a, b = read_structure(plain), read_structure(test_data_dir / "disordered.pdb.gz")
    assert [c.sequence for c in a] == [c.sequence for c in b] == ["MSRNTT"]
    np.testing.assert_array_equal(a[0].ca, b[0].ca)
    assert a[0].source == str(plain)


def test_insertion_codes(test_data_dir: Path) -> None:
    chains = {c.chain_id: c for c in read_structure(test_data_dir / "3KPR.pdb.gz")}
    ids = chains["D"].residue_ids
    i = ids.index("30A")  # TCR alpha chain, Kabat-style insertion 30A between 30 and 31
    assert ids[i - 1 : i + 2] == ("30", "30A", "31")


def test_mse_maps_to_met(test_data_dir: Path) -> None:
    text = gzip.open(test_data_dir / "1A8O.pdb.gz", "rt").read()
    n_mse = len({line[17:27] for line in text.splitlines() if line.startswith("HETATM") and line[17:20] == "MSE"})
    assert n_mse > 0
    (chain,) = read_structure(test_data_dir / "1A8O.pdb.gz")
    # 1A8O is HIV capsid CTD, residues 151-231 with Met -> MSE
    assert chain.sequence.count("M") >= n_mse and "X" not in chain.sequence


def test_nmr_first_model_only(test_data_dir: Path) -> None:
    text = gzip.open(test_data_dir / "nmr_neopetrosiamide.pdb.gz", "rt").read()
    model1 = text.split("ENDMDL")[0]
    ca_lines = [ln for ln in model1.splitlines() if ln.startswith(("ATOM", "HETATM")) and ln[12:16] == " CA "]
    first = np.array([[float(ln[30:38]), float(ln[38:46]), float(ln[46:54])] for ln in ca_lines])
    (chain,) = read_structure(test_data_dir / "nmr_neopetrosiamide.pdb.gz")
    assert len(chain) == len(first) == 28
    np.testing.assert_allclose(chain.ca, first, atol=1e-6)


def test_altloc_highest_occupancy(test_data_dir: Path) -> None:
    """For every disordered CA in 19hc, our coordinate is the highest-occupancy conformer's, by hand."""
    text = gzip.open(test_data_dir / "19hc.pdb.gz", "rt").read()
    first = text.split("ENDMDL")[0]
    best: dict[tuple[str, str], tuple[float, np.ndarray]] = {}
    n_disordered = 0
    for ln in first.splitlines():
        if ln.startswith(("ATOM", "HETATM")) and ln[12:16] == " CA " and ln[16] != " ":
            n_disordered += 1
            key = (ln[21], ln[22:27].strip())
            occ = float(ln[54:60])
            xyz = np.array([float(ln[30:38]), float(ln[38:46]), float(ln[46:54])])
            if key not in best or occ > best[key][0]:
                best[key] = (occ, xyz)
    assert n_disordered >= 2 and len(best) >= 1
    chains = {c.chain_id: c for c in read_structure(test_data_dir / "19hc.pdb.gz")}
    for (cid, rid), (_, xyz) in best.items():
        c = chains[cid]
        np.testing.assert_allclose(c.ca[c.residue_ids.index(rid)], xyz, atol=1e-6)


def test_missing_ca_and_breaks(test_data_dir: Path) -> None:
    chains = {c.chain_id: c for c in read_structure(test_data_dir / "2XHE.pdb.gz")}
    a = chains["A"]
    # last residue of chain A has no CA (independent: scan the ATOM lines of that residue)
    text = gzip.open(test_data_dir / "2XHE.pdb.gz", "rt").read()
    rid = a.residue_ids[-1]
    atoms = [ln[12:16].strip() for ln in text.splitlines()
             if ln.startswith("ATOM") and ln[21] == "A" and ln[22:27].strip() == rid]
    assert atoms and "CA" not in atoms
    assert np.isnan(a.ca[-1]).all() and int((~a.mask).sum()) == 1
    # breaks: recompute |ΔCα| by hand
    for c in chains.values():
        step = np.linalg.norm(np.diff(c.ca, axis=0), axis=1)
        expected = tuple(int(i) for i in np.flatnonzero(np.nan_to_num(step) > 4.2))
        assert c.breaks == expected
    assert 509 in a.breaks and a.residue_ids[509:511] == ("509", "561")  # gap in the model


def test_dna_chains_skipped(test_data_dir: Path) -> None:
    chains = read_structure(test_data_dir / "1LCD.pdb.gz")
    assert [c.chain_id for c in chains] == ["A"]  # B and C are DNA
    st = gemmi.read_structure(str(test_data_dir / "1LCD.pdb.gz"))
    assert {ch.name for ch in st[0]} >= {"A", "B", "C"}


def test_dna_only_file_gives_no_chains(tmp_path: Path, test_data_dir: Path) -> None:
    text = gzip.open(test_data_dir / "1LCD.pdb.gz", "rt").read()
    dna = "\n".join(ln for ln in text.splitlines() if not (ln.startswith(("ATOM", "HETATM")) and ln[21] == "A"))
    (tmp_path / "dna.pdb").write_text(dna)
    assert read_structure(tmp_path / "dna.pdb") == []


def test_unknown_residues_are_x(tmp_path: Path, test_data_dir: Path) -> None:
    text = gzip.open(test_data_dir / "disordered.pdb.gz", "rt").read()
    text = text.replace("SER A  26", "UNK A  26").replace("ARG A  27", "XYZ A  27")
    (tmp_path / "unk.pdb").write_text(text)
    (chain,) = read_structure(tmp_path / "unk.pdb")
    assert chain.sequence == "MXXNTT"


def test_first_model_of_odd_file(test_data_dir: Path) -> None:
    # a_structure.pdb: MODEL/ENDMDL holds one PCA (pyroglutamate); the rest lies outside it.
    (chain,) = read_structure(test_data_dir / "a_structure.pdb.gz")
    # a modified residue reads as its parent in gemmi's residue table (structure.one_letter): PCA -> E there
    # (Biopython's extended table says Q; the reader follows gemmi's, so the letter is fixed)
    assert gemmi.find_tabulated_residue("PCA").one_letter_code.upper() == "E"
    assert chain.residue_ids == ("1",) and chain.sequence == "E"


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"hello, this is a shopping list\nmilk\n", "not a PDB"),
        (b"\x00\x01\x02binary", "binary"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.pdb"
    path.write_bytes(content)
    with pytest.raises(StructureReadError, match=reason) as e:
        read_structure(path)
    assert str(path) in str(e.value)


def test_truncated_files(tmp_path: Path, test_data_dir: Path) -> None:
    raw = gzip.open(test_data_dir / "3KPR.pdb.gz", "rb").read()
    cut = raw[: len(raw) // 2]
    assert not cut.endswith(b"\n")
    (tmp_path / "cut.pdb").write_bytes(cut)
    with pytest.raises(StructureReadError, match="truncated"):
        read_structure(tmp_path / "cut.pdb")
    gz = (test_data_dir / "3KPR.pdb.gz").read_bytes()
    (tmp_path / "cut.pdb.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(StructureReadError, match="truncated"):
        read_structure(tmp_path / "cut.pdb.gz")
    cif = gzip.open(test_data_dir / "3KPR.cif.gz", "rb").read()
    (tmp_path / "cut.cif").write_bytes(cif[: len(cif) // 2])
    with pytest.raises(StructureReadError, match="cut.cif"):
        read_structure(tmp_path / "cut.cif")


def test_invalid_mmcif_reported(test_data_dir: Path) -> None:
    with pytest.raises(StructureReadError, match="1YJP_invalid.cif.gz.*group_PDB 'WRONG'"):
        read_structure(test_data_dir / "1YJP_invalid.cif.gz")


def test_stem_and_extensions() -> None:
    assert structure_stem("a/b/3KPR.cif.gz") == "3KPR"
    assert structure_stem("1A2K_r_u.pdb.gz") == "1A2K_r_u"
    assert structure_stem("a9_1a95.pdb1_3.dill_l_b_COMPLEX.pdb.gz") == "a9_1a95.pdb1_3.dill_l_b_COMPLEX"
    assert is_structure_file("x.ent.gz") and is_structure_file("x.mmcif") and not is_structure_file("x.txt")


# ------------------------------------------------------------------ writing


def _trace(n: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=(n, 3)) * 2.2, axis=0) + rng.uniform(-500, 500, size=3)


def test_write_pdb_read_back_gemmi_and_biopython(tmp_path: Path) -> None:
    xyz = _trace()
    seq = "ACDEFGHIKLXM"
    conf = np.linspace(0, 100, len(seq))
    nums = [1, 2, 3, "3A", 4, 5, 6, 7, 8, 9, 10, 11]
    path = tmp_path / "pred.pdb"
    write_pdb(path, xyz, seq, chain_id="B", residue_numbers=nums, bfactors=conf,
              model_name="tiny-run", method="refine")
    text = path.read_text()
    assert text.startswith("HEADER") and "REMARK" in text and "tiny-run" in text and "refine" in text
    assert "\nTER " in text and text.rstrip().endswith("END")
    assert "UNK B  10" in text
    expected = np.round(xyz, 3)
    st = gemmi.read_structure(str(path))
    got = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in st[0]["B"] for a in r])
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert [r.name for r in st[0]["B"]][10] == "UNK"
    np.testing.assert_allclose([r[0].b_iso for r in st[0]["B"]], np.round(conf, 2), atol=1e-9)
    bio = PDBParser(QUIET=True).get_structure("p", str(path))
    bio_xyz = np.array([a.coord for a in bio.get_atoms()], dtype=float)
    np.testing.assert_allclose(bio_xyz, expected, atol=1e-5)  # Biopython stores float32
    (chain,) = read_structure(path)
    assert chain.sequence == seq and chain.residue_ids[3] == "3A"
    # the fixed columns of the PDB format (wwPDB v3.3 ATOM record), read here by slicing, not by a parser
    atoms = [ln for ln in text.splitlines() if ln.startswith("ATOM  ")]
    assert len(atoms) == len(seq) and all(len(ln) == 80 for ln in text.splitlines())
    for k, ln in enumerate(atoms):
        assert int(ln[6:11]) == k + 1 and ln[12:16] == " CA " and ln[21] == "B" and ln[76:78] == " C"
        assert ln[17:20] == ("UNK" if seq[k] == "X" else protein_letters_1to3[seq[k]].upper())
        assert (ln[22:26].strip() + ln[26].strip()) == str(nums[k])
        np.testing.assert_allclose([float(ln[30:38]), float(ln[38:46]), float(ln[46:54])], expected[k], atol=5e-4)
        assert float(ln[54:60]) == 1.0 and float(ln[60:66]) == pytest.approx(conf[k], abs=0.0051)


def test_write_mmcif_read_back(tmp_path: Path) -> None:
    xyz = _trace(8, 1)
    seq = "GAVLXIPW"
    path = tmp_path / "pred.cif"
    write_mmcif(path, xyz, seq, bfactors=np.full(8, 70.0), model_name="m", method="classical")
    (chain,) = read_structure(path)
    assert chain.sequence == seq
    np.testing.assert_allclose(chain.ca, xyz, atol=1e-6)
    bio = MMCIFParser(QUIET=True).get_structure("p", str(path))
    np.testing.assert_allclose(np.array([a.coord for a in bio.get_atoms()]), xyz, atol=1e-3)
    assert "classical" in mmcif_string(xyz, seq, method="classical")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_write_rejects_nonfinite(tmp_path: Path, bad: float) -> None:
    xyz = _trace(5)
    xyz[2, 1] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        write_pdb(tmp_path / "x.pdb", xyz, "AAAAA")
    assert not (tmp_path / "x.pdb").exists()
    with pytest.raises(ValueError, match="sequence length"):
        pdb_string(_trace(5), "AAAA")


HAND_WRITTEN_PDB = [
    # chain A, first part
    "ATOM      1  N   MET A   1       0.000   0.000   0.000  1.00 10.00           N",
    "ATOM      2  CA  MET A   1       1.000   0.000   0.000  1.00 10.00           C",
    "ATOM      3  C   MET A   1       2.000   0.000   0.000  1.00 10.00           C",
    "ATOM      4  O   MET A   1       2.000   1.000   0.000  1.00 10.00           O",
    "ATOM      5  CB  MET A   1       1.000  -1.000   0.000  1.00 10.00           C",
    "ATOM      6  N   SER A   2       3.000   0.000   0.000  1.00 10.00           N",
    "ATOM      7  CA ASER A   2       4.000   0.000   0.000  0.30 10.00           C",
    "ATOM      8  CA BSER A   2       4.000   0.500   0.000  0.70 10.00           C",
    "ATOM      9  CB ASER A   2       4.000  -1.000   0.000  0.30 10.00           C",
    "ATOM     10  CB BSER A   2       4.500  -1.000   0.000  0.70 10.00           C",
    "ATOM     11  C   SER A   2       5.000   0.000   0.000  1.00 10.00           C",
    "ATOM     12  O   SER A   2       5.000   1.000   0.000  1.00 10.00           O",
    "ATOM     13  N   GLY A   3       6.000   0.000   0.000  1.00 10.00           N",
    "ATOM     14  CA  GLY A   3       7.000   0.000   0.000  1.00 10.00           C",
    "ATOM     15  C   GLY A   3       8.000   0.000   0.000  1.00 10.00           C",
    "ATOM     16  O   GLY A   3       8.000   1.000   0.000  1.00 10.00           O",
    "ATOM     17  N  AALA A   4       9.000   0.000   0.000  0.40 10.00           N",
    "ATOM     18  CA AALA A   4      10.000   0.000   0.000  0.40 10.00           C",
    "ATOM     19  C  AALA A   4      11.000   0.000   0.000  0.40 10.00           C",
    "ATOM     20  O  AALA A   4      11.000   1.000   0.000  0.40 10.00           O",
    "ATOM     21  CB AALA A   4      10.000  -1.000   0.000  0.40 10.00           C",
    "ATOM     22  N  BVAL A   4       9.000   0.200   0.000  0.60 10.00           N",
    "ATOM     23  CA BVAL A   4      10.000   0.200   0.000  0.60 10.00           C",
    "ATOM     24  C  BVAL A   4      11.000   0.200   0.000  0.60 10.00           C",
    "ATOM     25  O  BVAL A   4      11.000   1.200   0.000  0.60 10.00           O",
    "ATOM     26  CB BVAL A   4      10.000  -1.200   0.000  0.60 10.00           C",
    "HETATM   27  N   XYZ A   5      12.000   0.000   0.000  1.00 10.00           N",
    "HETATM   28  CA  XYZ A   5      13.000   0.000   0.000  1.00 10.00           C",
    "HETATM   29  C   XYZ A   5      14.000   0.000   0.000  1.00 10.00           C",
    "ATOM     30  N   LYS A   5A     15.000   0.000   0.000  1.00 10.00           N",
    "ATOM     31  CA  LYS A   5A     16.000   0.000   0.000  1.00 10.00           C",
    "ATOM     32  C   LYS A   5A     17.000   0.000   0.000  1.00 10.00           C",
    # chain B
    "ATOM     33  N   ALA B   1       0.000   5.000   0.000  1.00 10.00           N",
    "ATOM     34  CA  ALA B   1       1.000   5.000   0.000  1.00 10.00           C",
    "ATOM     35  C   ALA B   1       2.000   5.000   0.000  1.00 10.00           C",
    "ATOM     36  O   ALA B   1       2.000   6.000   0.000  1.00 10.00           O",
    "ATOM     37  CB  ALA B   1       1.000   4.000   0.000  1.00 10.00           C",
    # chain A again (no TER records: a second polymer part of A)
    "ATOM     38  N   TRP A  20      30.000   0.000   0.000  1.00 10.00           N",
    "ATOM     39  CA  TRP A  20      31.000   0.000   0.000  1.00 10.00           C",
    "ATOM     40  C   TRP A  20      32.000   0.000   0.000  1.00 10.00           C",
    "ATOM     41  O   TRP A  20      32.000   1.000   0.000  1.00 10.00           O",
    "ATOM     42  CB  TRP A  20      31.000  -1.000   0.000  1.00 10.00           C",
    # a ligand and a water
    "HETATM   43  C1  LG1 A  50      40.000   0.000   0.000  1.00 10.00           C",
    "HETATM   44  O   HOH A 101      50.000   0.000   0.000  1.00 10.00           O",
]


def test_hand_written_chain_exact(tmp_path: Path) -> None:
    """Every extraction rule on a small PDB text, expected values read off the lines above by hand.

    SER 2: altloc B (0.7) beats A (0.3) for CA and CB (a "first altloc" rule would pick A); GLY 3: Cβ := Cα;
    4: microheterogeneity ALA (0.4) / VAL (0.6) keeps VAL with all its atoms; XYZ 5 (HETATM, unknown to
    gemmi's table) counts for its Cα and is X; XYZ 5 and LYS 5A have no O; chain A resumes after chain B
    (TRP 20) and is merged; the ligand LG1 and the water are skipped.
    """
    (tmp_path / "hand.pdb").write_text("\n".join(HAND_WRITTEN_PDB) + "\nEND\n")
    a, b = read_structure(tmp_path / "hand.pdb")
    assert (a.id, a.chain_id, b.id, b.chain_id) == ("hand:A", "A", "hand:B", "B")
    assert a.sequence == "MSGVXKW"
    assert a.residue_ids == ("1", "2", "3", "4", "5", "5A", "20")
    nan = [np.nan] * 3
    backbone = [  # N, CA, C, O
        [[0, 0, 0], [1, 0, 0], [2, 0, 0], [2, 1, 0]],
        [[3, 0, 0], [4, 0.5, 0], [5, 0, 0], [5, 1, 0]],
        [[6, 0, 0], [7, 0, 0], [8, 0, 0], [8, 1, 0]],
        [[9, 0.2, 0], [10, 0.2, 0], [11, 0.2, 0], [11, 1.2, 0]],
        [[12, 0, 0], [13, 0, 0], [14, 0, 0], nan],
        [[15, 0, 0], [16, 0, 0], [17, 0, 0], nan],
        [[30, 0, 0], [31, 0, 0], [32, 0, 0], [32, 1, 0]],
    ]
    np.testing.assert_array_equal(a.backbone, np.array(backbone, dtype=float))
    np.testing.assert_array_equal(a.ca, a.backbone[:, 1])
    cb = [[1, -1, 0], [4.5, -1, 0], [7, 0, 0], [10, -1.2, 0], nan, nan, [31, -1, 0]]
    np.testing.assert_array_equal(a.cb, np.array(cb, dtype=float))
    assert a.breaks == (5,)  # 5A -> 20: 15 Å
    assert (b.sequence, b.residue_ids, b.breaks) == ("A", ("1",), ())
    np.testing.assert_array_equal(b.backbone[0], [[0, 5, 0], [1, 5, 0], [2, 5, 0], [2, 6, 0]])
    np.testing.assert_array_equal(b.cb, [[1, 4, 0]])


def test_residues_told_apart_by_segment_id(tmp_path: Path) -> None:
    """Two ALA 2 residues that differ only in the segment id (columns 73-76) stay two residues in gemmi;
    at one number they are resolved like microheterogeneity: the higher Cα occupancy (segment S2) wins."""
    lines = [
        "ATOM      1  CA  MET A   1       1.000   0.000   0.000  1.00 10.00      S1   C",
        "ATOM      2  CA  ALA A   2       4.000   0.000   0.000  0.40 10.00      S1   C",
        "ATOM      3  CB  ALA A   2       4.000   1.000   0.000  0.40 10.00      S1   C",
        "ATOM      4  CA  ALA A   2       4.000   0.500   0.000  0.60 10.00      S2   C",
        "ATOM      5  CB  ALA A   2       4.000   1.500   0.000  0.60 10.00      S2   C",
    ]
    (tmp_path / "seg.pdb").write_text("\n".join(lines) + "\nEND\n")
    (chain,) = read_structure(tmp_path / "seg.pdb")
    assert chain.sequence == "MA" and chain.residue_ids == ("1", "2")
    np.testing.assert_array_equal(chain.ca, [[1, 0, 0], [4, 0.5, 0]])
    np.testing.assert_array_equal(chain.cb, [[np.nan] * 3, [4, 1.5, 0]])


def test_db55_junk_columns_and_blank_chain(test_data_dir: Path) -> None:
    """1ACB_l_b has junk in the charge columns (read from columns 1-72, noted); 1ACB_l_u has a blank
    chain id (sample id '1ACB_l_u:_'). Both match Biopython."""
    notes: list[str] = []
    (bound,) = read_structure(test_data_dir / "1ACB_l_b.pdb.gz", notes)
    assert notes and "columns 73-80" in notes[0]
    (unbound,) = read_structure(test_data_dir / "1ACB_l_u.pdb.gz")
    assert unbound.chain_id == "" and unbound.id == "1ACB_l_u:_"
    for chain, name in ((bound, "1ACB_l_b.pdb.gz"), (unbound, "1ACB_l_u.pdb.gz")):
        ((seq, ca, ids),) = biopython_chains(test_data_dir / name).values()
        assert chain.sequence == seq and list(chain.residue_ids) == ids
        np.testing.assert_allclose(chain.ca, ca, atol=1e-3)
    assert bound.chain_id == "I" and len(bound) == 63 and len(unbound) == 70


def write_bcif(src: Path, dst: Path) -> Path:
    """A BinaryCIF copy of a structure file, written by biotite (gemmi cannot write BinaryCIF)."""
    import io

    import biotite.structure.io.pdb as bpdb
    import biotite.structure.io.pdbx as pdbx

    text = gzip.decompress(src.read_bytes()).decode() if src.name.endswith(".gz") else src.read_text()
    atoms = bpdb.PDBFile.read(io.StringIO(text)).get_structure(model=1)
    out = pdbx.BinaryCIFFile()
    pdbx.set_structure(out, atoms)
    out.write(str(dst))
    return dst


def test_binary_cif_reported_as_unsupported(tmp_path: Path, test_data_dir: Path) -> None:
    bcif = write_bcif(test_data_dir / "1LCD.pdb.gz", tmp_path / "1LCD.bcif")
    with pytest.raises(RuntimeError, match="Unknown format"):   # gemmi 0.7.5 itself has no BinaryCIF reader
        gemmi.read_structure(str(bcif))
    with pytest.raises(StructureReadError, match=r"1LCD\.bcif: BinaryCIF is not supported .*convert it to text mmCIF"):
        read_structure(bcif)
    renamed = tmp_path / "looks_like_text.cif"     # the same bytes under a text extension: same reason
    renamed.write_bytes(bcif.read_bytes())
    with pytest.raises(StructureReadError, match="BinaryCIF is not supported"):
        read_structure(renamed)
    assert not is_structure_file(bcif)


def _zigzag(L: int) -> np.ndarray:
    x = np.zeros((L, 3))
    x[:, 0] = np.arange(L) * 3.8 * np.cos(np.radians(30))
    x[1::2, 1] = 3.8 * np.sin(np.radians(30))
    return x


def test_writer_flags_a_clashing_structure(tmp_path: Path) -> None:
    """A trace that breaks the bounds is written, with REMARK 500 (PDB) / _proteinmtp.geometry_check (mmCIF)
    saying what; one inside them carries no flag. Coordinates read back unchanged either way."""
    good = _zigzag(12)
    bad = good.copy()
    bad[9] = bad[6] + [0.0, 0.0, 2.0]                      # 6–9 at 2.0 Å, bonds 8–9 and 9–10 stretched
    seq = "A" * 12
    assert "REMARK 500" not in pdb_string(good, seq) and "geometry_check" not in mmcif_string(good, seq)
    text = pdb_string(bad, seq)
    rem = " ".join(ln[11:].strip() for ln in text.splitlines() if ln.startswith("REMARK 500"))
    assert rem.startswith("CA GEOMETRY OUT OF BOUNDS") and "1 NON-BONDED CA PAIRS < 3.5 A" in rem
    assert "CLOSEST 2.00 A" in rem and "2 CA-CA BONDS OFF 3.80 A" in rem
    assert all(len(ln) <= 80 for ln in text.splitlines())
    write_pdb(tmp_path / "bad.pdb", bad, seq)
    write_mmcif(tmp_path / "bad.cif", bad, seq)
    for f in ("bad.pdb", "bad.cif"):
        st = gemmi.read_structure(str(tmp_path / f))
        np.testing.assert_allclose([a.pos.tolist() for r in st[0][0] for a in r], bad, atol=6e-4)
    block = gemmi.cif.read(str(tmp_path / "bad.cif")).sole_block()
    flag = gemmi.cif.as_string(block.find_value("_proteinmtp.geometry_check"))
    assert flag.startswith("CA geometry out of bounds: 1 non-bonded CA pairs < 3.5 A")
    # a recorded chain break: the long step across it is no bond outlier
    gap = _zigzag(12)
    gap[6:] += [10.0, 0.0, 0.0]
    assert "REMARK 500" in pdb_string(gap, seq) and "REMARK 500" not in pdb_string(gap, seq, breaks=[5])


def test_control_characters_escaped_in_pdb_and_mmcif(tmp_path: Path) -> None:
    """FASTA ids with NUL, \\x01, ESC (a terminal colour sequence), tab, newline and DEL reach the REMARKs and
    mmCIF items escaped: every byte of the file is printable ASCII or a newline, and the text reads back."""
    from proteinmtp.structure_writer import printable

    nasty = "rec\x00id\x01\x1b[31mred\tx\ny\x7f\u00e9"
    xyz = _zigzag(6)
    for fmt, writer in (("pdb", write_pdb), ("cif", write_mmcif)):
        path = tmp_path / f"t.{fmt}"
        writer(path, xyz, "MKTAYI", model_name=f"model{nasty}", method=f"refine{nasty}", remarks=[f"RECORD {nasty}"])
        raw = path.read_bytes()
        assert all(b == 0x0A or 0x20 <= b <= 0x7E for b in raw), fmt
        assert printable(nasty) in raw.decode("ascii")
        st = gemmi.read_structure(str(path))
        assert len([a for r in st[0][0] for a in r]) == 6
    assert printable(nasty) == "rec\\x00id\\x01\\x1b[31mred\\x09x\\x0ay\\x7f\\xe9"
    block = gemmi.cif.read(str(tmp_path / "t.cif")).sole_block()
    assert gemmi.cif.as_string(block.find_value("_proteinmtp.remark_1")) == "RECORD " + printable(nasty)
    assert block.name.isascii() and block.name.isprintable()
    pdb = (tmp_path / "t.pdb").read_text()
    assert f"REMARK 250 RECORD {printable(nasty)}" in pdb
