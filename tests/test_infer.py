"""infer_distmat.py end to end with a tiny trained run: outputs gemmi can read, and bad input refused cleanly."""

from __future__ import annotations

import json
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
        assert ((b >= 0) & (b <= 100)).all()
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


@pytest.mark.parametrize("case", ["short", "missing_run", "corrupt_weights", "format_clash"])
def test_bad_input(case, tiny_run, corrupt_run, tmp_path, repo_root):
    """Nothing can be predicted: one line on stderr, exit 2, no output."""
    run = tiny_run["run_dir"]
    fasta = tmp_path / "in.fasta"
    out = tmp_path / "out"
    src = ["--fasta", fasta]
    if case == "short":
        fasta.write_text(">one\nM\n")
        expect = ["one", "at least 2", "nothing written"]
    elif case == "missing_run":
        fasta.write_text(">ok\nMKTAYI\n")
        run = tmp_path / "no_such_run"
        expect = ["no_such_run", "does not exist"]
    elif case == "corrupt_weights":
        fasta.write_text(">ok\nMKTAYI\n")
        run = corrupt_run
        expect = ["cannot load run", "cannot read weights"]
    else:
        out = tmp_path / "x.cif"
        src = ["--sequence", "MKTAYI", "--output_format", "pdb"]
        expect = ["x.cif", ".cif", "--output_format is pdb"]
    r = _run_cli(repo_root, "--model_path", run, *src, "--output", out)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("failed: ")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and lines[0].startswith("error: ")
    for e in expect:
        assert e in r.stderr, r.stderr
    assert not out.exists(), "no output may be left behind"


def _manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("case", ["letter", "empty", "too_long"])
def test_bad_record_reported_and_batch_goes_on(case, tiny_run, tmp_path):
    fasta = tmp_path / "in.fasta"
    out = tmp_path / "out"
    if case == "letter":
        fasta.write_text(">ok\nMKTAYI\n>bad_one\nMKT\nAJYI\n>last\nGGSAAK\n")
        expect = ["record 2 'bad_one'", "'J'", "position 5"]
    elif case == "empty":
        fasta.write_text(">ok\nMKTAYI\n>bad_one\n\n>last\nAAC\n")
        expect = ["record 2 'bad_one'", "empty"]
    else:
        fasta.write_text(">ok\nMKTAYI\n>bad_one\n" + "A" * (tiny_run["max_len"] + 1) + "\n>last\nAAC\n")
        expect = ["record 2 'bad_one'", f"{tiny_run['max_len'] + 1} residues", f"at most {tiny_run['max_len']}"]
    r = _run_main(tiny_run, "--fasta", fasta, "--output", out)
    assert r.rc == 1
    [line] = [ln for ln in r.err.splitlines() if ln.startswith("failed: ")]
    for e in expect:
        assert e in line, line
    assert "1 of 3 record(s) failed" in r.err
    assert sorted(p.name for p in out.glob("*.pdb")) == ["last.pdb", "ok.pdb"]
    rows = {row["id"]: row for row in _manifest(out)}
    assert rows["ok"]["status"] == rows["last"]["status"] == "done" and rows["ok"]["outputs"] == ["ok.pdb"]
    assert rows["bad_one"]["status"] == "failed" and expect[-1] in rows["bad_one"]["reason"]


class _Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err


def _run_main(tiny_run, *args):
    import contextlib
    import io

    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = infer_distmat.main(["--model_path", str(tiny_run["run_dir"]), *map(str, args)])
    return _Result(rc, o.getvalue(), e.getvalue())


@pytest.mark.parametrize("workers,sig", [(1, "SIGINT"), (1, "SIGTERM"),
                                         pytest.param(2, "SIGINT", marks=pytest.mark.slow),
                                         pytest.param(2, "SIGTERM", marks=pytest.mark.slow)])
def test_interrupted_batch_keeps_outputs_and_resumes(workers, sig, tiny_run, tmp_path, repo_root):
    """SIGINT or SIGTERM (a scheduler's stop) after the first structure appears: exit 130, finished files
    (and an earlier run's file) stay; a rerun skips them and completes the rest; every record is done
    exactly once over the two runs."""
    import signal
    import time

    rng = np.random.default_rng(0)
    n = 20
    fasta = tmp_path / "many.fasta"
    fasta.write_text("".join(f">r{k:02d}\n{''.join(rng.choice(list('ACDEFGHIKLMNPQRSTVWY'), 60))}\n"
                             for k in range(n)))
    out = tmp_path / "preds"
    out.mkdir()
    (out / "earlier_run.pdb").write_text("kept\n")
    cmd = [sys.executable, str(repo_root / "infer_distmat.py"), "--model_path", str(tiny_run["run_dir"]),
           "--fasta", str(fasta), "--output", str(out), "--save_distmat", "--workers", str(workers),
           "--batch_size", "4"]
    proc = subprocess.Popen(cmd, cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob("r*.pdb")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the batch ended before it could be interrupted"
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "resume" in err
    kept = sorted(p.stem for p in out.glob("r*.pdb"))
    assert 1 <= len(kept) < n
    assert (out / "earlier_run.pdb").read_text() == "kept\n"
    for stem in kept:  # each finished record is whole: structure and its distance matrix
        assert (out / f"{stem}_distmat.npy").is_file()
        assert len(gemmi.read_structure(str(out / f"{stem}.pdb"))[0][0]) == 60
    assert not list(out.glob(".*tmp"))
    mtimes = {s: (out / f"{s}.pdb").stat().st_mtime_ns for s in kept}
    assert sorted(row["id"] for row in _manifest(out) if row["status"] == "done") == kept

    r = _run_main(tiny_run, *cmd[4:])    # the same command, in this process (saves a torch import)
    assert r.rc == 0, r.err
    assert f"skipped {len(kept)} record(s)" in r.out
    assert sorted(p.stem for p in out.glob("r*.pdb")) == [f"r{k:02d}" for k in range(n)]
    assert {s: (out / f"{s}.pdb").stat().st_mtime_ns for s in kept} == mtimes   # not rewritten
    rows = _manifest(out)
    assert sum(row["status"] == "skipped" for row in rows) == len(kept)
    assert sorted(row["id"] for row in rows if row["status"] == "done") == [f"r{k:02d}" for k in range(n)]
    assert (out / "earlier_run.pdb").read_text() == "kept\n"


def test_existing_output_with_other_sequence_is_not_skipped(tiny_run, tmp_path):
    out = tmp_path / "preds"
    (tmp_path / "a.fasta").write_text(">p1\nMKTAYIAKQR\n>p2\nGSHMSLFDFF\n")
    assert _run_main(tiny_run, "--fasta", tmp_path / "a.fasta", "--output", out).rc == 0
    before = (out / "p1.pdb").read_bytes()
    # same ids, p1 with another sequence: p1 is refused (its old file kept), p2 is skipped
    (tmp_path / "b.fasta").write_text(">p1\nMKTAYIAKQW\n>p2\nGSHMSLFDFF\n")
    r = _run_main(tiny_run, "--fasta", tmp_path / "b.fasta", "--output", out)
    assert r.rc == 1 and "record 1 'p1'" in r.err and "another sequence" in r.err and "--overwrite" in r.err
    assert "skipped 1 record(s)" in r.out
    assert (out / "p1.pdb").read_bytes() == before
    r = _run_main(tiny_run, "--fasta", tmp_path / "b.fasta", "--output", out, "--overwrite")
    assert r.rc == 0 and "wrote 2 structures" in r.out
    assert [n for n, _ in _read_ca(out / "p1.pdb")][-1] == "TRP"


def test_duplicate_ids_are_reported(tiny_run, tmp_path):
    fasta = tmp_path / "dup.fasta"
    fasta.write_text(">same\nMKTAYI\n>same\nGGSAAK\n>Same\nAACDEF\n")
    out = tmp_path / "o"
    r = _run_main(tiny_run, "--fasta", fasta, "--output", out)
    assert r.rc == 0
    assert "note: record 2 'same' repeats the id of record 1 'same'; its files are named 'same_2'" in r.err
    assert "note: record 3 'Same' has the same file name as record 1 'same'; its files are named 'Same_3'" in r.err
    assert sorted(p.name for p in out.glob("*.pdb")) == ["Same_3.pdb", "same.pdb", "same_2.pdb"]
    rows = _manifest(out)
    assert [row["stem"] for row in rows] == ["same", "same_2", "Same_3"]
    assert "note" not in rows[0] and "repeats the id" in rows[1]["note"]


def test_output_extension_chooses_format(tiny_run, tmp_path):
    seq = "MKTAYIAKQRQISFVKSHFSRQ"
    assert _run_main(tiny_run, "--sequence", seq, "--output", tmp_path / "x.pdb").rc == 0
    assert _run_main(tiny_run, "--sequence", seq, "--output", tmp_path / "x.cif").rc == 0
    assert (tmp_path / "x.cif").read_text().startswith("data_")
    cif, pdb = _read_ca(tmp_path / "x.cif"), _read_ca(tmp_path / "x.pdb")
    assert [n for n, _ in cif] == [AA1_TO_AA3[c] for c in seq]
    np.testing.assert_allclose([a.pos.tolist() for _, a in cif], [a.pos.tolist() for _, a in pdb], atol=2e-3)
    np.testing.assert_allclose([a.b_iso for _, a in cif], [a.b_iso for _, a in pdb], atol=0.01)
    # --output_format overrides an unknown extension; a second run into the same file is skipped
    assert _run_main(tiny_run, "--sequence", seq, "--output", tmp_path / "x.txt", "--output_format", "cif").rc == 0
    assert (tmp_path / "x.txt").read_text().startswith("data_")
    r = _run_main(tiny_run, "--sequence", seq, "--output", tmp_path / "x.cif")
    assert r.rc == 0 and "skipped" in r.out and "--overwrite" in r.out


def test_fasta_encodings(tiny_run, tmp_path):
    out = tmp_path / "o"
    (tmp_path / "bom.fasta").write_bytes(b"\xef\xbb\xbf>bom\nMKTAYI\n")
    r = _run_main(tiny_run, "--fasta", tmp_path / "bom.fasta", "--output", out)
    assert r.rc == 0 and (out / "bom.pdb").is_file() and "note" not in r.err
    (tmp_path / "latin1.fasta").write_bytes(b">l1 M\xfcller lab\nMKTAYI\n>l2\nGGSAAK\n")
    r = _run_main(tiny_run, "--fasta", tmp_path / "latin1.fasta", "--output", out)
    assert r.rc == 0 and (out / "l1.pdb").is_file() and (out / "l2.pdb").is_file()
    assert "line 1" in r.err and "0xfc" in r.err and "Latin-1" in r.err


# ----------------------------------------------------------------------------- at scale

AA20 = list("ACDEFGHIKLMNPQRSTVWY")


def _random_fasta(path, n, lengths=(8, 30), seed=0):
    rng = np.random.default_rng(seed)
    seqs = {f"s{k:03d}": "".join(rng.choice(AA20, int(rng.integers(*lengths)))) for k in range(n)}
    path.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    return seqs


def _rows(out, name="manifest.jsonl"):
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def test_length_batches_hand_checked():
    from proteinmtp.batching import length_batches

    lengths = [10, 50, 20, 40, 30]          # sorted: 10 (0), 20 (2), 30 (4), 40 (3), 50 (1)
    assert length_batches(lengths, 8) == [[0, 2, 4, 3, 1]]
    assert length_batches(lengths, 2) == [[0, 2], [4, 3], [1]]
    # budget 3600 residues²: 3 × 30² = 2700 fits, 2 × 40² = 3200 fits, 3 × 40² = 4800 and 2 × 50² do not
    assert length_batches(lengths, 8, 3600) == [[0, 2, 4], [3], [1]]
    assert length_batches([30, 30, 30, 40], 8, 3200) == [[0, 1, 2], [3]]       # 3 × 900 ≤ 3200 < 4 × 1600
    assert length_batches([5, 100, 5], 8, 50) == [[0, 2], [1]]                 # 100² > 50: alone, not dropped
    assert length_batches([], 4, 100) == []


def test_resolve_shard_from_flags_and_launcher_env():
    from proteinmtp.fasta import InputError
    from proteinmtp.sharding import resolve_shard

    assert resolve_shard(1, 0, {}).count == 1 and resolve_shard(1, 0, {}).label == ""
    s = resolve_shard(3, 2, {})
    assert (s.index, s.count, s.label) == (2, 3, "shard-2-of-3")
    assert [n for n in range(1, 11) if s.holds(n)] == [3, 6, 9]          # record n -> shard (n - 1) mod K
    r = resolve_shard(1, 0, {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert (r.index, r.count, r.local_rank) == (1, 2, 1)
    # job array of K = 2 tasks, each torchrun with W = 3 ranks: the 6 processes cover 1..30 once each,
    # and the ranks of task I hold exactly task I's records
    K, W = 2, 3
    held = {(i, rk): [n for n in range(1, 31) if resolve_shard(K, i, {"WORLD_SIZE": str(W), "RANK": str(rk)}).holds(n)]
            for i in range(K) for rk in range(W)}
    assert sorted(n for v in held.values() for n in v) == list(range(1, 31))
    for i in range(K):
        assert sorted(n for (ti, _), v in held.items() if ti == i for n in v) == [n for n in range(1, 31)
                                                                                  if (n - 1) % K == i]
    for bad, match in (((2, 2, {}), "--shard_index"), ((0, 0, {}), "--num_shards"),
                       ((1, 0, {"WORLD_SIZE": "x"}), "WORLD_SIZE"), ((1, 0, {"WORLD_SIZE": "2", "RANK": "2"}), "RANK")):
        with pytest.raises(InputError, match=match):
            resolve_shard(*bad)


def test_iter_fasta_streams_in_constant_memory(tmp_path):
    """A 1.9 MB FASTA is read record by record: the Python heap never holds more than a few records."""
    import tracemalloc

    from proteinmtp.fasta import iter_fasta

    path = tmp_path / "big.fasta"
    rec = "".join(AA20) * 5
    with open(path, "w") as fh:
        for k in range(15_000):
            fh.write(f">r{k} some description\n{rec[:60]}\n{rec[60:]}\n")
    assert path.stat().st_size > 1.8e6
    tracemalloc.start()
    n = total = 0
    last = ""
    for last, seq in iter_fasta(path):  # noqa: B007 - the last id is checked below
        n += 1
        total += len(seq)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (n, total, last) == (15_000, 15_000 * 100, "r14999")
    assert peak < 100_000, peak          # bytes: the file is 1.9 MB


def test_cli_never_reads_the_fasta_whole(tiny_run, tmp_path, monkeypatch):
    """The whole-file readers are not used by the CLI (they would raise here), and the look-ahead window
    bounds what a forward pass is given."""
    import proteinmtp.fasta
    import proteinmtp.fileio
    import proteinmtp.model

    def forbidden(*a, **k):
        raise AssertionError("the FASTA was read whole")

    monkeypatch.setattr(proteinmtp.fasta, "read_fasta", forbidden)
    monkeypatch.setattr(proteinmtp.fileio, "read_bytes", forbidden)
    seen = []
    real = proteinmtp.model.LoadedRun.predict

    def spy(self, seqs, *a, **k):
        seen.append(len(seqs))
        return real(self, seqs, *a, **k)

    monkeypatch.setattr(proteinmtp.model.LoadedRun, "predict", spy)
    _random_fasta(tmp_path / "in.fasta", 7)
    out = tmp_path / "o"
    r = _run_main(tiny_run, "--fasta", tmp_path / "in.fasta", "--output", out, "--sort_window", "3",
                  "--mds_method", "classical")
    assert r.rc == 0, r.err
    assert len(list(out.glob("*.pdb"))) == 7 and max(seen) <= 3 and sum(seen) == 7


def test_shards_by_flag_cover_every_record_once(tiny_run, tmp_path):
    seqs = _random_fasta(tmp_path / "in.fasta", 8)
    out = tmp_path / "o"
    for i in range(3):
        r = _run_main(tiny_run, "--fasta", tmp_path / "in.fasta", "--output", out, "--num_shards", 3,
                      "--shard_index", i, "--mds_method", "classical", "--save_distmat")
        assert r.rc == 0, r.err
    assert sorted(p.stem for p in out.glob("*.pdb")) == sorted(seqs)
    assert not (out / "manifest.jsonl").exists()
    numbers = []
    for i in range(3):
        rows = _rows(out, f"manifest.shard-{i}-of-3.jsonl")
        assert all(row["status"] == "done" and (row["record"] - 1) % 3 == i and row["shard"] == f"shard-{i}-of-3"
                   for row in rows)
        numbers += [row["record"] for row in rows]
    assert sorted(numbers) == list(range(1, 9))              # union = all, no overlap
    r = _run_main(tiny_run, "--fasta", tmp_path / "in.fasta", "--output", out, "--num_shards", 3,
                  "--shard_index", 3)
    assert r.rc == 2 and "--shard_index must be in 0..2" in r.err


def test_rank_env_shards_automatically(tiny_run, tmp_path, monkeypatch):
    """Under torchrun (WORLD_SIZE/RANK set) each rank predicts its share with no flag; more ranks than
    records leave the extra rank with nothing to do (exit 0)."""
    seqs = _random_fasta(tmp_path / "in.fasta", 3)
    out = tmp_path / "o"
    for rank in range(4):
        monkeypatch.setenv("WORLD_SIZE", "4")
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        r = _run_main(tiny_run, "--fasta", tmp_path / "in.fasta", "--output", out, "--mds_method", "classical",
                      "--device", "cpu")
        assert r.rc == 0, r.err
        if rank == 3:
            assert "holds no record" in r.err and not (out / "manifest.shard-3-of-4.jsonl").exists()
        else:
            assert [row["record"] for row in _rows(out, f"manifest.shard-{rank}-of-4.jsonl")] == [rank + 1]
    assert sorted(p.stem for p in out.glob("*.pdb")) == sorted(seqs)


def _pdb_xyz(path):
    return np.array([a.pos.tolist() for r in gemmi.read_structure(str(path))[0][0] for a in r])


def test_workers_give_the_same_structures(tiny_run, tmp_path):
    """--workers 2 (spawned processes) writes the same coordinates and distances as in-process work."""
    seqs = _random_fasta(tmp_path / "in.fasta", 4, lengths=(20, 60))
    outs = {}
    for w in (1, 2):
        outs[w] = tmp_path / f"w{w}"
        r = _run_main(tiny_run, "--fasta", tmp_path / "in.fasta", "--output", outs[w], "--workers", w,
                      "--save_distmat", "--batch_size", 2)
        assert r.rc == 0, r.err
        assert sorted(row["id"] for row in _rows(outs[w]) if row["status"] == "done") == sorted(seqs)
    # The same computation in another process: equal up to floating-point reduction order (inside a long
    # test session the in-process BLAS/torch thread state differs from a fresh worker's; seen as <= 0.004 Å
    # after 300 L-BFGS iterations, against 3.8 Å bonds).
    for stem in seqs:
        np.testing.assert_allclose(_pdb_xyz(outs[1] / f"{stem}.pdb"), _pdb_xyz(outs[2] / f"{stem}.pdb"), atol=0.02)
        np.testing.assert_allclose(np.load(outs[1] / f"{stem}_distmat.npy"),
                                   np.load(outs[2] / f"{stem}_distmat.npy"), rtol=1e-4, atol=1e-4)


def test_worker_failure_fails_that_record_only(tmp_path):
    """A record whose reconstruction raises in a worker is reported with its error; the others are written."""
    from types import SimpleNamespace

    from proteinmtp.inference import RecordJob, finish_record
    from proteinmtp.pool import WorkerPool
    from tests.conftest import helix_ca

    def job(key, dist):
        L = len(dist)
        pred = SimpleNamespace(sequence="A" * L, dist=dist, contact_prob=np.zeros((L, L)),
                               pair_confidence=np.full((L, L), 0.5), residue_confidence=np.full(L, 0.5),
                               distogram_probs=None, bin_edges=None)
        return RecordJob(key, pred, {"structure": tmp_path / f"r{key}.pdb"}, method="classical")

    good = helix_ca(12)
    d = np.linalg.norm(good[:, None] - good[None], axis=-1)
    bad = d.copy()
    bad[0, 1] = -5.0                                          # not a distance matrix
    pool = WorkerPool(finish_record, 2)
    try:
        for k, dist in enumerate((d, bad, d)):
            pool.submit(k, job(k, dist))
        res = dict(pool.results(wait_until=0))
    finally:
        pool.close()
    assert sorted(res) == [0, 1, 2] and pool.in_flight == 0
    assert isinstance(res[1], ValueError) and not (tmp_path / "r1.pdb").exists()
    for k in (0, 2):
        assert res[k]["method"] == "classical"
        xyz = _pdb_xyz(tmp_path / f"r{k}.pdb")
        np.testing.assert_allclose(np.linalg.norm(xyz[:, None] - xyz[None], axis=-1), d, atol=0.01)


def test_mds_method_distogram_through_the_cli(tiny_run, tmp_path):
    """--mds_method distogram folds from the model's distogram: the REMARK names it, and the Cα trace keeps
    3.8 Å bonds (the folding's bond term)."""
    out = tmp_path / "d.pdb"
    r = _run_main(tiny_run, "--sequence", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "--output", out,
                  "--mds_method", "distogram")
    assert r.rc == 0, r.err
    text = out.read_text()
    assert "RECONSTRUCTION DISTOGRAM MDS" in text.upper()
    xyz = _pdb_xyz(out)
    assert len(xyz) == 33
    np.testing.assert_allclose(np.linalg.norm(np.diff(xyz, axis=0), axis=1), 3.8, atol=0.3)
