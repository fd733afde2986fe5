"""shards.py: JSON <-> binary round trip (every field, optional ones, NaN rows), shard bounds, lazy views,
corrupt/truncated/foreign files, version checks, atomic writes, DataLoader workers, the CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from proteinmtp import dataio as D
from proteinmtp import shards as S
from proteinmtp.dataio import open_dataset
from proteinmtp.dataset import DatasetFormatError, Sample, compute_global_stats, save_dataset
from proteinmtp.shardcheck import _coord_rows_ok
from proteinmtp.training import CropDataset

REPO = Path(__file__).resolve().parents[1]


def _sample(n: int, seed: int, missing: tuple[int, ...] = (), cb: bool = True, cluster: str | None = "c0",
            split: str = "train") -> Sample:
    rng = np.random.default_rng(seed)
    ca = np.cumsum(rng.normal(size=(n, 3)) * 2.2, axis=0) + rng.uniform(-900, 900, 3)   # full precision
    ca[list(missing)] = np.nan
    letters = "ACDEFGHIKLMNPQRSTVWYX"
    seq = "".join(letters[i] for i in rng.integers(0, len(letters), n))
    rids = [str(i + 1) + ("A" if i % 7 == 3 else "") for i in range(n)]
    return Sample(id=f"dir/s{seed}:A", sequence=seq, ca=ca, residue_ids=rids, source=f"dir/s{seed}.cif.gz",
                  split=split, cb=(ca + 1.5) if cb else None, breaks=[1, 3] if n > 4 else [], cluster=cluster)


def _samples() -> list[Sample]:
    return [_sample(12, 1, missing=(0, 5)), _sample(30, 2, cb=False, cluster=None), _sample(1, 3),
            _sample(50, 4, missing=tuple(range(50)), split="val"), _sample(7, 5)]


def _equal(a: Sample, b: Sample) -> None:
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x is not None and y is not None, f.name
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)      # NaN rows equal NaN rows
        else:
            assert x == y, (f.name, x, y)


def test_json_binary_json_is_exact(tmp_path: Path) -> None:
    """JSON -> binary -> Samples equal to JSON's; binary -> JSON byte-identical to the original file."""
    samples = _samples()
    stats = compute_global_stats(samples)
    save_dataset(tmp_path / "a.json.gz", samples, stats, {"identity": 0.3})
    js = open_dataset(tmp_path / "a.json.gz")
    D.convert(tmp_path / "a.json.gz", tmp_path / "a.shards")
    bs = open_dataset(tmp_path / "a.shards")                      # detected: a directory
    assert bs.global_stats == stats and bs.config == {"identity": 0.3} and len(bs) == len(samples)
    for a, b in zip(js.samples, bs.samples):
        _equal(a, b)
    assert bs.samples[1].cb is None and bs.samples[1].cluster is None
    assert np.isnan(bs.samples[3].ca).all() and np.isnan(bs.samples[0].ca[[0, 5]]).all()
    D.convert(tmp_path / "a.shards", tmp_path / "b.json.gz")
    assert (tmp_path / "b.json.gz").read_bytes() == (tmp_path / "a.json.gz").read_bytes()
    # distances equal to the float64 JSON's (exact, not merely < 1e-3 Å)
    np.testing.assert_array_equal(bs.samples[0].distances(), js.samples[0].distances())


def test_every_field_comes_through_generically(tmp_path: Path, monkeypatch) -> None:
    """A Sample with more optional per-residue fields (a string like ss8, an array) and an unknown scalar
    round-trips without the format knowing the fields, also when some samples lack them."""
    @dataclasses.dataclass
    class Wider(Sample):
        ss8: str | None = None
        plddt: np.ndarray | None = None
        note: dict | None = None

    monkeypatch.setattr(S, "Sample", Wider)
    base = _samples()
    for s in base:                      # coordinates on the 1e-3 Å grid both formats store
        s.ca = np.round(s.ca, 3)
        s.cb = None if s.cb is None else np.round(s.cb, 3)
    wide = [Wider(**{f.name: getattr(s, f.name) for f in dataclasses.fields(Sample)}) for s in base]
    for k, s in enumerate(wide):
        if k != 1:
            s.ss8 = "".join("HGIEBTS-"[(i * 3 + k) % 8] for i in range(len(s)))
        if k != 2:
            s.plddt = np.linspace(0, 100, len(s)).astype(np.float32)
        s.note = {"k": k} if k % 2 else None
    S.save_shards(tmp_path / "w", wide, {}, {}, shard_mb=0.0005)      # ~500 B: several shards
    got = S.open_shards(tmp_path / "w").samples
    assert len(got.index["shards"]) > 1
    for a, b in zip(wide, got):
        _equal(a, b)
    assert got[1].ss8 is None and got[2].plddt is None and got[0].plddt.dtype == np.float32
    kinds = got.index["shards"][0]["fields"]
    assert kinds["ss8"]["kind"] == "chars" and kinds["plddt"]["kind"] == "array"


def test_shards_are_bounded_and_lazy_views_index_across_them(tmp_path: Path) -> None:
    samples = [_sample(40 + i, 10 + i) for i in range(12)]
    S.save_shards(tmp_path / "d", samples, {}, {}, shard_mb=0.004)   # 4 kB: a few samples per shard
    lz = S.open_shards(tmp_path / "d").samples
    ix = lz.index
    assert len(ix["shards"]) >= 3 and ix["n_samples"] == 12 and ix["n_residues"] == sum(map(len, samples))
    for entry in ix["shards"]:
        size = sum(f["bytes"] for f in entry["files"].values())
        assert entry["n_samples"] == 1 or size <= 4000 + 128 * len(entry["files"])   # + .npy headers
    js = [Sample.from_dict(s.to_dict()) for s in samples]                   # what JSON would give
    for i in (0, 5, 11, -1, -12):
        _equal(js[i], lz[i])
    view = lz[3:10:2]
    assert len(view) == 4
    _equal(view[1], js[5])
    sub = view.select([3, 0])
    _equal(sub[0], js[9])
    np.testing.assert_array_equal(sub.lengths(), [len(js[9]), len(js[3])])
    np.testing.assert_array_equal(lz.n_present(), [int(s.mask().sum()) for s in js])
    with pytest.raises(IndexError):
        lz[12]
    assert len(pickle.dumps(view)) < 20_000                                  # no arrays travel
    _equal(copy.deepcopy(view)[2], js[7])      # the same __reduce__ path, without unpickling bytes


def test_lazy_dataset_in_a_dataloader_with_two_workers(tmp_path: Path) -> None:
    samples = [_sample(20 + 3 * i, 30 + i, missing=(1,)) for i in range(8)]
    samples.append(_sample(5, 99, missing=tuple(range(5))))                 # unusable: filtered lazily
    S.save_shards(tmp_path / "d", samples, {}, {}, shard_mb=0.003)
    lazy = CropDataset(S.open_shards(tmp_path / "d").samples, 16, random_crop=False)
    eager = CropDataset(open_dataset(tmp_path / "d").samples, 16, random_crop=False)
    assert isinstance(lazy.samples, S.ShardedSamples) and len(lazy) == len(eager) == 8
    loader = torch.utils.data.DataLoader(lazy, batch_size=None, num_workers=2, collate_fn=lambda x: x)
    got = list(loader)
    assert len(got) == 8
    for a, b in zip(got, (eager[i] for i in range(8))):
        assert a["sequence"] == b["sequence"] and a["start"] == b["start"]
        np.testing.assert_array_equal(a["ca"], b["ca"])


def _dataset(tmp_path: Path) -> Path:
    S.save_shards(tmp_path / "d", _samples(), {"n_chains": 5}, {}, shard_mb=0.001)
    return tmp_path / "d"


def test_truncated_or_corrupt_shard_names_the_file(tmp_path: Path, capsys) -> None:
    d = _dataset(tmp_path)
    ca = sorted(d.glob("*.ca.npy"))[0]
    raw = ca.read_bytes()
    ca.write_bytes(raw[:-7])
    with pytest.raises(DatasetFormatError, match=rf"{ca.name}.*truncated"):
        S.open_shards(d).samples[0]
    with pytest.raises(DatasetFormatError, match=ca.name):
        open_dataset(d)
    ca.write_bytes(b"garbage!" + raw[8:])                                   # same size, header broken
    with pytest.raises(DatasetFormatError, match=rf"{ca.name}.*not a readable"):
        S.open_shards(d).samples[0]
    flipped = bytearray(raw)
    flipped[-1] ^= 0xFF                                        # same size, the last z's high byte: ~2e6 Å
    ca.write_bytes(bytes(flipped))
    with pytest.raises(DatasetFormatError, match=rf"{ca.name}: residue row \d+ .*within ±10000 Å"):
        open_dataset(d)                                                     # value ranges: at open
    flipped = bytearray(raw)
    flipped[-4] ^= 0x01                                        # the last z's low bit: 0.001 Å, a valid value
    ca.write_bytes(bytes(flipped))
    open_dataset(d).samples[0]                                 # opening reads no hashes
    with pytest.raises(DatasetFormatError, match=rf"{ca.name}.*SHA-256"):
        S.verify(d)
    assert D.main(["verify", str(d)]) == 2
    err = capsys.readouterr().err
    assert ca.name in err and "SHA-256" in err
    (d / S.INDEX_NAME).write_text((d / S.INDEX_NAME).read_text()[:50])
    with pytest.raises(DatasetFormatError, match="index.json: not valid JSON"):
        open_dataset(d)


def test_version_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    d = _dataset(tmp_path)
    ix = json.loads((d / S.INDEX_NAME).read_text())
    for fmt, msg in (("proteinmtp-shards/2", "newer than this code"), ("other/1", "unknown shards format"),
                     (None, "unknown shards format")):
        (d / S.INDEX_NAME).write_text(json.dumps({**ix, "format": fmt}))
        with pytest.raises(DatasetFormatError, match=msg):
            S.open_shards(d)
    (d / S.INDEX_NAME).write_text(json.dumps({**ix, "sample_format": "proteinmtp-dataset/9"}))
    with pytest.raises(DatasetFormatError, match="newer"):
        open_dataset(d)


def test_write_is_atomic(tmp_path: Path, monkeypatch) -> None:
    """A writer failing after its first shard leaves no dataset (or the old one, intact) and no temp dir."""
    calls = {"n": 0}
    real = S._write_shard

    def failing(tmp, number, samples):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(tmp, number, samples)

    monkeypatch.setattr(S, "_write_shard", failing)
    with pytest.raises(OSError, match="simulated"):
        S.save_shards(tmp_path / "d", _samples(), {}, {}, shard_mb=0.001)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(S, "_write_shard", real)
    S.save_shards(tmp_path / "d", _samples()[:2], {"v": 1}, {}, shard_mb=0.001)
    monkeypatch.setattr(S, "_write_shard", failing)
    calls["n"] = 0
    with pytest.raises(OSError, match="simulated"):
        S.save_shards(tmp_path / "d", _samples(), {"v": 2}, {}, shard_mb=0.001)
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    old = open_dataset(tmp_path / "d")
    assert old.global_stats == {"v": 1} and len(old) == 2
    monkeypatch.setattr(S, "_write_shard", real)
    S.save_shards(tmp_path / "d", _samples(), {"v": 3}, {})                 # a replacement that succeeds
    assert open_dataset(tmp_path / "d").global_stats == {"v": 3} and [p.name for p in tmp_path.iterdir()] == ["d"]
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a sharded dataset"):
        S.save_shards(tmp_path / "keep", _samples(), {}, {})
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"


def test_convert_cli(tmp_path: Path, capsys) -> None:
    samples = _samples()
    save_dataset(tmp_path / "a.json", samples, {}, {})
    r = subprocess.run([sys.executable, "-m", "proteinmtp.dataio", "convert", str(tmp_path / "a.json"),
                        str(tmp_path / "a.shards"), "--shard_mb", "0.001"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert len(open_dataset(tmp_path / "a.shards")) == len(samples)
    with pytest.raises(SystemExit):
        D.main(["convert", "--help"])
    assert "--shard_mb" in capsys.readouterr().out
    assert D.main(["convert", str(tmp_path / "nope.json"), str(tmp_path / "x")]) == 2
    assert "nope.json: cannot open" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_create_distmat_data_format_binary(tmp_path: Path, test_data_dir: Path) -> None:
    """--format binary writes <split>.shards/ holding what --format json writes."""
    outs = {}
    for fmt in ("json", "binary"):
        outs[fmt] = tmp_path / fmt
        r = subprocess.run([sys.executable, str(REPO / "create_distmat_data.py"), "--input",
                            str(test_data_dir / "3KPR.pdb.gz"), str(test_data_dir / "1LCD.pdb.gz"), "--output_dir",
                            str(outs[fmt]), "--val_fraction", "0", "--test_fraction", "0", "--format", fmt,
                            "--no_progress"], capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 0, r.stderr
    js, bs = open_dataset(outs["json"] / "train.json"), open_dataset(outs["binary"] / "train.shards")
    assert S.is_shards(outs["binary"] / "train.shards") and len(js) == len(bs) > 0
    assert (js.global_stats, js.config) == (bs.global_stats, bs.config)
    for a, b in zip(js.samples, bs.samples):
        _equal(a, b)


# ---- opening checks cheaply and always; verify adds hashes and every sample; one line naming the file ----
def _one_shard(tmp_path: Path, ss8: bool = True) -> Path:
    samples = _samples()
    for k, s in enumerate(samples):
        s.ss8 = "".join("HGIEBTS-?"[(i + k) % 9] for i in range(len(s))) if ss8 else None
    S.save_shards(tmp_path / "d", samples, {}, {})
    return tmp_path / "d"


def _rewrite(d: Path, name: str, change) -> None:
    """Change one array in place (same dtype and shape: same size, so only the hash differs)."""
    f = d / f"00000.{name}.npy"
    a = np.load(f).copy()
    change(a)
    np.save(f, a, allow_pickle=False)


@pytest.mark.parametrize("name,change,problem", [
    ("ca", lambda a: a.__setitem__(slice(10, 60), 10**9), r"00000.ca.npy: residue row 1[0-9] .*within ±10000 Å"),
    ("ca", lambda a: a.__setitem__((3, 1), S.COORD_MISSING), r"00000.ca.npy: residue row 3 .*missing in x, y and z"),
    ("cb", lambda a: a.__setitem__((2, 0), -2**31 + 5), r"00000.cb.npy: residue row 2 "),
    ("sequence", lambda a: a.__setitem__(7, ord("1")), r"00000.sequence.npy: residue row 7 holds byte 49"),
    ("ss8", lambda a: a.__setitem__(4, ord("Q")), r"00000.ss8.npy: residue row 4 holds byte 81"),
    ("offsets", lambda a: a.__setitem__([1, 2], a[[2, 1]]), r"00000.offsets.npy: offsets must rise strictly"),
    ("offsets", lambda a: a.__setitem__(2, a[1]), r"00000.offsets.npy: offsets must rise strictly"),   # empty sample
    ("meta", lambda a: a.__setitem__(0, ord("[")), r"00000.meta.npy: a sample's metadata is not a JSON object"),
    ("meta_offsets", lambda a: a.__setitem__(1, a[-1] + 5), r"00000.meta_offsets.npy: metadata offsets"),
])
def test_corrupt_values_fail_at_open(tmp_path: Path, capsys, name, change, problem) -> None:
    d = _one_shard(tmp_path)
    _rewrite(d, name, change)
    with pytest.raises(DatasetFormatError, match=problem):
        S.open_shards(d)                                   # at open: no sample indexed yet
    out = tmp_path / "back.json"
    assert D.main(["convert", str(d), str(out)]) == 2 and D.main(["verify", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(re.search(problem, line) for line in err) and not out.exists()


def test_truncated_shard_fails_at_open_not_in_training(tmp_path: Path) -> None:
    S.save_shards(tmp_path / "d", _samples(), {}, {}, shard_mb=0.001)
    last = sorted((tmp_path / "d").glob("*.ca.npy"))[-1]
    last.write_bytes(last.read_bytes()[:-12])
    with pytest.raises(DatasetFormatError, match=rf"{last.name}: .* bytes, the index says"):
        open_dataset(tmp_path / "d")


def _index_cases(d: Path) -> list[tuple[str, dict, str]]:
    ix = json.loads((d / S.INDEX_NAME).read_text())
    e0 = ix["shards"][0]

    def with_entry(**kw) -> dict:
        return {**ix, "shards": [{**e0, **kw}, *ix["shards"][1:]]}

    def renamed(new: str) -> dict:
        old = e0["fields"]["ca"]["file"]
        files = {(new if k == old else k): v for k, v in e0["files"].items()}
        return with_entry(files=files, fields={**e0["fields"], "ca": {**e0["fields"]["ca"], "file": new}})

    no_files = {k: v for k, v in e0.items() if k != "files"}
    return [
        ("no files", {**ix, "shards": [no_files]}, r"shards\[0\]: 'files' is missing"),
        ("shards abc", {**ix, "shards": "abc"}, r"'shards' must be a list"),
        ("entry a string", {**ix, "shards": ["x"]}, r"shards\[0\]: must be a JSON object"),
        ("n_samples", {**ix, "n_samples": "5"}, r"do not add up to n_samples"),
        ("count", with_entry(n_samples=-1), r"shards\[0\]: n_samples is -1"),
        ("no fields", with_entry(fields=None), r"'fields' is missing"),
        ("shape", with_entry(fields={**e0["fields"], "ca": {**e0["fields"]["ca"], "shape": "abc"}}),
         r"field 'ca' needs 'file'"),
        ("no ca", with_entry(fields={k: v for k, v in e0["fields"].items() if k != "ca"}), r"field 'ca' is missing"),
        ("absolute", renamed(str(d.parent / "outside.npy")), r"is not a plain name inside"),
        ("dotdot", renamed("../outside.npy"), r"is not a plain name inside"),
        ("stats", {**ix, "global_stats": {"log_dist_std": "x"}}, r"log_dist_std is 'x'"),
        ("bytes", with_entry(files={k: {"sha256": "0"} for k in e0["files"]}), r"needs 'bytes'"),
    ]


@pytest.mark.parametrize("case", range(12))
def test_index_schema_is_checked_at_open(tmp_path: Path, capsys, case: int) -> None:
    d = _one_shard(tmp_path)
    (tmp_path / "outside.npy").write_bytes((d / "00000.ca.npy").read_bytes())     # what an escape would read
    name, ix, problem = _index_cases(d)[case]
    (d / S.INDEX_NAME).write_text(json.dumps(ix))
    with pytest.raises(DatasetFormatError, match=rf"index.json: .*{problem}"):
        open_dataset(d)
    assert D.main(["verify", str(d)]) == 2 and D.main(["convert", str(d), str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2 and "index.json" in err, name


def test_a_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    d = _one_shard(tmp_path)
    f = d / "00000.ca.npy"
    (tmp_path / "elsewhere.npy").write_bytes(f.read_bytes())
    f.unlink()
    f.symlink_to(tmp_path / "elsewhere.npy")
    with pytest.raises(DatasetFormatError, match=r"00000.ca.npy' resolves to .*elsewhere.npy, outside"):
        open_dataset(d)


def _set_meta(d: Path, j: int, change) -> None:
    """Rewrite sample j's metadata and make the index agree (sizes, shapes, hashes): a consistent file set
    whose content is wrong, as a buggy writer would leave it."""
    import hashlib

    ix = json.loads((d / S.INDEX_NAME).read_text())
    e = ix["shards"][0]
    blob, off = np.load(d / "00000.meta.npy"), np.load(d / "00000.meta_offsets.npy")
    metas = [json.loads(bytes(blob[off[i]:off[i + 1]])) for i in range(len(off) - 1)]
    change(metas[j])
    parts = [json.dumps(m).encode() for m in metas]
    arrays = {"meta": np.frombuffer(b"".join(parts), np.uint8),
              "meta_offsets": np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)}
    for name, a in arrays.items():
        f = d / f"00000.{name}.npy"
        np.save(f, a, allow_pickle=False)
        raw = f.read_bytes()
        e["files"][f.name] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        e["fields"][name]["shape"] = list(a.shape)
    (d / S.INDEX_NAME).write_text(json.dumps(ix))


def test_metadata_fields_are_checked_when_built_and_by_verify(tmp_path: Path, capsys) -> None:
    d = _one_shard(tmp_path)
    _set_meta(d, 2, lambda m: m.__setitem__("breaks", ["x"]))
    ds = open_dataset(d)                                   # the arrays are fine: opening passes
    ds.samples[1]
    with pytest.raises(DatasetFormatError, match=r"/d: sample 2 \('dir/s3:A'\): breaks: entry 0 is 'x'"):
        ds.samples[2]
    assert D.main(["verify", str(d)]) == 2
    assert "sample 2 ('dir/s3:A'): breaks: entry 0 is 'x', not an integer" in capsys.readouterr().err
    d2 = _one_shard(tmp_path / "dup")
    _set_meta(d2, 3, lambda m: m.__setitem__("id", "dir/s1:A"))
    with pytest.raises(DatasetFormatError, match=r"sample 3 \('dir/s1:A'\): id: duplicates the id of sample 0"):
        S.verify(d2)


def test_json_shards_json_is_byte_identical_with_negative_zero(tmp_path: Path) -> None:
    s = _sample(6, 7)
    s.ca[0] = [-0.0, -0.0004, 0.0]            # JSON rounds -0.0004 to -0.0
    s.ca[1] = [-0.0, 1.5, -2.0]
    s.cb[2] = [-0.0, -0.0, -0.0]
    save_dataset(tmp_path / "a.json", [s, _sample(5, 8)], {}, {})
    assert "[-0.0,-0.0,0.0]" in (tmp_path / "a.json").read_text()
    D.convert(tmp_path / "a.json", tmp_path / "a.shards")
    back = open_dataset(tmp_path / "a.shards").samples[0]
    assert np.signbit(back.ca[0]).tolist() == [True, True, False] and np.signbit(back.cb[2]).all()
    D.convert(tmp_path / "a.shards", tmp_path / "b.json")
    assert (tmp_path / "b.json").read_bytes() == (tmp_path / "a.json").read_bytes()
    S.save_shards(tmp_path / "direct.shards", [s, _sample(5, 8)], {}, {})      # full precision, written directly
    D.convert(tmp_path / "direct.shards", tmp_path / "c.json")
    assert (tmp_path / "c.json").read_bytes() == (tmp_path / "a.json").read_bytes()


def test_vectorised_coordinate_check_equals_a_row_by_row_reference() -> None:
    """_coord_rows_ok (max/min passes with an int32 wrap-around) against the rule written out per value,
    on random rows of the edge codes."""
    lim = S.COORD_LIMIT_K
    edges = np.array([S.COORD_MISSING, S.COORD_NEG_ZERO, S.COORD_NEG_ZERO + 1, -lim - 1, -lim, -1, 0, lim,
                      lim + 1, 2**31 - 1], np.int32)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        a = rng.choice(edges, size=(int(rng.integers(1, 6)), 3)).astype(np.int32)
        ref = [all(x == S.COORD_MISSING for x in row)
               or all(x == S.COORD_NEG_ZERO or -lim <= x <= lim for x in row) for row in a.tolist()]
        assert _coord_rows_ok(a).tolist() == ref, a
