"""Scoring predicted structure files against natives: alignment-based residue matching, chain pairing,
agreement with tmtools, and the evaluate_distmat_model.py pair mode (JSON contract, errors)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import evaluate_distmat_model as cli
from proteinmtp import metrics as M
from proteinmtp.scoring import align_sequences, read_pairs_tsv, score_files
from proteinmtp.structure_writer import pdb_string, write_pdb


@pytest.fixture(scope="module")
def native(test_data_dir):
    z = np.load(test_data_dir / "geometry" / "small_114.npz")
    return z["ca"].astype(np.float64), str(z["sequence"])


def _decoy(ca: np.ndarray, seed: int = 0, sigma: float = 1.5) -> np.ndarray:
    return ca + np.random.default_rng(seed).normal(scale=sigma, size=ca.shape)


def test_align_sequences_identity_and_gaps():
    ia, ib, _ = align_sequences("ACDEFGHIK", "ACDEFGHIK")
    assert ia.tolist() == ib.tolist() == list(range(9))
    # b lacks "EF" and has an extra N-terminal "MM"
    ia, ib, _ = align_sequences("ACDEFGHIKLMNPQ", "MMACDGHIKLMNPQ")
    pairs = dict(zip(ia.tolist(), ib.tolist()))
    assert pairs[0] == 2 and pairs[2] == 4 and pairs[5] == 5 and pairs[13] == 13
    assert 3 not in pairs and 4 not in pairs


def test_identical_sequences_match_tmtools(tmp_path, native):
    import tmtools

    ca, seq = native
    dec = _decoy(ca)
    write_pdb(tmp_path / "pred.pdb", dec, seq)
    write_pdb(tmp_path / "native.pdb", ca, seq, chain_id="B")
    r = score_files(tmp_path / "pred.pdb", tmp_path / "native.pdb")
    ref = tmtools.tm_align(dec, ca, seq, seq, alignment=[seq, seq]).tm_norm_chain2
    assert r["n_aligned"] == len(ca)
    assert r["tm_score"] == pytest.approx(ref, abs=0.01)
    assert r["rmsd"] == pytest.approx(M.rmsd(dec, ca), abs=1e-3)      # PDB stores 3 decimals
    assert r["lddt"] == pytest.approx(M.lddt_ca(dec, ca), abs=1e-3)


def test_truncated_and_mutated_prediction_is_aligned(tmp_path, native):
    ca, seq = native
    keep = np.r_[10:50, 60:114]                         # prediction misses 0–9 and 50–59
    pseq = list(seq[i] for i in keep)
    pseq[20] = "W" if pseq[20] != "W" else "A"          # one point mutation
    pseq = "".join(pseq)
    dec = _decoy(ca, seed=2)[keep]
    write_pdb(tmp_path / "pred.pdb", dec, pseq)
    write_pdb(tmp_path / "native.pdb", ca, seq)
    r = score_files(tmp_path / "pred.pdb", tmp_path / "native.pdb")
    assert r["n_aligned"] == len(keep)
    # same numbers as scoring the known correspondence directly, TM/GDT normalised by the native
    full = np.full_like(ca, np.nan)
    full[keep] = dec
    assert r["tm_score"] == pytest.approx(M.tm_score(full, ca), abs=1e-3)
    assert r["gdt_ts"] == pytest.approx(M.gdt(full, ca)["gdt_ts"], abs=1e-3)
    assert r["rmsd"] == pytest.approx(M.rmsd(dec, ca[keep]), abs=1e-3)


def test_partial_prediction_scored_over_the_native(tmp_path, native):
    """The native's own first 60 of N residues as the prediction: every score counts the N − 60 missing
    residues as misses (lDDT over the native's pairs, TM/GDT over N), hand-computed here."""
    ca, seq = native
    N, k = len(ca), 60
    write_pdb(tmp_path / "pred.pdb", ca[:k], seq[:k])
    write_pdb(tmp_path / "native.pdb", ca, seq)
    r = score_files(tmp_path / "pred.pdb", tmp_path / "native.pdb")
    assert r["n_aligned"] == k and r["n_native"] == N
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    pairs = (d < 15.0) & ~np.eye(N, dtype=bool)
    expected_lddt = pairs[:k, :k].sum() / pairs.sum()        # exact within the 60, 0 elsewhere
    assert 0.1 < expected_lddt < k / N   # pairs crossing residue 60 are lost too
    assert r["lddt"] == pytest.approx(expected_lddt, abs=2e-3)  # PDB keeps 3 decimals
    assert r["tm_score"] == pytest.approx(k / N, abs=1e-3)
    assert r["gdt_ts"] == pytest.approx(k / N, abs=1e-3) and r["gdt_ha"] == pytest.approx(k / N, abs=1e-3)
    assert r["rmsd"] == pytest.approx(0.0, abs=2e-3)          # over the residues present in both


def _two_chains(first: str, second: str) -> str:
    keep = ("ATOM", "TER")
    body = [ln for text in (first, second) for ln in text.splitlines() if ln.startswith(keep)]
    return "\n".join(body + ["END", ""])


def test_chains_are_paired_by_sequence(tmp_path, native):
    ca, seq = native
    other = ca[:60][::-1] + 40.0
    oseq = "GSGSGSGSGS" * 6
    # prediction lists the chains in the opposite order, with other chain ids
    (tmp_path / "pred.pdb").write_text(_two_chains(pdb_string(other, oseq, chain_id="X"),
                                                   pdb_string(_decoy(ca), seq, chain_id="Y")))
    (tmp_path / "native.pdb").write_text(_two_chains(pdb_string(ca, seq, chain_id="A"),
                                                     pdb_string(other, oseq, chain_id="B")))
    r = score_files(tmp_path / "pred.pdb", tmp_path / "native.pdb")
    assert sorted(p.split(":")[1] + n.split(":")[1] for p, n in r["chains"]) == ["XB", "YA"]
    assert r["n_aligned"] == len(ca) + 60


def test_cli_pairs_mode_writes_contract_json(tmp_path, native):
    ca, seq = native
    write_pdb(tmp_path / "native.pdb", ca, seq)
    for k in range(2):
        write_pdb(tmp_path / f"pred{k}.pdb", _decoy(ca, seed=k), seq)
    (tmp_path / "pairs.tsv").write_text("pred\tnative\n# comment\npred0.pdb\tnative.pdb\npred1.pdb\tnative.pdb\n")
    pairs, failures = read_pairs_tsv(tmp_path / "pairs.tsv")
    assert [line for line, _, _ in pairs] == [3, 4] and failures == []
    out = tmp_path / "scores.json"
    assert cli.main(["--pairs", str(tmp_path / "pairs.tsv"), "--output_json", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert len(res["pairs"]) == 2
    for row in res["pairs"]:
        assert {"pred", "native", "n_aligned", "rmsd", "tm_score", "gdt_ts", "gdt_ha", "lddt"} <= set(row)
    for k in ("rmsd", "tm_score", "gdt_ts", "gdt_ha", "lddt", "n_aligned"):
        assert res["mean"][k] == pytest.approx(np.mean([row[k] for row in res["pairs"]]))
    # single pair mode gives the same row
    out1 = tmp_path / "one.json"
    assert cli.main(["--pred_pdb", str(tmp_path / "pred1.pdb"), "--native_pdb", str(tmp_path / "native.pdb"),
                     "--output_json", str(out1), "--quiet"]) == 0
    assert json.loads(out1.read_text())["pairs"][0]["tm_score"] == pytest.approx(res["pairs"][1]["tm_score"])


def test_cli_bad_input_one_line_error(tmp_path, capsys, native):
    out = tmp_path / "x.json"
    assert cli.main(["--pred_pdb", str(tmp_path / "missing.pdb"), "--native_pdb", str(tmp_path / "missing.pdb"),
                     "--output_json", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing.pdb" in err and "\n" not in err
    assert not out.exists()
    (tmp_path / "junk.pdb").write_text("this is not a structure\n")
    ca, seq = native
    write_pdb(tmp_path / "native.pdb", ca, seq)
    assert cli.main(["--pred_pdb", str(tmp_path / "junk.pdb"), "--native_pdb", str(tmp_path / "native.pdb"),
                     "--output_json", str(out), "--quiet"]) == 2
    (tmp_path / "bad.tsv").write_text("only_one_column\n")
    assert cli.main(["--pairs", str(tmp_path / "bad.tsv"), "--output_json", str(out), "--quiet"]) == 1
    assert "bad.tsv:1" in capsys.readouterr().err
    assert json.loads(out.read_text())["failed"][0]["line"] == 1
    (tmp_path / "empty.tsv").write_text("# nothing\n")
    assert cli.main(["--pairs", str(tmp_path / "empty.tsv"), "--output_json", str(out), "--quiet"]) == 2
    assert "no pairs found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--pred_pdb", "a.pdb"])          # argparse usage error: --output_json missing


def test_cli_pairs_scores_every_good_line(tmp_path, capsys, native):
    """A missing file, a non-structure, an unalignable pair and a one-column line: each listed with its line
    number and reason (JSON and stderr); the good lines are scored; exit status 1."""
    ca, seq = native
    write_pdb(tmp_path / "native.pdb", ca, seq)
    write_pdb(tmp_path / "good.pdb", _decoy(ca), seq)
    (tmp_path / "junk.pdb").write_text("this is not a structure\n")
    write_pdb(tmp_path / "dna_like.pdb", ca[:20], "W" * 20)      # shares no residue type with the native
    lines = ["pred\tnative", "good.pdb\tnative.pdb", "missing.pdb\tnative.pdb", "junk.pdb\tnative.pdb",
             "", "dna_like.pdb\tnative.pdb", "one column only", "good.pdb\tnative.pdb"]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.json"
    assert cli.main(["--pairs", str(tmp_path / "pairs.tsv"), "--output_json", str(out), "--quiet"]) == 1
    res = json.loads(out.read_text())
    assert [row["line"] for row in res["pairs"]] == [2, 8]
    assert res["pairs"][0]["tm_score"] == pytest.approx(res["pairs"][1]["tm_score"]) and res["mean"]["n_pairs"] == 2
    failed = {f["line"]: f["reason"] for f in res["failed"]}
    assert sorted(failed) == [3, 4, 6, 7] and res["n_failed"] == 4
    assert "missing.pdb" in failed[3] and "cannot open" in failed[3]
    assert "junk.pdb" in failed[4] and "no chain" in failed[6] and "column" in failed[7]
    err = capsys.readouterr().err
    for line in (3, 4, 6, 7):
        assert f"pairs.tsv:{line}: " in err
    assert "4 pair line(s) failed" in err


def test_pair_mode_reports_identity_and_refuses_unrelated_chains(tmp_path, native, capsys):
    """A 22-mer of another protein against the native: refused with one line (exit 2, nothing written)
    unless --allow_mismatch, which scores it and reports identity and aligned fraction; the identity is
    counted by hand from the alignment."""
    ca, seq = native
    rng = np.random.default_rng(3)
    other = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 22))
    write_pdb(tmp_path / "pred.pdb", _decoy(ca[:22], seed=4), other)
    write_pdb(tmp_path / "native.pdb", ca, seq)
    out = tmp_path / "s.json"
    args = ["--pred_pdb", str(tmp_path / "pred.pdb"), "--native_pdb", str(tmp_path / "native.pdb"),
            "--output_json", str(out)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not match" in err[0] and "--allow_mismatch" in err[0], err
    assert not out.exists()

    assert cli.main([*args, "--allow_mismatch"]) == 0
    console = capsys.readouterr().out
    row = json.loads(out.read_text())["pairs"][0]
    ia, ib, _ = align_sequences(other, seq)
    same = sum(other[a] == seq[b] for a, b in zip(ia, ib))
    assert row["identity"] == pytest.approx(same / len(ia))
    assert row["aligned_fraction"] == pytest.approx(len(ia) / len(seq)) and row["aligned_fraction"] < 0.5
    assert f"identity {row['identity']:.3f}" in console and f"aligned fraction {row['aligned_fraction']:.3f}" in console


def test_pairs_file_lists_a_mismatching_line_as_failed(tmp_path, native):
    ca, seq = native
    write_pdb(tmp_path / "native.pdb", ca, seq)
    write_pdb(tmp_path / "good.pdb", _decoy(ca), seq)
    write_pdb(tmp_path / "other.pdb", ca, "".join(np.random.default_rng(1).choice(list("ACDEFGHIKLMNPQRSTVWY"), len(seq))))
    (tmp_path / "pairs.tsv").write_text("good.pdb\tnative.pdb\nother.pdb\tnative.pdb\n")
    out = tmp_path / "s.json"
    assert cli.main(["--pairs", str(tmp_path / "pairs.tsv"), "--output_json", str(out), "--quiet"]) == 1
    res = json.loads(out.read_text())
    assert [r["line"] for r in res["pairs"]] == [1] and res["pairs"][0]["identity"] == 1.0
    assert res["pairs"][0]["aligned_fraction"] == 1.0 and res["mean"]["identity"] == 1.0
    assert [f["line"] for f in res["failed"]] == [2] and "do not match" in res["failed"][0]["reason"]


def test_low_identity_is_refused(tmp_path, native):
    """The native's own coordinates under a random sequence of its length: identity 0.23 over the aligned
    residues (and 31 % aligned) is refused; --allow_mismatch scores it."""
    ca, seq = native
    other = "".join(np.random.default_rng(1).choice(list("ACDEFGHIKLMNPQRSTVWY"), len(seq)))
    write_pdb(tmp_path / "pred.pdb", ca, other)
    write_pdb(tmp_path / "native.pdb", ca, seq)
    with pytest.raises(ValueError, match="identity 0.23 "):
        score_files(tmp_path / "pred.pdb", tmp_path / "native.pdb")
    r = score_files(tmp_path / "pred.pdb", tmp_path / "native.pdb", allow_mismatch=True)
    assert r["identity"] < 0.3
