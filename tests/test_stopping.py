"""Training that stops cleanly: SIGINT / SIGTERM (also in a background job, which starts with SIGINT
ignored), a checkpoint save that fails (file size limit), a resume without optimizer state."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proteinmtp import callbacks as C
from proteinmtp.rundir import COMPLETE_MARKER, latest_complete_checkpoint
from tests.test_training import cli_args, read_jsonl, run_cli

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def ignore_sigint() -> None:
    """What the shell does to a background job (`cmd &`): SIGINT ignored from the start."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(args: list[str], preexec=ignore_sigint) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "train_distmat.py"), *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def wait_for(run: Path, proc: subprocess.Popen, pred, timeout: float = 240.0) -> list[dict]:
    """Poll RUN/train_log.jsonl until ``pred(rows)``; fail if the process ends first or time runs out."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        log = run / "train_log.jsonl"
        rows = read_jsonl(log) if log.is_file() else []
        if rows and pred(rows):
            return rows
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (exit {proc.returncode}) before the awaited step:\n{err[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for training steps")


def steps(rows: list[dict]) -> list[int]:
    return [r["step"] for r in rows if "loss" in r]


def finish(proc: subprocess.Popen, timeout: float = 120.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"training did not stop on the signal within {timeout} s:\n{err[-3000:]}")
    return proc.returncode, err


def test_sigint_in_a_background_job_stops_with_a_checkpoint_and_the_rerun_resumes(tiny, data, tmp_path):
    """SIGINT to a job started with SIGINT ignored (it used to train on to the end): checkpoint at the end of
    the current step, a log line, exit 130; the rerun resumes from that step."""
    run = tmp_path / "run"
    args = cli_args(tiny, data, run, "--max_steps", "100000", "--save_steps", "100000", "--eval_steps", "100000")
    proc = start(args)
    wait_for(run, proc, lambda rows: any(s >= 2 for s in steps(rows)))
    proc.send_signal(signal.SIGINT)
    rc, err = finish(proc)
    assert rc == 130, err[-3000:]
    ckpt = latest_complete_checkpoint(run)
    assert ckpt is not None and (ckpt / COMPLETE_MARKER).is_file()
    n = int(ckpt.name.split("-")[1])
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == n >= 2
    assert "SIGINT received: stopping at the end of this step" in err
    assert f"stopped by SIGINT at step {n}: {ckpt} written" in err
    rows = read_jsonl(run / "train_log.jsonl")
    assert rows[-1]["event"] == "interrupted" and rows[-1]["signal"] == "SIGINT" and rows[-1]["step"] == n
    assert max(steps(rows)) == n                                   # nothing trained after the saved step
    assert f"training stopped by SIGINT at step {n}/100000 with checkpoint-{n}" in \
        (run / "train.log").read_text().splitlines()[-1]
    # the rerun resumes from that step (here told to end one step later)
    more = cli_args(tiny, data, run, "--max_steps", str(n + 1), "--save_steps", "100000", "--eval_steps", "100000")
    assert run_cli(more) == 0
    rows = read_jsonl(run / "train_log.jsonl")
    assert [r["step"] for r in rows if r.get("event") == "resumed"] == [n] and max(steps(rows)) == n + 1


@pytest.mark.slow
def test_sigterm_stops_and_the_same_command_resumes_from_that_step(tiny, data, tmp_path):
    run = tmp_path / "run"
    args = cli_args(tiny, data, run, "--max_steps", "100000", "--save_steps", "100000", "--eval_steps", "100000")
    proc = start(args)
    wait_for(run, proc, lambda rows: any(s >= 2 for s in steps(rows)))
    proc.send_signal(signal.SIGTERM)
    rc, err = finish(proc)
    assert rc == 143 and "stopped by SIGTERM at step" in err, err[-3000:]
    n = int(latest_complete_checkpoint(run).name.split("-")[1])
    proc = start(args)                                              # the same command
    rows = wait_for(run, proc, lambda rows: any(s > n for s in steps(rows)))
    assert [r["step"] for r in rows if r.get("event") == "resumed"] == [n]
    proc.send_signal(signal.SIGTERM)
    rc, err = finish(proc)
    assert rc == 143 and f"resuming from {run / f'checkpoint-{n}'}" in err
    assert int(latest_complete_checkpoint(run).name.split("-")[1]) > n


def test_signal_handler_phases_and_a_second_signal(monkeypatch):
    """Before training a signal exits at once (nothing to save); during training the first asks for a stop,
    a repeat inside REPEAT_WINDOW_S (a launcher forwarding it) is the same request, a later one exits at
    once with 128 + signal; a forked DataLoader worker ignores them."""
    exits = []
    monkeypatch.setattr(C.os, "_exit", lambda code: exits.append(code))
    said = []
    s = C.SignalStop()
    s._say = said.append
    with pytest.raises(SystemExit) as e:
        s.handle(signal.SIGINT)
    assert e.value.code == 130 and "before training started" in said[-1]
    s = C.SignalStop()
    s._say = said.append
    s.phase = "training"
    s.handle(signal.SIGTERM)
    assert s.exit_code == 143 and exits == [] and "stopping at the end of this step" in said[-1]
    s.handle(signal.SIGTERM)                                      # forwarded at once by torchrun / srun
    assert exits == []
    monkeypatch.setattr(C, "REPEAT_WINDOW_S", 0.0)
    s.handle(signal.SIGINT)
    assert exits == [130] and "exiting at once" in said[-1]
    worker = C.SignalStop()
    worker._pid = -1                                                # as seen from a forked worker
    worker.phase = "training"
    worker.handle(signal.SIGTERM)
    assert worker.signum is None
    # installed with signal.signal whatever the disposition was (SIG_IGN here), and restored afterwards
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        h = C.SignalStop().install()
        assert signal.getsignal(signal.SIGINT) == h.handle and signal.getsignal(signal.SIGTERM) == h.handle
        h.uninstall()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def limit_file_size(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))     # as `ulimit -f`; Python ignores SIGXFSZ
    return preexec


@pytest.mark.parametrize("failing", [
    pytest.param("head.safetensors", id="python-write"),
    pytest.param("backbone/", id="safetensors", marks=pytest.mark.slow),
    pytest.param("optimizer.pt", id="torch.save", marks=pytest.mark.slow),
])
def test_failed_checkpoint_save_is_one_line_and_the_rerun_resumes(tiny, data, tmp_path, capsys, failing):
    """A write that fails (here: the file size limit, as `ulimit -f` or a full disk) used to end in a
    safetensors traceback. Now: one line naming the file and the cause, exit 1, the cut-short checkpoint
    removed; the rerun resumes from the last complete checkpoint. The limit sits between the sizes of the
    files a checkpoint writes (read off checkpoint-2), so exactly the named writer is the first to fail."""
    run = tmp_path / "run"
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "2", "--eval_steps", "100")) == 0
    ck = run / "checkpoint-2"
    head = (ck / "head.safetensors").stat().st_size
    backbone = max(f.stat().st_size for f in (ck / "backbone").iterdir())
    optim = (ck / "optimizer.pt").stat().st_size
    assert head < backbone < optim, (head, backbone, optim)
    limit = {"head.safetensors": head // 2, "backbone/": (head + backbone) // 2,
             "optimizer.pt": (backbone + optim) // 2}[failing]
    failing = f"checkpoint-4/{failing}"
    proc = start(cli_args(tiny, data, run, "--max_steps", "4", "--eval_steps", "100"), preexec=limit_file_size(limit))
    rc, err = finish(proc, timeout=240)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1 and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {run}/{failing}: ")
    assert "File too large" in lines[0] or f"the file size limit (ulimit -f) is {limit} bytes" in lines[0]
    assert "re-run the same command to resume from checkpoint-2" in lines[0]
    assert latest_complete_checkpoint(run).name == "checkpoint-2" and not (run / "checkpoint-4").exists()
    capsys.readouterr()
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "4", "--eval_steps", "100")) == 0
    assert f"resuming from {run / 'checkpoint-2'}" in capsys.readouterr().err
    assert latest_complete_checkpoint(run).name == "checkpoint-4"


def test_resume_without_optimizer_state_says_adamw_restarts(tiny, data, tmp_path, capsys):
    """A checkpoint without optimizer.pt used to resume with fresh AdamW moments in silence."""
    run = tmp_path / "run"
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "2", "--eval_steps", "100")) == 0
    (run / "checkpoint-2" / "optimizer.pt").unlink()
    capsys.readouterr()
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "3", "--eval_steps", "100")) == 0
    warn = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warn == [f"warning: {run / 'checkpoint-2'} has no optimizer.pt: AdamW restarts with empty moment "
                    "estimates and the learning-rate schedule from step 0 (warmup included)"]
    # and it does restart the schedule: step 3 gets the first warmup step's learning rate (0 with warmup 1)
    rows = read_jsonl(run / "train_log.jsonl")
    first = next(r for r in rows if r.get("step") == 1 and "learning_rate" in r)
    assert [r["learning_rate"] for r in rows if r.get("step") == 3 and "loss" in r] == [first["learning_rate"]]
    # with both files there is no warning
    capsys.readouterr()
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "4", "--eval_steps", "100")) == 0
    assert "warning:" not in capsys.readouterr().err


def child_pids(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    kids = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def worker_pid(agent: int, rank: int) -> int:
    for pid in child_pids(agent):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"train_distmat.py" in cmd and f"RANK={rank}".encode() in env:
            return pid
    pytest.fail(f"no rank-{rank} worker under torchrun pid {agent}")


@pytest.mark.slow
def test_ddp_ranks_stop_at_the_same_step_when_one_gets_the_signal(tiny, data, tmp_path):
    """torchrun, 2 gloo ranks: SIGTERM to rank 1 alone; the stop flag is all-reduced each step, so rank 0
    (which writes the checkpoint) stops at the same step and both say so."""
    run = tmp_path / "ddp"
    args = cli_args(tiny, data, run, "--max_steps", "100000", "--save_steps", "100000", "--eval_steps", "100000")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29533", str(REPO / "train_distmat.py"), *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)
    wait_for(run, proc, lambda rows: any(s >= 2 for s in steps(rows)), timeout=400)
    os.kill(worker_pid(proc.pid, 1), signal.SIGTERM)
    rc, err = finish(proc, timeout=240)
    n = int(latest_complete_checkpoint(run).name.split("-")[1])
    assert rc != 0 and f"rank 0: stopped by SIGTERM at step {n}" in err and \
        f"rank 1: stopped by SIGTERM at step {n}" in err, err[-4000:]
    assert read_jsonl(run / "train_log.jsonl")[-1]["event"] == "interrupted"
