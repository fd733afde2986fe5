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


def test_runs_directory_is_ignored_by_git(repo_root):
    """The README's weight directory (runs/) never shows up as untracked files."""
    import shutil

    if shutil.which("git") is None or not (repo_root / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("runs/tiny/head.safetensors", "runs/tiny_backbone/config.json"):
        r = subprocess.run(["git", "check-ignore", "-q", path], cwd=repo_root)
        assert r.returncode == 0, f"{path} is not ignored"
    assert subprocess.run(["git", "check-ignore", "-q", "proteinmtp/rundir.py"], cwd=repo_root).returncode == 1


def test_migrate_fills_what_older_versions_meant():
    v0 = {"args": {"long_range_weight": 3.0}, "model": {"base_model": "x", "head": {"pair_dim": 8}}}
    m = R.migrate(v0)
    assert m["config_version"] == R.CONFIG_VERSION and "config_version" not in v0       # a copy
    assert m["model"]["head"] == {"long_range_weight": 3.0, "ss_weight": 0.0, "templates": 0,
                                  "template_evalue": False, "template_copy": False, "pair_dim": 8}   # 2, 3, 4
    v2 = {"config_version": 2, "model": {"head": {"templates": 4}}}      # trained with identity and coverage
    assert R.migrate(v2)["model"]["head"] == {"template_evalue": False, "template_copy": False, "templates": 4}
    v3 = {"config_version": 3, "model": {"head": {"templates": 4, "template_evalue": True}}}   # no copy path
    assert R.migrate(v3)["model"]["head"] == {"template_copy": False, "templates": 4, "template_evalue": True}
    assert m["model"]["residue_case"] == "upper" and m["model"]["trust_remote_code"] is False
    assert R.migrate(m) == m                                                            # idempotent
    # a current config is left as it is (its stored values win over any fill)
    now = {"config_version": R.CONFIG_VERSION, "model": {"residue_case": "lower", "head": {}}}
    assert R.migrate(now) == now
    with pytest.raises(R.RunLoadError, match="config_version 99"):
        R.migrate({"config_version": 99, "model": {}})


def test_train_data_path_from_another_directory(tmp_path, monkeypatch):
    """A run stores absolute data paths and paths relative to itself; one stored by an older version (a path
    relative to where it was started) is found through its stored relative --output_dir."""
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.json").write_text("{}")
    run = root / "runs" / "a"
    run.mkdir(parents=True)
    new = {"model": {}, "config_version": R.CONFIG_VERSION,
           **{f"train_data{k}": v for k, v in
              (("", str(root / "data" / "train.json")), ("_from_run", "../../data/train.json"))}}
    assert R.data_paths(root / "data" / "train.json", run) == {"absolute": new["train_data"],
                                                                "from_run": new["train_data_from_run"]}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert R.train_data_path(run, new) == root / "data" / "train.json"
    # the whole tree moved: the absolute path is gone, the one relative to the run still holds
    moved = tmp_path / "moved"
    root.rename(moved)
    assert R.train_data_path(moved / "runs" / "a", new).resolve() == (moved / "data" / "train.json").resolve()
    # an old run: relative train_data and output_dir, as given from the project directory
    old = {"model": {}, "train_data": "data/train.json", "args": {"output_dir": "runs/a"}}
    assert R.train_data_path(moved / "runs" / "a", old) == moved / "data" / "train.json"
    (moved / "data" / "train.json").unlink()
    with pytest.raises(R.RunLoadError, match=r"training data of .* \(train_data 'data/train.json'\) is not found "
                                             r"\(looked at .*moved/data/train.json, data/train.json\)"):
        R.train_data_path(moved / "runs" / "a", old)
