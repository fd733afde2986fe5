"""infer_distmat.py end to end with a tiny trained run: outputs gemmi can read, and bad input refused cleanly."""

from __future__ import annotations

import shutil
import subprocess
import sys

import gemmi
import numpy as np
import pytest

import infer_distmat
from proteinmtp.constants import AA1_TO_AA3

SEQS = {"first|rec 1": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ",
        "second": "acdefghiklmnpqrstvwyXBZUO",          # lower case + the five extra letters
        "third": "GSHMSLFDFFKNKGSAAATPQE" * 3}


def _run_cli(repo_root, *args):
    return subprocess.run([sys.executable, str(repo_root / "infer_distmat.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=repo_root)


def _read_ca(path):
    st = gemmi.read_structure(str(path))
    return [(r.name, r[0]) for r in st[0][0]]


def test_fasta_three_records(tiny_run, tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{k} description\n{v[:20]}\n{v[20:]}\n" for k, v in SEQS.items()))
    out = tmp_path / "preds"
    rc = infer_distmat.main(["--model_path", str(tiny_run["run_dir"]), "--fasta", str(fasta), "--output", str(out),
                             "--save_distmat", "--save_distogram", "--mds_method", "refine", "--batch_size", "2"])
    assert rc == 0
    names = {"first_rec": SEQS["first|rec 1"], "second": SEQS["second"], "third": SEQS["third"]}
    assert sorted(p.name for p in out.glob("*.pdb")) == sorted(f"{n}.pdb" for n in names)
    for stem, seq in names.items():
        pdb = out / f"{stem}.pdb"
        atoms = _read_ca(pdb)
        assert [n for n, _ in atoms] == [AA1_TO_AA3[c] for c in seq.upper()]
        b = np.array([a.b_iso for _, a in atoms])
        assert ((b >= 0) & (b <= 100)).all() and b.std() >= 0
        text = pdb.read_text()
        assert f"MEAN CONFIDENCE {b.mean():.1f}" in text or f"MEAN CONFIDENCE {b.mean():.1f}"[:-1] in text
        assert "HAND " in text and "RUN run" in text and "backbone" in text.split("MODEL", 1)[1].split("\n")[0]
        xyz = np.array([a.pos.tolist() for _, a in atoms])
        bonds = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
        assert np.median(bonds) == pytest.approx(3.8, abs=0.3)  # refinement's Cα–Cα bond term
        d = np.load(out / f"{stem}_distmat.npy")
        L = len(seq)
        assert d.shape == (L, L) and np.allclose(d, d.T) and np.allclose(np.diag(d), 0)
        z = np.load(out / f"{stem}_distogram.npz")
        assert z["distogram_probs"].shape[:2] == (L, L)
        np.testing.assert_allclose(z["distogram_probs"].astype(np.float64).sum(-1), 1.0, atol=0.02)
        assert len(z["bin_edges"]) == z["distogram_probs"].shape[2] - 1
        np.testing.assert_allclose(100 * z["residue_confidence"], b, atol=0.01)


def test_single_sequence_cif(tiny_run, tmp_path):
    out = tmp_path / "one.cif"
    rc = infer_distmat.main(["--model_path", str(tiny_run["run_dir"]), "--sequence", "mkt ayiakq",
                             "--output", str(out), "--output_format", "cif", "--mds_method", "classical"])
    assert rc == 0
    assert [n for n, _ in _read_ca(out)] == [AA1_TO_AA3[c] for c in "MKTAYIAKQ"]


@pytest.fixture(scope="module")
def corrupt_run(tiny_run, tmp_path_factory):
    bad = tmp_path_factory.mktemp("corrupt") / "run"
    shutil.copytree(tiny_run["run_dir"], bad, ignore=shutil.ignore_patterns("checkpoint-*"))
    w = bad / "head.safetensors"
    w.write_bytes(w.read_bytes()[:200])  # truncated weights file
    return bad


@pytest.mark.parametrize("case", ["letter", "empty", "too_long", "missing_run", "corrupt_weights", "short"])
def test_bad_input(case, tiny_run, corrupt_run, tmp_path, repo_root):
    run = tiny_run["run_dir"]
    fasta = tmp_path / "in.fasta"
    out = tmp_path / "out"
    if case == "letter":
        fasta.write_text(">ok\nMKTAYI\n>bad_one\nMKT\nAJYI\n")
        expect = ["bad_one", "'J'", "position 5"]
    elif case == "empty":
        fasta.write_text(">ok\nMKTAYI\n>void\n\n>z\nAA\n")
        expect = ["void", "empty"]
    elif case == "too_long":
        fasta.write_text(">ok\nMKTAYI\n>long\n" + "A" * (tiny_run["max_len"] + 1) + "\n")
        expect = ["long", f"{tiny_run['max_len'] + 1} residues", f"at most {tiny_run['max_len']}"]
    elif case == "short":
        fasta.write_text(">one\nM\n")
        expect = ["one", "at least 2"]
    elif case == "missing_run":
        fasta.write_text(">ok\nMKTAYI\n")
        run = tmp_path / "no_such_run"
        expect = ["no_such_run", "does not exist"]
    else:
        fasta.write_text(">ok\nMKTAYI\n")
        run = corrupt_run
        expect = ["cannot load run", "cannot read weights"]
    r = _run_cli(repo_root, "--model_path", run, "--fasta", fasta, "--output", out)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and lines[0].startswith("error: ")
    for e in expect:
        assert e in lines[0], lines[0]
    assert not out.exists(), "no output may be left behind"
