"""dataset.py: schema round trip, loader errors, distances and global statistics by hand."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from proteinmtp.constants import DATASET_FORMAT
from proteinmtp.dataio import open_dataset
from proteinmtp.dataset import (
    GLOBAL_STATS_KEYS,
    DatasetFormatError,
    Sample,
    compute_global_stats,
    save_dataset,
)


def _sample(n: int, seed: int, split: str = "train", missing: tuple[int, ...] = ()) -> Sample:
    rng = np.random.default_rng(seed)
    ca = np.round(np.cumsum(rng.normal(size=(n, 3)) * 2.2, axis=0), 3)
    ca[list(missing)] = np.nan
    return Sample(id=f"s{seed}:A", sequence="ACDEFGHIKL"[:n], ca=ca, residue_ids=[str(i) for i in range(n)],
                  source=f"s{seed}.pdb", split=split, cb=ca.copy())


def test_distances_by_hand() -> None:
    s = _sample(5, 0, missing=(2,))
    d = s.distances()
    assert d.shape == (5, 5)
    assert np.isnan(d[2, [0, 1, 3, 4]]).all() and np.isnan(d[[0, 1, 3, 4], 2]).all()
    assert (np.diag(d) == 0).all()
    assert d[0, 4] == pytest.approx(float(np.sqrt(((s.ca[0] - s.ca[4]) ** 2).sum())))
    np.testing.assert_array_equal(s.mask(), [True, True, False, True, True])


@pytest.mark.parametrize("name", ["train.json", "train.json.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    samples = [_sample(6, 1, missing=(0,)), _sample(9, 2)]
    stats = compute_global_stats(samples)
    save_dataset(tmp_path / name, samples, stats, {"identity": 0.3})
    ds = open_dataset(tmp_path / name)
    assert ds.format == DATASET_FORMAT and ds.config == {"identity": 0.3} and ds.global_stats == stats
    for a, b in zip(samples, ds.samples):
        assert (a.id, a.sequence, a.residue_ids, a.split, a.source) == (b.id, b.sequence, b.residue_ids, b.split, b.source)
        np.testing.assert_array_equal(a.ca, b.ca)
        np.testing.assert_array_equal(a.cb, b.cb)
    raw = (gzip.open if name.endswith(".gz") else open)(tmp_path / name, "rt").read()
    doc = json.loads(raw)
    assert doc["samples"][0]["ca"][0] is None  # missing Cα stored as null
    assert all(set(s) <= {"id", "sequence", "ca", "residue_ids", "source", "split", "cb", "breaks", "cluster"}
               for s in doc["samples"])  # coordinates only, no distance matrices
    assert all(set(s) >= {"id", "sequence", "ca", "residue_ids", "source", "split"} for s in doc["samples"])


def test_global_stats_by_hand() -> None:
    a = _sample(4, 3, missing=(1,))
    b = _sample(3, 4)
    c = _sample(7, 5, split="val")  # must be ignored
    stats = compute_global_stats([a, b, c])
    assert set(stats) == set(GLOBAL_STATS_KEYS)
    d = []
    for s in (a, b):
        pts = [p for p in s.ca if not np.isnan(p).any()]
        for i in range(len(pts)):
            for j in range(i + 1, len(pts)):
                d.append(float(np.linalg.norm(pts[i] - pts[j])))
    d = np.array(d)
    assert stats["n_chains"] == 2 and stats["n_pairs"] == len(d) == 3 + 3
    assert stats["dist_mean"] == pytest.approx(d.mean())
    assert stats["dist_median"] == pytest.approx(np.median(d))
    assert stats["log_dist_mean"] == pytest.approx(np.log(d).mean())
    assert stats["log_dist_std"] == pytest.approx(np.log(d).std())
    t = (np.log(d) - np.log(d).mean()) / np.log(d).std()
    assert stats["target_mean"] == pytest.approx(0.0, abs=1e-12)
    assert stats["target_std"] == pytest.approx(1.0)
    assert stats["target_max"] == pytest.approx(t.max()) and stats["target_min"] == pytest.approx(t.min())


def _write(tmp_path: Path, obj, name: str = "x.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_loader_rejects_newer_and_unknown_format(tmp_path: Path) -> None:
    base = {"config": {}, "global_stats": {}, "samples": []}
    with pytest.raises(DatasetFormatError, match="newer"):
        open_dataset(_write(tmp_path, {**base, "format": "proteinmtp-dataset/2"}))
    with pytest.raises(DatasetFormatError, match="unknown dataset format"):
        open_dataset(_write(tmp_path, {**base, "format": "someone-else/1"}))
    with pytest.raises(DatasetFormatError, match="format"):
        open_dataset(_write(tmp_path, base))
    with pytest.raises(DatasetFormatError, match="seed-era"):
        open_dataset(_write(tmp_path, [{"sequence": "AA", "coords": [[0, 0, 0], [3.8, 0, 0]]}]))
    with pytest.raises(DatasetFormatError, match="missing top-level"):
        open_dataset(_write(tmp_path, {"format": DATASET_FORMAT, "samples": []}))
    bad = {**base, "format": DATASET_FORMAT, "samples": [{"id": "a:A", "sequence": "AAA", "ca": [[0, 0, 0]]}]}
    with pytest.raises(DatasetFormatError, match=r"x.json: sample 0 \('a:A'\): ca: 1 entries for 3 residues"):
        open_dataset(_write(tmp_path, bad))


def test_loader_rejects_truncated(tmp_path: Path) -> None:
    samples = [_sample(8, 6)]
    save_dataset(tmp_path / "t.json", samples, compute_global_stats(samples), {})
    raw = (tmp_path / "t.json").read_bytes()
    (tmp_path / "cut.json").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetFormatError, match="not valid JSON"):
        open_dataset(tmp_path / "cut.json")
    save_dataset(tmp_path / "t.json.gz", samples, compute_global_stats(samples), {})
    gz = (tmp_path / "t.json.gz").read_bytes()
    (tmp_path / "cut.json.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DatasetFormatError, match="truncated"):
        open_dataset(tmp_path / "cut.json.gz")
    with pytest.raises(DatasetFormatError, match="cannot open"):
        open_dataset(tmp_path / "nope.json")


# ---- every field of every sample is validated on load: one line, FILE: sample N ('id'): field: problem ----
def _doc() -> dict:
    good = {"id": "a:A", "sequence": "ACD", "ca": [[0.0, 0.0, 0.0], [3.8, 0.0, 0.0], None],
            "residue_ids": ["1", "2", "2A"], "source": "a.pdb", "split": "train", "cb": None,
            "breaks": [0], "cluster": "a:A", "ss8": "H-?"}
    return {"format": DATASET_FORMAT, "config": {}, "global_stats": {"log_dist_mean": 2.0, "log_dist_std": 0.5},
            "samples": [good, {**good, "id": "b:A"}]}


_BAD_SAMPLES = [   # (field, value for sample 1 'b:A' (None: delete the key), expected problem)
    ("sequence", 123, "sequence: must be a string, got a number"),
    ("sequence", "123", r"sequence: letters \['1', '2', '3'\] outside the alphabet"),
    ("sequence", "acd", r"sequence: letters \['a', 'c', 'd'\] outside"),
    ("sequence", None, "sequence: missing"),
    ("ca", "abc", "ca: must be a list of \\[x, y, z\\] or null, got a string"),
    ("ca", [[True, False, "1"], None, None], r'ca: entry 0 is \[true, false, "1"\], not \[x, y, z\] numbers'),
    ("ca", [[1.0, 2.0], None, None], r"ca: entry 0 is \[1.0, 2.0\], not \[x, y, z\]"),
    ("ca", [[float("inf"), 0.0, 0.0], None, None], r"ca: entry 0 is \[inf, 0.0, 0.0\]: coordinates must be finite"),
    ("ca", [None, [0.0, float("nan"), 0.0], None], r"ca: entry 1 is \[0.0, NaN, 0.0\]: NaN is not a coordinate"),
    ("ca", [[1e9, 0.0, 0.0], None, None], r"ca: entry 0 .* within ±10000 Å"),
    ("ca", [[0.0, 0.0, 0.0]], "ca: 1 entries for 3 residues"),
    ("ca", None, "ca: missing"),
    ("cb", [[0, 0, 0], [1, 1, 1], "x"], "cb: entry 2 is \"x\""),
    ("breaks", ["x"], "breaks: entry 0 is 'x', not an integer"),
    ("breaks", [True], "breaks: entry 0 is True, not an integer"),
    ("breaks", [2], r"breaks: entry 0 is 2: breaks are increasing indices in 0..1"),
    ("breaks", [1, 0], r"breaks: entry 1 is 0"),
    ("breaks", [1.0], "breaks: entry 0 is 1.0, not an integer"),
    ("breaks", "1", "breaks: must be a list"),
    ("residue_ids", ["1"], "residue_ids: 1 entries for 3 residues"),
    ("residue_ids", [1, 2, 3], "residue_ids: entry 0 is 1, not a non-empty string"),
    ("ss8", "HH", "ss8: has 2 states for 3 residues"),
    ("ss8", "XYZ", r"ss8: has letters \['X', 'Y', 'Z'\] outside the DSSP alphabet"),
    ("ss8", 5, "ss8: must be a string"),
    ("id", 5, "id: must be a non-empty string"),
    ("split", "training", r"split: 'training' is not one of"),
    ("source", 3, "source: must be a string, got a number"),
    ("cluster", ["x"], "cluster: must be a string or null, got a list"),
    ("bresks", [1], "bresks: unknown field"),
]


@pytest.mark.parametrize("field_name,value,problem", _BAD_SAMPLES, ids=[f"{c[0]}-{i}" for i, c in enumerate(_BAD_SAMPLES)])
def test_malformed_sample_is_one_line_naming_file_sample_and_field(tmp_path: Path, field_name, value, problem) -> None:
    doc = _doc()
    if value is None:
        del doc["samples"][1][field_name]
    else:
        doc["samples"][1][field_name] = value
    path = _write(tmp_path, doc)
    sid = "'b:A'" if isinstance(doc["samples"][1].get("id"), str) else "'?'"
    with pytest.raises(DatasetFormatError) as e:
        open_dataset(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert re.match(rf"{re.escape(str(path))}: sample 1 \({re.escape(sid)}\): {problem}", msg), msg


@pytest.mark.parametrize("bad,problem", [
    (5, "sample: must be a JSON object, got a number"),
    ([], "sample: must be a JSON object, got a list"),
    ("a:A", "sample: must be a JSON object, got a string"),
])
def test_sample_that_is_not_an_object(tmp_path: Path, bad, problem) -> None:
    doc = _doc()
    doc["samples"][1] = bad
    with pytest.raises(DatasetFormatError, match=rf"x.json: sample 1 \('\?'\): {problem}"):
        open_dataset(_write(tmp_path, doc))


def test_duplicated_id_and_bad_header(tmp_path: Path) -> None:
    doc = _doc()
    doc["samples"][1]["id"] = "a:A"
    with pytest.raises(DatasetFormatError, match=r"x.json: sample 1 \('a:A'\): id: duplicates the id of sample 0"):
        open_dataset(_write(tmp_path, doc))
    for stats, problem in (({"log_dist_std": "x"}, "log_dist_std is 'x', not a finite number"),
                           ({"log_dist_mean": float("nan")}, "log_dist_mean is nan"),
                           ({"log_dist_std": 0.0}, "log_dist_std is 0.0, must be > 0"),
                           ([1], "global_stats: must be a JSON object")):
        doc = {**_doc(), "global_stats": stats}
        with pytest.raises(DatasetFormatError, match=rf"x.json: (global_stats: )?{problem}"):
            open_dataset(_write(tmp_path, doc))
    open_dataset(_write(tmp_path, _doc()))                  # the unmodified document is valid


def test_writer_refuses_what_the_reader_would(tmp_path: Path) -> None:
    s = _sample(4, 0)
    s.sequence = "AC1D"
    with pytest.raises(DatasetFormatError, match=r"w.json: sample 0 \('s0:A'\): sequence: letters \['1'\]"):
        save_dataset(tmp_path / "w.json", [s], {}, {})
    assert list(tmp_path.iterdir()) == []                  # nothing (not even a temporary file) left


@pytest.mark.parametrize("script", ["train_distmat", "evaluate_distmat_model"])
def test_scripts_exit_2_with_one_line_before_writing(tmp_path: Path, capsys, script: str) -> None:
    """Digits as a sequence (today a LayoutError inside trainer.train): exit 2, the loader's line, no output."""
    import importlib

    doc = _doc()
    doc["samples"][1]["sequence"] = "123"
    bad = _write(tmp_path, doc, "bad.json")
    out = tmp_path / "out"
    run = tmp_path / "run"
    run.mkdir()                       # evaluation reads the test data before it loads the run's model
    if script == "train_distmat":
        argv = ["--train_data", str(bad), "--model_name", str(tmp_path / "no_model"), "--output_dir", str(out)]
    else:
        argv = ["--model_path", str(run), "--test_data", str(bad), "--output_dir", str(out),
                "--experiments_root", str(tmp_path / "exp")]
    try:
        rc = importlib.import_module(script).main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "bad.json: sample 1 ('b:A'): sequence: letters ['1', '2', '3'] outside the alphabet" in lines[0]
    assert not out.exists() and not (tmp_path / "exp").exists()
