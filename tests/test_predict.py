"""Sequence checks, FASTA parsing, reconstruction from a DistancePrediction, and output files."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from proteinmtp.fasta import InputError, check_lengths, clean_sequence, parse_fasta, record_stems
from proteinmtp.geometry import mirror
from proteinmtp.metrics import structure_metrics
from proteinmtp.model import DistancePrediction
from proteinmtp.predict import residue_confidence_100, structure_from_distances
from proteinmtp.writers import save_distmat, save_distogram, write_structure
from tests.conftest import helix_ca


def prediction_from(xyz: np.ndarray, seq: str) -> DistancePrediction:
    L = len(xyz)
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    conf = np.linspace(0.2, 0.9, L)
    return DistancePrediction(sequence=seq, dist=d, contact_prob=(d < 8).astype(float),
                              pair_confidence=np.full((L, L), 0.8), residue_confidence=conf,
                              distogram_probs=np.full((L, L, 4), 0.25), bin_edges=np.array([4.0, 8.0, 12.0]))


def test_clean_sequence():
    assert clean_sequence(" mkt ay\nXbzuo* ") == "MKTAYXBZUO"
    with pytest.raises(InputError, match=r"record 'r1': invalid residue letter 'J' at position 4"):
        clean_sequence("MKTJA", "r1")
    with pytest.raises(InputError, match="position 3"):
        clean_sequence("AC-D", "r")
    with pytest.raises(InputError, match="'e' has an empty sequence"):
        clean_sequence("  \n", "e")
    with pytest.raises(InputError, match="position 2"):
        clean_sequence("A*A", "r")  # '*' only as the final stop


def test_check_lengths():
    check_lengths([("a", "AC"), ("b", "A" * 10)], max_len=10)
    with pytest.raises(InputError, match=r"record 'b' has 11 residues; this model supports at most 10"):
        check_lengths([("a", "AC"), ("b", "A" * 11)], max_len=10)
    with pytest.raises(InputError, match="at least 2"):
        check_lengths([("a", "A")], max_len=10)


def test_parse_fasta_and_stems():
    text = ">sp|P1|ONE first protein\nMKT\nAYI\n\n>two\nGG\n>sp|P1|ONE dup\nAA\n>\nCC\n"
    recs = parse_fasta(text)
    assert recs == [("sp|P1|ONE", "MKTAYI"), ("two", "GG"), ("sp|P1|ONE", "AA"), ("record_4", "CC")]
    assert record_stems([r for r, _ in recs]) == ["sp_P1_ONE", "two", "sp_P1_ONE_2", "record_4"]
    assert record_stems(["../../etc/passwd", "a" * 300, "...", "X", "x"]) == [
        "etc_passwd", "a" * 100, "record", "X", "x_2"]
    with pytest.raises(InputError, match="before the first '>'"):
        parse_fasta("MKT\n>a\nAA\n")
    with pytest.raises(InputError, match="no FASTA record"):
        parse_fasta("\n\n")


def test_confidence_scale():
    np.testing.assert_allclose(residue_confidence_100(np.array([0.0, 0.5, 1.2, np.nan])), [0, 50, 100, 0])


@pytest.mark.parametrize("method", ["classical", "refine"])
def test_reconstruct_exact_helix(method):
    native = helix_ca(36)
    sp = structure_from_distances(prediction_from(native, "A" * 36), method=method)
    m = structure_metrics(sp.ca_xyz, native)
    # the default all-residue rule (geometry.choose_hand over every Cα quadruple) picked the native's hand:
    # the structure superposes onto the native, its mirror image does not
    assert sp.info["hand_rule"] == "all_residues"
    assert m["tm_score"] > 0.99 and m["rmsd"] < 0.2
    assert structure_metrics(mirror(sp.ca_xyz), native)["tm_score"] < 0.6
    np.testing.assert_allclose(sp.confidence, np.linspace(20, 90, 36))
    assert sp.info["method"] == method


def test_write_structure_and_arrays(tmp_path):
    native = helix_ca(20)
    seq = "MKTAYIAKQRXBZUOACDEF"
    sp = structure_from_distances(prediction_from(native, seq))
    p = write_structure(tmp_path / "a.pdb", sp, run_dir=tmp_path / "myrun", model_name="tiny-qwen", record_id="r1")
    st = gemmi.read_structure(str(p))
    atoms = [(r.name, a) for r in st[0][0] for a in r]
    assert len(atoms) == 20 and atoms[0][0] == "MET" and atoms[10][0] == "UNK"
    np.testing.assert_allclose([a.b_iso for _, a in atoms], np.round(sp.confidence, 2), atol=0.006)
    np.testing.assert_allclose([a.pos.tolist() for _, a in atoms], sp.ca_xyz, atol=6e-4)
    text = p.read_text()
    assert "tiny-qwen" in text and "RUN myrun" in text and "HAND " in text
    assert f"MEAN CONFIDENCE {sp.confidence.mean():.1f}" in text
    c = write_structure(tmp_path / "a.cif", sp, fmt="cif")
    assert c.read_text().startswith("data_")
    cif_atoms = [a for r in gemmi.read_structure(str(c))[0][0] for a in r]
    np.testing.assert_allclose([a.pos.tolist() for a in cif_atoms], sp.ca_xyz, atol=6e-4)
    np.testing.assert_allclose([a.b_iso for a in cif_atoms], sp.confidence, atol=0.006)
    d = save_distmat(tmp_path / "d.npy", sp)
    np.testing.assert_allclose(np.load(d), sp.distances.dist, atol=1e-4)
    z = np.load(save_distogram(tmp_path / "g.npz", sp))
    assert z["distogram_probs"].shape == (20, 20, 4) and z["bin_edges"].tolist() == [4.0, 8.0, 12.0]
    assert str(z["sequence"]) == seq and z["residue_confidence"].shape == (20,)
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ValueError, match="'pdb' or 'cif'"):
        write_structure(tmp_path / "a.xyz", sp, fmt="xyz")


def test_iter_fasta_encodings_and_gzip(tmp_path):
    """BOM, Latin-1 fallback (line reported), UTF-16, gzip: the same records as parse_fasta of the text."""
    import gzip

    from proteinmtp.fasta import iter_fasta

    def records(raw: bytes, name="f.fa", notes=None):
        (tmp_path / name).write_bytes(raw)
        return list(iter_fasta(tmp_path / name, notes))

    assert records(b"\xef\xbb\xbf>a\nMK\n") == [("a", "MK")]
    notes: list[str] = []
    assert records(b">a\nMK\n>b caf\xe9\nGG\n", "l.fa", notes) == [("a", "MK"), ("b", "GG")]
    assert notes == [f"{tmp_path / 'l.fa'}: line 3 has a byte that is not UTF-8 (0xe9); lines that are not "
                     "UTF-8 are read as Latin-1"]
    assert records(">u\nMK\n>v x\nAC\nDE\n".encode("utf-16")) == [("u", "MK"), ("v", "ACDE")]
    text = ">sp|P1|ONE first\nMKT\nAYI\n\n; comment\n>two\nGG\n>\nCC\n"
    assert records(gzip.compress(text.encode()), "g.fa.gz") == parse_fasta(text)
    assert parse_fasta("\ufeff>x\nAC\n") == [("x", "AC")]
    with pytest.raises(InputError, match="truncated or corrupt gzip"):
        records(gzip.compress(text.encode() * 50)[:-30], "t.fa.gz")
    with pytest.raises(InputError, match="line 1 has sequence text before"):
        records(b"MKT\n>a\nAA\n")
    with pytest.raises(InputError, match="does not exist"):
        list(iter_fasta(tmp_path / "missing.fa"))


def test_help_and_docs_stand_alone(repo_root):
    """Every flag is explained, defaults are not repeated, and docstring examples import what exists (what
    the texts cite is checked by test_docs.test_every_repo_path_cited_exists)."""
    import ast
    import contextlib
    import importlib
    import importlib.util
    import io
    import re

    import create_distmat_data
    import evaluate_distmat_model
    import infer_distmat

    for parser in (infer_distmat.build_parser(), evaluate_distmat_model.build_parser()):
        for action in parser._actions:
            assert action.help and len(action.help) > 10, action.dest
    for action in infer_distmat.build_parser()._actions:   # argparse appends the default: no second one
        assert "default" not in action.help.lower(), action.dest
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        create_distmat_data.parse_args(["--help"])
    assert "(default 0.1" not in out.getvalue()
    # every usage example in a package or script docstring imports names that exist where it says
    for path in [*sorted((repo_root / "proteinmtp").rglob("*.py")), *sorted(repo_root.glob("*.py"))]:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        for mod, names in re.findall(r"^\s*from (proteinmtp[\w.]*) import ([\w, ]+)$", doc, flags=re.M):
            m = importlib.import_module(mod)
            for name in (n.strip() for n in names.split(",")):
                assert hasattr(m, name) or importlib.util.find_spec(f"{mod}.{name}"), \
                    f"{path.name}: docstring imports {name} from {mod}"
