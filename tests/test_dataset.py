"""dataset.py: schema round trip, loader errors, distances and global statistics by hand."""

from __future__ import annotations

import gzip
import json
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
