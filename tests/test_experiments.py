"""Experiment records and the training status summary."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest

from proteinmtp import experiments


def _fake_run(path, n_steps=50, total=100, t0=1_000_000.0, dt_s=2.0, with_time=True):
    path.mkdir(parents=True, exist_ok=True)
    (path / "training_config.json").write_text(json.dumps({"args": {"max_steps": total}, "model": {}}))
    (path / "train.log").write_text("step 1 loss 1.0\nstep 2 loss 0.9\n")
    rows = []
    for s in range(1, n_steps + 1):
        r = {"step": s, "loss": 1.0 / s, "learning_rate": 1e-3}
        if with_time:
            r["time"] = t0 + dt_s * s
        rows.append(r)
        if s % 20 == 0:
            rows.append({"step": s, "eval_mae": 10.0 - s / 10})
    (path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_experiment_dir(tmp_path):
    d = experiments.experiment_dir("my run/v2", root=tmp_path, date=dt.date(2026, 1, 2))
    assert d == tmp_path / "2026-01-02_my_run_v2"
    assert (d / "visualizations").is_dir()
    assert experiments.experiment_dir("my run/v2", root=tmp_path, date="2026-01-02") == d  # idempotent


def test_experiment_dir_never_reuses_another_runs_record(tmp_path):
    """The same name twice on one day: the second run gets <date>_<name>_2; the same run keeps its record."""
    a, b, c = (_fake_run(tmp_path / "runs" / n, n_steps=3) for n in "abc")
    (b / "train.log").write_text("run b\n")
    exp = tmp_path / "exp"
    da = experiments.experiment_dir("x", root=exp, date="2026-01-02", run_dir=a)
    experiments.record_training(a, da)
    db = experiments.experiment_dir("x", root=exp, date="2026-01-02", run_dir=b)
    experiments.record_training(b, db)
    assert (da.name, db.name) == ("2026-01-02_x", "2026-01-02_x_2")
    assert (da / "training_log.txt").read_text() == (a / "train.log").read_text() != "run b\n"
    assert (db / "training_log.txt").read_text() == "run b\n"
    assert experiments.experiment_dir("x", root=exp, date="2026-01-02", run_dir=a) == da      # resumed / re-evaluated
    assert experiments.experiment_dir("x", root=exp, date="2026-01-02", run_dir=b) == db
    assert experiments.experiment_dir("x", root=exp, date="2026-01-02", run_dir=c).name == "2026-01-02_x_3"
    assert experiments.recorded_run(db) == b.resolve()
    # a directory that records no run yet (the demo's own folder with its dataset) is taken as it is
    (exp / "2026-01-02_demo" / "dataset").mkdir(parents=True)
    assert experiments.experiment_dir("demo", root=exp, date="2026-01-02", run_dir=a).name == "2026-01-02_demo"
    # a record written before record.json: its config.json names the run
    old = exp / "2026-01-02_old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"args": {"output_dir": str(a)}}))
    assert experiments.experiment_dir("old", root=exp, date="2026-01-02", run_dir=a) == old
    assert experiments.experiment_dir("old", root=exp, date="2026-01-02", run_dir=b).name == "2026-01-02_old_2"


def test_reevaluation_leaves_no_stale_figures(tmp_path):
    """Figures and viewer pages of an earlier evaluation go when a new one does not write them again, in the
    output directory and in the record; files the tool did not write stay."""
    from proteinmtp.eval_report import write_figures
    from proteinmtp.evaluation import Evaluation

    out, exp = tmp_path / "out", tmp_path / "exp"
    vis = out / "visualizations"
    vis.mkdir(parents=True)
    (vis / "notes.txt").write_text("mine")

    def evaluate(names):
        for n in names:
            (vis / n).write_text(n)
        experiments.replace_written(vis, names)
        experiments.record_evaluation(exp, out)

    evaluate(["view_A.html", "view_B.html", "error_histogram.png"])
    evaluate(["view_C.html", "error_histogram.png"])
    listing = ["error_histogram.png", "notes.txt", "view_C.html"]
    assert sorted(p.name for p in vis.iterdir() if p.name != experiments.WRITTEN_FILE) == listing
    assert sorted(p.name for p in (exp / "visualizations").iterdir() if p.name != experiments.WRITTEN_FILE) == listing
    # evaluation.write_figures keeps the same list: an evaluation with no scored protein leaves no old figure
    write_figures(Evaluation(), vis)
    assert sorted(p.name for p in vis.iterdir() if p.name != experiments.WRITTEN_FILE) == ["notes.txt"]


def test_record_training_copies_and_is_idempotent(tmp_path):
    run = _fake_run(tmp_path / "run")
    exp = experiments.experiment_dir("x", root=tmp_path / "exp", date="2026-01-01")
    for _ in range(2):
        experiments.record_training(run, exp)
        assert (exp / "config.json").read_bytes() == (run / "training_config.json").read_bytes()
        assert (exp / "training_log.txt").read_bytes() == (run / "train.log").read_bytes()
        assert (exp / "visualizations" / "training_curves.png").stat().st_size > 1000
    assert not [p for p in exp.rglob("*.tmp")]


def test_record_training_partial_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "training_config.json").write_text("{}")
    exp = experiments.record_training(run, tmp_path / "exp")
    assert (exp / "config.json").is_file() and not (exp / "training_log.txt").exists()


def test_record_evaluation(tmp_path):
    out = tmp_path / "out"
    (out / "visualizations").mkdir(parents=True)
    (out / "eval_results.json").write_text("{}")
    (out / "visualizations" / "a.png").write_bytes(b"png")
    exp = experiments.record_evaluation(tmp_path / "exp", out)
    assert (exp / "eval_results.json").read_text() == "{}"
    assert (exp / "visualizations" / "a.png").read_bytes() == b"png"


def test_status_from_timestamps(tmp_path):
    run = _fake_run(tmp_path / "run", n_steps=50, total=100, dt_s=2.0)
    st = experiments.training_status(run)
    assert st["step"] == 50 and st["total"] == 100
    assert st["loss"] == pytest.approx(1.0 / 50)
    assert st["eta_s"] == pytest.approx(50 * 2.0)  # 2 s per step, 50 steps left
    assert st["last_eval"]["step"] == 40 and st["last_eval"]["eval_mae"] == pytest.approx(6.0)
    assert not st["finished"]
    text = experiments.format_status(run, st)
    assert "50/100 (50.0%)" in text and "1m40s" in text and "eval_mae=6.000" in text


def test_status_from_file_times(tmp_path):
    run = _fake_run(tmp_path / "run", n_steps=25, total=100, with_time=False)
    os.utime(run / "training_config.json", (1000.0, 1000.0))
    os.utime(run / "train_log.jsonl", (1100.0, 1100.0))  # 25 steps in 100 s
    st = experiments.training_status(run, now=1200.0)
    assert st["eta_s"] == pytest.approx(75 * 4.0)
    assert st["log_age_s"] == pytest.approx(100.0)


def test_status_finished_and_empty(tmp_path):
    run = _fake_run(tmp_path / "run", n_steps=100, total=100)
    assert experiments.training_status(run)["finished"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no train_log.jsonl rows yet" in experiments.format_status(empty)


def test_status_resumed_run(tmp_path):
    """A resumed run appends to the log: the old "done" no longer counts, and the ETA uses this session only."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "training_config.json").write_text(json.dumps({"max_steps": 100}))
    rows = [{"event": "started", "step": 0, "max_steps": 100, "time": 0.0}]
    rows += [{"step": s, "loss": 1.0, "learning_rate": 1e-3, "time": 10.0 * s} for s in (10, 20)]
    rows += [{"event": "done", "step": 20, "time": 200.0}]
    # stopped at 20/100 (--max_train_minutes; older versions logged "done" then too): not finished
    assert not experiments.training_status(_write_rows(run, rows))["finished"]
    rows += [{"event": "resumed", "step": 20, "max_steps": 100, "time": 5000.0}]
    rows += [{"step": s, "loss": 0.5, "learning_rate": 1e-3, "time": 5000.0 + 3.0 * (s - 20)} for s in (30, 40)]
    st = experiments.training_status(_write_rows(run, rows))
    assert not st["finished"] and st["step"] == 40
    assert st["eta_s"] == pytest.approx(60 * 3.0)  # 3 s/step in this session, 60 steps left


def test_status_finished_marker_and_process(tmp_path):
    """Finished = training_complete.json (or the last step reached); running = the lock holder is alive."""
    import socket
    import subprocess
    import sys

    run = _fake_run(tmp_path / "run", n_steps=10, total=100)
    st = experiments.training_status(run)
    assert not st["finished"] and st["running"] is None                 # no lock file: cannot tell
    (run / "train.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    st = experiments.training_status(run)
    assert st["running"] is True and st["pid"] == os.getpid()
    # the same pid in a lock written before this process started: a reused pid, the writer is gone
    (run / "train.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": 1000.0}))
    assert experiments.training_status(run)["running"] is False
    (run / "train.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                "time": time.time()}))
    st = experiments.training_status(run)
    assert st["running"] is True
    assert f"running (pid {os.getpid()})" in experiments.format_status(run, st)
    assert experiments.main(["status", "--exit_code", str(run)]) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / "train.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert experiments.training_status(run)["running"] is False
    assert experiments.main(["status", "--exit_code", str(run)]) == 4
    (run / "train.lock").write_text(json.dumps({"pid": dead.pid, "host": "another-host"}))
    assert experiments.training_status(run)["running"] is None
    (run / "training_complete.json").write_text("{}")
    assert experiments.training_status(run)["finished"] and experiments.main(["status", "--exit_code", str(run)]) == 3


def test_status_counts_only_the_current_session(tmp_path):
    """A start that failed at step 30 and was started over: the status shows the new session's step."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "training_config.json").write_text(json.dumps({"max_steps": 100}))
    rows = [{"event": "started", "step": 0, "max_steps": 100, "time": 0.0}]
    rows += [{"step": s, "loss": 9.0, "learning_rate": 1e-3, "time": float(s)} for s in (10, 20, 30)]
    rows += [{"event": "started", "step": 0, "max_steps": 100, "time": 100.0}]
    rows += [{"step": 5, "loss": 2.0, "learning_rate": 1e-3, "time": 105.0}]
    st = experiments.training_status(_write_rows(run, rows))
    assert st["step"] == 5 and st["loss"] == 2.0


def _write_rows(run, rows):
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run
