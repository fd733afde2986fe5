"""monitor_training.sh: one-shot status of a run (values checked against the log written here)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from tests.test_experiments import _fake_run


def _monitor(repo_root, *args, timeout=60):
    return subprocess.run(["bash", str(repo_root / "monitor_training.sh"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin",
                                                                               "PYTHON": sys.executable})


def test_monitor_once(repo_root, tmp_path):
    run = _fake_run(tmp_path / "run", n_steps=30, total=120, dt_s=3.0)
    r = _monitor(repo_root, "--once", run)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "30/120 (25.0%)" in out
    assert f"{1.0 / 30:.4f}" in out            # last loss
    assert "0.001" in out                       # learning rate
    assert "4m30s" in out                       # ETA: 90 steps left x 3 s
    assert "step 20: eval_mae=8.000" in out     # last evaluation
    assert "GPU" in out


def test_monitor_finished_run_stops(repo_root, tmp_path):
    run = _fake_run(tmp_path / "run", n_steps=10, total=10)
    r = _monitor(repo_root, "-n", "1", run)      # refresh mode returns once training is finished
    assert r.returncode == 0 and "training finished" in r.stdout


def test_monitor_stops_on_a_dead_run(repo_root, tmp_path):
    """Refresh mode used to loop forever on a run whose process had died: it now ends with exit 1."""
    run = _fake_run(tmp_path / "run", n_steps=10, total=100)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                               # its pid belongs to no process now
    (run / "train.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    r = _monitor(repo_root, "-n", "1", run, timeout=30)
    assert r.returncode == 1 and "training is not running" in r.stderr
    assert "10/100" in r.stdout and f"not running (pid {dead.pid} ended)" in r.stdout
    r = _monitor(repo_root, "--once", run)                   # a one-off report is not an error
    assert r.returncode == 0 and "not running" in r.stdout


def test_monitor_bad_input(repo_root, tmp_path):
    r = _monitor(repo_root, "--once", tmp_path / "nope")
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    (tmp_path / "x").mkdir()
    r = _monitor(repo_root, "-n", "abc", tmp_path / "x")
    assert r.returncode != 0 and "whole number" in r.stderr
