"""The run-directory module: torch-free, one config reader (run or checkpoint directory), checkpoint discovery."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from proteinmtp import rundir as R


def test_rundir_imports_without_torch(repo_root):
    code = "import sys, proteinmtp.rundir, proteinmtp.experiments; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_read_run_config_from_run_and_checkpoint(tmp_path):
    run = tmp_path / "run"
    ckpt = run / "checkpoint-7"
    ckpt.mkdir(parents=True)
    (run / R.CONFIG_NAME).write_text(json.dumps({"model": {"max_len": 300}}))
    assert R.read_run_config(run)["model"]["max_len"] == 300
    assert R.read_run_config(ckpt)["model"]["max_len"] == 300      # a checkpoint reads its run's config
    assert R.config_dir(ckpt) == run and R.config_dir(run) == run
    assert R.read_run_config(tmp_path / "new", missing_ok=True) is None
    with pytest.raises(R.RunLoadError, match="does not exist"):
        R.read_run_config(tmp_path / "new")
    (run / R.CONFIG_NAME).write_text("{not json")
    with pytest.raises(R.RunLoadError, match="not valid JSON"):
        R.read_run_config(run)
    (run / R.CONFIG_NAME).write_text(json.dumps({"args": {}}))
    with pytest.raises(R.RunLoadError, match="no 'model' section"):
        R.read_run_config(run)


def test_latest_complete_checkpoint_skips_and_removes_incomplete(tmp_path):
    for step, complete in ((2, True), (10, True), (12, False)):
        d = tmp_path / f"{R.CHECKPOINT_PREFIX}{step}"
        d.mkdir()
        files = (R.COMPLETE_MARKER, R.TRAINER_STATE, R.HEAD_WEIGHTS) if complete else (R.TRAINER_STATE,)
        for f in files:
            (d / f).write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert [R.checkpoint_step(p) for p in (tmp_path / "checkpoint-12", tmp_path / "checkpoint-x")] == [12, None]
    assert R.latest_complete_checkpoint(tmp_path).name == "checkpoint-10"      # 10 > 2 numerically, 12 incomplete
    assert (tmp_path / "checkpoint-12").is_dir()
    R.latest_complete_checkpoint(tmp_path, remove_incomplete=True)
    assert not (tmp_path / "checkpoint-12").exists() and (tmp_path / "checkpoint-2").is_dir()
