"""create_distmat_data.py end to end: counts against an independent reader, report, splits, inputs, CLI."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from Bio.Data.PDBData import protein_letters_3to1_extended
from Bio.PDB import MMCIFParser, PDBParser

from proteinmtp.dataio import open_dataset
from proteinmtp.dataset import compute_global_stats
from proteinmtp.structure import read_structure

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "create_distmat_data.py"
GOOD = ["3KPR.pdb.gz", "3KPR.cif.gz", "1A8O.pdb.gz", "19hc.pdb.gz", "2BEG.pdb.gz", "2XHE.pdb.gz",
        "1LCD.pdb.gz", "nmr_neopetrosiamide.pdb.gz", "disordered.pdb.gz", "1ACB_l_b.pdb.gz", "1ACB_l_u.pdb.gz"]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--no_progress"], cwd=cwd,
                          capture_output=True, text=True, check=False)


def independent_sequences(path: Path, min_len: int, max_len: int) -> list[tuple[str, int]]:
    """Biopython read, first model, own three->one table: (sequence, n residues without CA) per chain."""
    name = str(path).removesuffix(".gz")
    parser = MMCIFParser(QUIET=True) if name.endswith(".cif") else PDBParser(QUIET=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gzip.open(path, "rt") as fh:
            model = next(iter(parser.get_structure("x", fh)))
    out = []
    for chain in model:
        res = [r for r in chain if r.id[0] != "W" and r.resname in protein_letters_3to1_extended
               and (r.id[0] == " " or "CA" in r)]
        seq = "".join(protein_letters_3to1_extended[r.resname] for r in res)
        if min_len <= len(seq) <= max_len:
            out.append((seq, sum("CA" not in r for r in res)))
    return out


@pytest.fixture(scope="module")
def small_build(tmp_path_factory, test_data_dir: Path) -> Path:
    """tests/data plus a broken, an empty, a not-a-structure and a DNA-only file, all train."""
    src = tmp_path_factory.mktemp("inputs")
    for f in test_data_dir.glob("*.gz"):
        shutil.copy(f, src / f.name)
    (src / "empty.pdb").write_text("")
    (src / "shopping.pdb").write_text("milk\neggs\n")
    raw = gzip.open(test_data_dir / "3KPR.pdb.gz", "rb").read()
    (src / "cut.pdb").write_bytes(raw[: len(raw) // 3 - 20])  # cut inside an ATOM line
    text = gzip.open(test_data_dir / "1LCD.pdb.gz", "rt").read()
    (src / "dna_only.pdb").write_text("\n".join(
        ln for ln in text.splitlines() if not (ln.startswith(("ATOM", "HETATM")) and ln[21] == "A")))
    (src / "notes.txt.bak").write_text("ignored: not a structure extension")
    out = tmp_path_factory.mktemp("out")
    r = run_cli("--input", str(src), "--output_dir", str(out), "--val_fraction", "0", "--test_fraction", "0")
    assert r.returncode == 0, r.stderr
    (out / "stdout.txt").write_text(r.stdout)
    return out


def test_unique_count_matches_independent_count(small_build: Path, test_data_dir: Path) -> None:
    seqs: dict[str, int] = {}
    for name in GOOD:
        for seq, n_missing in independent_sequences(test_data_dir / name, 30, 1000):
            if n_missing <= 0.1 * len(seq) and seq.count("X") <= 0.5 * len(seq):
                seqs[seq] = 1
    train = open_dataset(small_build / "train.json")
    assert len(train) == len(seqs) == len({s.sequence for s in train.samples})
    assert {s.sequence for s in train.samples} == set(seqs)
    assert len(open_dataset(small_build / "val.json")) == len(open_dataset(small_build / "test.json")) == 0
    summary = json.loads((small_build / "report.json").read_text())["summary"]
    assert summary["chains_kept"] == len(seqs)
    assert summary["chains_found"] == summary["chains_kept"] + sum(summary["chains_dropped"].values())
    assert f"{len(seqs)} kept" in (small_build / "stdout.txt").read_text()


def test_report_lists_every_skipped_file(small_build: Path) -> None:
    report = json.loads((small_build / "report.json").read_text())
    files = {Path(e["file"]).name: e for e in report["files"]}
    assert files["1YJP_invalid.cif.gz"]["status"] == "skipped"
    assert "group_PDB 'WRONG'" in files["1YJP_invalid.cif.gz"]["reason"]
    assert "empty" in files["empty.pdb"]["reason"]
    assert "not a PDB" in files["shopping.pdb"]["reason"]
    assert "truncated" in files["cut.pdb"]["reason"]
    assert files["dna_only.pdb"]["reason"] == "no protein chains in the first model"
    assert "notes.txt.bak" not in files  # directories contribute structure extensions only
    # 3KPR: the 9-residue peptides C and H are too short; F, G, ... duplicate A, B, ...
    kpr = {c["id"]: c["reason"] for e in report["files"] if Path(e["file"]).name.startswith("3KPR")
           for c in e.get("chains", [])}
    assert kpr["3KPR:C"] == "too_short" and kpr["3KPR:H"] == "too_short"
    assert report["summary"]["files_failed"] == 4 and report["summary"]["files_without_protein"] == 1


def test_global_stats_from_train_only(small_build: Path) -> None:
    train = open_dataset(small_build / "train.json")
    stats = compute_global_stats(train.samples)
    assert train.global_stats == pytest.approx(stats)
    d = np.concatenate([s.distances()[np.triu_indices(len(s), 1)] for s in train.samples])
    d = d[~np.isnan(d)]
    assert stats["n_pairs"] == len(d) and stats["dist_mean"] == pytest.approx(d.mean())


def test_builder_ships_the_training_prior(small_build: Path) -> None:
    """create_distmat_data.py writes prior.json; it is what training would fit on the written train split."""
    from proteinmtp.prior import SeparationPrior, prior_for_training

    train = open_dataset(small_build / "train.json")
    prior, why = prior_for_training(small_build / "train.json", train.samples)
    assert "shipped" in why
    assert json.dumps(prior.to_dict()) == json.dumps(SeparationPrior.fit(train.samples).to_dict())


def test_streamed_save_bytes_equal_whole_document(demo_dir: Path, tmp_path: Path) -> None:
    """save_dataset writes sample by sample; the bytes equal json.dumps of the whole document (and its
    gzip.compress at level 9, mtime 0): the committed demo split is reproduced byte for byte."""
    from proteinmtp.dataset import dataset_to_dict, save_dataset

    src = demo_dir / "dataset" / "val.json.gz"
    ds = open_dataset(src)
    save_dataset(tmp_path / "v.json.gz", ds.samples, ds.global_stats, ds.config)
    save_dataset(tmp_path / "v.json", ds.samples, ds.global_stats, ds.config)
    text = json.dumps(dataset_to_dict(ds.samples, ds.global_stats, ds.config), separators=(",", ":")).encode()
    assert (tmp_path / "v.json").read_bytes() == text
    assert (tmp_path / "v.json.gz").read_bytes() == gzip.compress(text, compresslevel=9, mtime=0) == src.read_bytes()


def test_streamed_global_stats_equal_exact_on_a_dataset(demo_dir: Path) -> None:
    """The streamed statistics (running moments merged chain by chain; median exact up to 2^20 pairs, else
    from the ln-d histogram) against numpy over every pair of the demo training split held at once
    (~2M pairs): moments to 1e-9 relative, the exact-mode median equal, the sketch median within 1e-4."""
    from proteinmtp.dataset import PairStatistics, iter_pair_distances

    train = open_dataset(demo_dir / "dataset" / "train.json.gz").samples
    stats = compute_global_stats(train)
    d = np.concatenate([s.distances()[np.triu_indices(len(s), 1)] for s in train])   # the exact reference
    d = d[~np.isnan(d)]
    logd = np.log(np.maximum(d, 1e-3))
    t = (logd - logd.mean()) / logd.std()
    assert stats["n_pairs"] == len(d) > 1 << 20              # beyond the exact-median buffer: the sketch
    exact = {"dist_mean": d.mean(), "dist_std": d.std(), "dist_min": d.min(), "dist_max": d.max(),
             "log_dist_mean": logd.mean(), "log_dist_std": logd.std(), "target_min": t.min(), "target_max": t.max()}
    for k, v in exact.items():
        assert stats[k] == pytest.approx(v, rel=1e-9), k
    assert stats["target_mean"] == pytest.approx(0.0, abs=1e-9) and stats["target_std"] == pytest.approx(1.0, rel=1e-9)
    assert stats["dist_median"] == pytest.approx(np.median(d), rel=1e-4)
    acc = PairStatistics(exact_limit=1 << 30)                 # everything kept: numpy's median exactly
    for x in iter_pair_distances(train[:40]):
        acc.add(x)
    d40 = np.concatenate(list(iter_pair_distances(train[:40])))
    assert acc.median() == np.median(d40) and acc.d.n == len(d40)
    sketch = PairStatistics(exact_limit=0)
    for x in iter_pair_distances(train[:40]):
        sketch.add(x)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        assert sketch.quantile(q) == pytest.approx(np.quantile(d40, q), rel=1e-4), q
    assert sketch._hist.nbytes < 2e6                          # fixed size, whatever the number of pairs


@pytest.fixture(scope="module")
def demo_splits(demo_dir: Path) -> dict:
    return {name: open_dataset(demo_dir / "dataset" / f"{name}.json.gz") for name in ("train", "val", "test")}


def _best_global_identity(query: str, targets: list[str]) -> float:
    """Highest identity (identical aligned residues / shorter length) of ``query`` to any target under a
    Needleman-Wunsch alignment (Biopython, BLOSUM62, gaps -11/-1): a check independent of MMseqs2, which
    made the split."""
    from Bio import Align
    from Bio.Align import substitution_matrices

    al = Align.PairwiseAligner(mode="global", substitution_matrix=substitution_matrices.load("BLOSUM62"),
                               open_gap_score=-11, extend_gap_score=-1)
    scores = [al.score(query, t) for t in targets]
    t = targets[int(np.argmax(scores))]
    a = al.align(query, t)[0]
    same = sum(1 for i, j in zip(*a.indices) if i >= 0 and j >= 0 and query[i] == t[j])
    return same / min(len(query), len(t))


def test_demo_dataset_has_no_leakage(demo_splits: dict) -> None:
    """Independent check of the committed demo split: whole clusters per split, and no val/test chain
    aligns globally to a training chain at >= 40% identity over the shorter chain (a pair that close
    would have been linked by the 30 % MMseqs2 clustering, whatever its coverage); the same check finds
    a training chain with every tenth residue mutated."""
    tr = {s.id: s.sequence for s in demo_splits["train"].samples}
    held = {s.id: s.sequence for n in ("val", "test") for s in demo_splits[n].samples}
    assert len(tr) >= 200 and len(held) >= 40 and not set(tr) & set(held)
    clusters = {n: {s.cluster for s in demo_splits[n].samples} for n in demo_splits}
    assert not clusters["train"] & clusters["val"] and not clusters["train"] & clusters["test"]
    assert not clusters["val"] & clusters["test"]
    train_seqs = list(tr.values())
    best = {k: _best_global_identity(q, train_seqs) for k, q in held.items()}
    assert max(best.values()) < 0.4, sorted(best.items(), key=lambda kv: -kv[1])[:3]
    kin = "".join("W" if k % 10 == 0 else c for k, c in enumerate(train_seqs[0]))
    assert _best_global_identity(kin, train_seqs) >= 0.85
    assert len(set(tr.values()) | set(held.values())) == len(tr) + len(held)  # identical sequences kept once


def test_demo_dataset_matches_structures(demo_splits: dict, demo_dir: Path) -> None:
    samples = [s for n in demo_splits for s in demo_splits[n].samples]
    assert len(samples) >= 300
    for s in samples[::40]:
        src = demo_dir / "structures" / Path(s.source).name
        (chain,) = [c for c in read_structure(src) if c.id == s.id]
        assert chain.sequence == s.sequence and list(chain.residue_ids) == s.residue_ids
        np.testing.assert_allclose(s.ca, chain.ca, atol=5e-4)
    size = sum(f.stat().st_size for f in demo_dir.rglob("*") if f.is_file())
    assert size < 10e6


def test_inputs_glob_list_seed_json_and_flags(tmp_path: Path, test_data_dir: Path) -> None:
    (tmp_path / "list.txt").write_text(f"# a comment\n{test_data_dir / '3KPR.pdb.gz'}\n")
    rng = np.random.default_rng(0)
    seed_records = [
        {"name": "seedA", "sequence": "ACDEFGHIKLMNPQRSTVWYACDEFGHIKLMNPQRSTVWY",
         "coords": np.round(np.cumsum(rng.normal(size=(40, 3)) * 2.2, axis=0), 3).tolist()},
        {"name": "seedB", "sequence": "AAAA", "coords": [[0, 0, 0]]},  # invalid: lengths differ
    ]
    (tmp_path / "protein_coords_data.json").write_text(json.dumps(seed_records))
    out = tmp_path / "out"
    r = run_cli("--input", str(tmp_path / "list.txt"), str(test_data_dir / "1A8O.*.gz"),
                str(tmp_path / "protein_coords_data.json"), "--output_dir", str(out),
                "--train_ratio", "1.0", "--chains", "A,B,seedA:A", "--compress")
    assert r.returncode == 0, r.stderr
    train = open_dataset(out / "train.json.gz")
    ids = sorted(s.id for s in train.samples)
    assert ids == ["1A8O:A", "3KPR:A", "3KPR:B", "seedA:A"]
    seed = next(s for s in train.samples if s.id == "seedA:A")
    np.testing.assert_allclose(seed.ca, seed_records[0]["coords"])
    report = json.loads((out / "report.json").read_text())
    seed_entry = next(e for e in report["files"] if e["file"].endswith("protein_coords_data.json"))
    assert "4 residues but 1 coordinate rows" in json.dumps(seed_entry)
    assert report["summary"]["chains_dropped"]["not_selected"] >= 6  # 3KPR D..J

    out2 = tmp_path / "out2"
    r = run_cli("--input", str(test_data_dir), "--output_dir", str(out2), "--max_samples", "3",
                "--val_fraction", "0", "--test_fraction", "0")
    assert r.returncode == 0, r.stderr
    assert len(open_dataset(out2 / "train.json")) == 3


def test_split_build_is_deterministic(tmp_path: Path, test_data_dir: Path) -> None:
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        r = run_cli("--input", str(test_data_dir), "--output_dir", str(out), "--val_fraction", "0.2",
                    "--test_fraction", "0.2", "--seed", "3", "--workers", workers)
        assert r.returncode == 0, r.stderr
        outs.append({f.name: f.read_bytes() for f in out.iterdir()})
    assert outs[0] == outs[1]
    splits = {n: open_dataset(tmp_path / "w1" / f"{n}.json") for n in ("train", "val", "test")}
    assert all(len(splits[n]) > 0 for n in splits)
    assert {s.split for n in splits for s in splits[n].samples} == {"train", "val", "test"}


@pytest.mark.slow
def test_prefilter_build_with_verify_split_reports_and_is_leakage_free(tmp_path: Path, test_data_dir: Path) -> None:
    """--search prefilter --verify_split: the report says which search ran and what the exhaustive check did,
    the summary line says it, and no held-out chain has an exhaustive hit in another split (checked here
    with an independent all-against-all exhaustive search, not the builder's own)."""
    from proteinmtp.splits import iter_search_hits

    out = tmp_path / "pv"
    r = run_cli("--input", str(test_data_dir), "--output_dir", str(out), "--val_fraction", "0.2",
                "--test_fraction", "0.2", "--seed", "3", "--search", "prefilter", "--verify_split")
    assert r.returncode == 0, r.stderr
    cl = json.loads((out / "report.json").read_text())["summary"]["clustering"]
    assert cl["exhaustive"] is False and cl["verify"]["held_out_chains"] > 0
    assert "split verified exhaustively" in r.stdout
    samples = [s for n in ("train", "val", "test") for s in open_dataset(out / f"{n}.json").samples]
    split = {s.id: s.split for s in samples}
    seqs = {s.id: s.sequence for s in samples}
    for h in iter_search_hits(seqs, seqs, min_identity=0.3, cov_mode=1, exhaustive=True):
        assert split[h["query"]] == split[h["target"]], h


@pytest.mark.parametrize(
    "args,message",
    [
        (["--input", "no/such/dir", "--output_dir", "x"], "no such file or directory"),
        (["--input", "tests/data", "--output_dir", "x", "--val_fraction", "1.5"], "--val_fraction"),
        (["--input", "tests/data", "--output_dir", "x", "--train_ratio", "0.8", "--val_fraction", "0.1"],
         "--train_ratio cannot be combined"),
        (["--input", "tests/data/*.xyz", "--output_dir", "x"], "matches no file"),
    ],
)
def test_cli_bad_input_one_line_error(args: list[str], message: str, tmp_path: Path) -> None:
    r = run_cli(*args)
    assert r.returncode != 0
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _main(*args: str) -> tuple[int, str, str]:
    """create_distmat_data.main in this process (no interpreter start-up): (exit status, stdout, stderr)."""
    import contextlib
    import io

    import create_distmat_data

    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = create_distmat_data.main([*args, "--no_progress"])
    return rc, o.getvalue(), e.getvalue()


def test_bcif_symlink_and_fifo_are_reported(tmp_path: Path, test_data_dir: Path) -> None:
    """Neither dropped unseen nor blocking: a BinaryCIF, a dangling symlink and a FIFO beside a good file."""
    import os

    from tests.test_structure import write_bcif

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(test_data_dir / "1LCD.pdb.gz", src / "1LCD.pdb.gz")
    write_bcif(test_data_dir / "1A8O.pdb.gz", src / "1A8O.bcif")
    os.symlink(tmp_path / "gone.pdb", src / "link.pdb")
    os.mkfifo(src / "pipe.cif")
    out = tmp_path / "out"
    r = run_cli("--input", str(src), "--output_dir", str(out), "--val_fraction", "0", "--test_fraction", "0")
    assert r.returncode == 0, r.stderr     # a read of the FIFO would block until the test's timeout
    report = json.loads((out / "report.json").read_text())
    files = {Path(e["file"]).name: e for e in report["files"]}
    assert files["1A8O.bcif"]["kind"] == "unsupported_format" and "BinaryCIF is not supported" in files["1A8O.bcif"]["reason"]
    assert files["link.pdb"]["kind"] == "dangling_symlink" and "gone.pdb" in files["link.pdb"]["reason"]
    assert files["pipe.cif"]["kind"] == "not_a_regular_file" and "FIFO" in files["pipe.cif"]["reason"]
    s = report["summary"]
    assert s["inputs"] == 4 and s["files_read"] == 1 and s["files_failed"] == 3
    assert s["files_failed_by_kind"] == {"dangling_symlink": 1, "not_a_regular_file": 1, "unsupported_format": 1}
    for line in ("not read: 1 unsupported format", "not read: 1 dangling symlink", "not read: 1 not a regular file"):
        assert line in r.stdout


def test_only_unusable_files_still_write_the_report(tmp_path: Path, test_data_dir: Path) -> None:
    from tests.test_structure import write_bcif

    src = tmp_path / "in"
    src.mkdir()
    (src / "empty.pdb").write_text("")
    (src / "shopping.pdb").write_text("milk\neggs\n")
    write_bcif(test_data_dir / "1LCD.pdb.gz", src / "x.bcif")
    out = tmp_path / "out"
    rc, _, err = _main("--input", str(src), "--output_dir", str(out))
    assert rc == 2
    assert "no input file was readable (3 file(s): 2 unreadable, 1 unsupported format)" in err
    assert str(out / "report.json") in err and "--min_len" not in err
    report = json.loads((out / "report.json").read_text())
    reasons = {Path(e["file"]).name: e["reason"] for e in report["files"]}
    assert "empty" in reasons["empty.pdb"] and "not a PDB" in reasons["shopping.pdb"]
    assert "BinaryCIF" in reasons["x.bcif"]
    assert report["summary"]["files_read"] == 0 and "no input file was readable" in report["error"]
    assert not list(out.glob("train*"))
    # readable, but every chain filtered out: the report too, with the filter hint
    out2 = tmp_path / "out2"
    rc, _, err = _main("--input", str(test_data_dir / "1LCD.pdb.gz"), "--output_dir", str(out2), "--min_len", "999")
    assert rc == 2 and "no chain passed the filters" in err and "--min_len" in err
    report = json.loads((out2 / "report.json").read_text())
    assert report["summary"]["chains_dropped"] == {"too_short": 1}


def test_file_ids_shortest_distinguishing_folder() -> None:
    from proteinmtp.builder import file_ids

    paths = ["r/a/prot.pdb", "r/b/prot.pdb.gz", "r/x/a/p.pdb", "r/y/a/p.pdb", "r/b/p.pdb",
             "r/t1/ranked_0.pdb", "r/t2/ranked_0.pdb", "r/t2/ranked_0.cif", "r/solo.pdb"]
    expected = {"r/a/prot.pdb": "a/prot", "r/b/prot.pdb.gz": "b/prot", "r/x/a/p.pdb": "x/a/p",
                "r/y/a/p.pdb": "y/a/p", "r/b/p.pdb": "b/p", "r/t1/ranked_0.pdb": "t1/ranked_0",
                "r/t2/ranked_0.pdb": "t2/ranked_0", "r/t2/ranked_0.cif": "t2/ranked_0", "r/solo.pdb": "solo"}
    assert file_ids(paths) == expected
    assert file_ids(paths[::-1]) == expected          # order does not matter


def test_same_file_name_in_two_folders_keeps_both(tmp_path: Path, test_data_dir: Path) -> None:
    src = tmp_path / "in"
    for folder, name in (("a", "1LCD"), ("b", "1A8O"), ("t1", "3KPR"), ("t2", "2XHE")):
        (src / folder).mkdir(parents=True)
        dst = "prot.pdb.gz" if folder in ("a", "b") else "ranked_0.pdb.gz"
        shutil.copy(test_data_dir / f"{name}.pdb.gz", src / folder / dst)
    ids = []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        rc, _, err = _main("--input", str(src), "--output_dir", str(out), "--val_fraction", "0",
                           "--test_fraction", "0", "--workers", workers, "--chains", "A,B")
        assert rc == 0, err
        train = open_dataset(out / "train.json")
        ids.append(sorted(s.id for s in train.samples))
        by_id = {s.id: s for s in train.samples}
        assert by_id["a/prot:A"].sequence == read_structure(test_data_dir / "1LCD.pdb.gz")[0].sequence
        assert by_id["b/prot:A"].source.endswith("b/prot.pdb.gz")
    assert ids[0] == ids[1]
    assert ids[0] == ["a/prot:A", "b/prot:A", "t1/ranked_0:A", "t1/ranked_0:B", "t2/ranked_0:A", "t2/ranked_0:B"]
    report = json.loads((tmp_path / "out1" / "report.json").read_text())
    assert "duplicate_id" not in report["summary"]["chains_dropped"]
    # a stem:chain selection still picks the chain out of every folder
    rc, _, err = _main("--input", str(src), "--output_dir", str(tmp_path / "sel"), "--val_fraction", "0",
                       "--test_fraction", "0", "--chains", "prot:A")
    assert rc == 0, err
    assert sorted(s.id for s in open_dataset(tmp_path / "sel" / "train.json").samples) == ["a/prot:A", "b/prot:A"]


def test_rebuild_with_other_options_removes_the_old_splits(tmp_path: Path, test_data_dir: Path) -> None:
    """A rebuild into the same directory with another --format/--compress leaves only the new splits (the
    old ones removed after the new ones are written); other files, and a failed rebuild, remove nothing."""
    out = tmp_path / "d"
    base = ["--input", str(test_data_dir / "3KPR.pdb.gz"), str(test_data_dir / "1LCD.pdb.gz"), "--output_dir",
            str(out), "--val_fraction", "0", "--test_fraction", "0"]
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "val.shards").mkdir()                               # a directory that is not a sharded dataset
    (out / "val.shards" / "keep").write_text("mine")

    def split_names() -> list[str]:
        return sorted(p.name for p in out.iterdir() if p.name.startswith(("train", "val", "test")))

    assert _main(*base, "--compress")[0] == 0
    first = open_dataset(out / "train.json.gz")
    assert split_names() == ["test.json.gz", "train.json.gz", "val.json.gz", "val.shards"]
    rc, stdout, _ = _main(*base)
    assert rc == 0 and f"removed {out / 'train.json.gz'}" in stdout
    assert split_names() == ["test.json", "train.json", "val.json", "val.shards"]
    assert (out / "val.shards" / "keep").read_text() == "mine"
    shutil.rmtree(out / "val.shards")
    assert _main(*base, "--format", "binary")[0] == 0
    assert split_names() == ["test.shards", "train.shards", "val.shards"]
    assert _main(*base, "--shard_mb", "0")[0] == 2                        # refused: nothing removed
    assert split_names() == ["test.shards", "train.shards", "val.shards"]
    assert _main(*base, "--compress")[0] == 0
    assert split_names() == ["test.json.gz", "train.json.gz", "val.json.gz"]
    assert (out / "notes.txt").read_text() == "mine" and not [p for p in out.iterdir() if p.name.startswith(".")]
    again = open_dataset(out / "train.json.gz")
    assert [s.id for s in again.samples] == [s.id for s in first.samples] and again.global_stats == first.global_stats
