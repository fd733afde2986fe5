"""Trainer callbacks: the run's logs, the checkpoint completion marker, and stopping early.

* ``LogCallback``: RUN_DIR/train.log (for ``tail -f``: loss and each loss term, LR, speed, ETA) and
  RUN_DIR/train_log.jsonl (one JSON object per log or evaluation, and an event when training starts,
  resumes, ends, stops or is interrupted).
* ``CheckpointCallback``: marks a checkpoint complete after the Trainer wrote all of it
  (``rundir.mark_checkpoint_complete``) and refreshes the experiment record.
* ``StopCallback``: ``--max_train_minutes`` and SIGINT/SIGTERM (``SignalStop``) both end training at the end of
  the current optimizer step with a checkpoint (``control.should_save`` / ``should_training_stop``, as the
  Hugging Face Trainer's own callbacks stop). Under torchrun the flags are all-reduced every step, so every
  rank stops at the same step.

Signals, as SLURM-aware trainers handle them: the handler is installed with ``signal.signal`` whatever the
shell did (a background job starts with SIGINT ignored, and Python then never raises KeyboardInterrupt).
The first SIGINT/SIGTERM asks for the stop; a second one, ``REPEAT_WINDOW_S`` or more later, exits at once
(exit 128 + signal, no checkpoint: the last complete one stays). A repeat inside the window is taken as
the same request, forwarded by a launcher (torchrun and srun pass on to the workers what the terminal
already sent them). Before training starts a signal exits at once: there is nothing to save yet.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from proteinmtp.rundir import (
    CHECKPOINT_PREFIX,
    TRAIN_JSONL,
    TRAIN_TEXT_LOG,
    checkpoint_dir,
    mark_checkpoint_complete,
)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_SIGNAL_NAMES = tuple(s.name for s in STOP_SIGNALS)
REPEAT_WINDOW_S = 2.0       # a second signal sooner than this after the first is the same request


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class LogCallback(TrainerCallback):
    """Appends to RUN_DIR/train.log (human) and RUN_DIR/train_log.jsonl (one JSON object per log/eval)."""

    def __init__(self, run_dir: str | Path, samples_per_step: int, stop: StopCallback | None = None):
        self.run_dir = Path(run_dir)
        self.samples_per_step = samples_per_step
        self.stop = stop            # why training ended early, for the last line
        self._t = None
        self._step = None
        self._t0 = None
        self._step0 = None

    def _write(self, row: dict, line: str) -> None:
        with open(self.run_dir / TRAIN_JSONL, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        with open(self.run_dir / TRAIN_TEXT_LOG, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def on_train_begin(self, args, state, control, **kwargs):
        self._t = self._t0 = time.time()
        self._step = self._step0 = state.global_step
        if state.is_world_process_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            msg = "resumed" if state.global_step else "started"
            self._write({"event": msg, "step": state.global_step, "max_steps": state.max_steps,
                         "time": time.time()},
                        f"{time.strftime('%Y-%m-%d %H:%M:%S')} training {msg} at step {state.global_step}"
                        f"/{state.max_steps}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        step = state.global_step
        row = {"step": step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
               "time": round(now, 3)}
        stamp = time.strftime("%H:%M:%S")
        if any(k.startswith("eval_") for k in logs):
            parts = [f"{k[5:]} {logs[k]:.3f}" for k in ("eval_mae", "eval_mae_local", "eval_mae_short",
                     "eval_mae_medium", "eval_mae_long", "eval_precision_L5_long") if k in logs]
            self._write(row, f"{stamp} eval step {step}: " + " | ".join(parts) + " (MAE in Å)")
            return
        if "loss" not in logs:
            self._write(row, f"{stamp} step {step}: {json.dumps(logs)}")
            return
        dt, ds = now - self._t, step - self._step
        rate = ds * self.samples_per_step / dt if dt > 0 and ds > 0 else float("nan")
        spent = now - self._t0
        done = step - self._step0
        eta = spent / done * (state.max_steps - step) if done > 0 else float("nan")
        row.update({"samples_per_second": round(rate, 3), "max_steps": state.max_steps})
        mem = ""
        if torch.cuda.is_available():     # peak since the last log line, this process's device
            row["gpu_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
            torch.cuda.reset_peak_memory_stats()
            mem = f" | GPU peak {row['gpu_peak_gb']:.2f} GB"
        self._t, self._step = now, step
        gn = logs.get("grad_norm", float("nan"))
        terms = ", ".join(f"{k[5:]} {v:.4f}" for k, v in logs.items() if k.startswith("loss_"))
        self._write(row, f"{stamp} step {step}/{state.max_steps} | loss {logs['loss']:.4f}"
                         + (f" ({terms})" if terms else "") + " | "
                         f"lr {logs.get('learning_rate', float('nan')):.2e} | grad {gn:.3f} | "
                         f"{rate:.2f} samples/s{mem} | ETA {_fmt_time(eta) if math.isfinite(eta) else '?'}")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            row = {"event": "stopped", "step": state.global_step, "time": time.time()}
            why = self.stop.reason if self.stop is not None else None
            if why in STOP_SIGNAL_NAMES:
                row.update(event="interrupted", signal=why)
                text = (f"training stopped by {why} at step {state.global_step}/{state.max_steps} with "
                        f"{CHECKPOINT_PREFIX}{state.global_step}; re-run the same command to resume from it")
            elif state.global_step >= state.max_steps:
                row["event"], text = "done", f"training ended at step {state.global_step}"
            else:   # --max_train_minutes
                text = (f"training stopped at step {state.global_step}/{state.max_steps}; "
                        "re-run the command to continue")
            self._write(row, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}")


class CheckpointCallback(TrainerCallback):
    """After the Trainer has written checkpoint-<step>/ completely, drop a marker file into it
    (resume ignores checkpoints without one, e.g. cut short by kill -9) and refresh the experiment record."""

    def __init__(self, run_dir: str | Path, on_saved=None):
        self.run_dir = Path(run_dir)
        self.on_saved = on_saved

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = checkpoint_dir(self.run_dir, state.global_step)
        if ckpt.is_dir():
            mark_checkpoint_complete(ckpt, state.global_step)
        if self.on_saved is not None:
            self.on_saved()



class SignalStop:
    """SIGINT / SIGTERM handler of one training process (module doc): ``install()`` at start-up, ``phase``
    "setup" (a signal exits at once: nothing to save), "training" (a signal asks for a stop after this
    step), "finishing" (the final save runs to its end). ``signum`` is the first signal received."""

    def __init__(self, stream=None):
        self.signum: int | None = None
        self.phase = "setup"
        self._t = 0.0
        self._pid = os.getpid()
        self._stream = stream
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int | None:
        """128 + the signal (130 for SIGINT, 143 for SIGTERM), None without one."""
        return None if self.signum is None else 128 + int(self.signum)

    def install(self) -> SignalStop:
        """Handle SIGINT and SIGTERM from now on (only the main thread may set handlers: elsewhere, no-op)."""
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self.handle)
        return self

    def uninstall(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def _say(self, text: str) -> None:
        print(text, file=self._stream or sys.stderr, flush=True)

    def handle(self, signum, frame=None) -> None:
        if os.getpid() != self._pid:        # a forked DataLoader worker: the training process decides
            return
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._t = signum, now
            if self.phase == "setup":
                self._say(f"{name} received before training started: exiting (nothing to save yet)")
                raise SystemExit(128 + signum)
            if self.phase == "training":
                self._say(f"{name} received: stopping at the end of this step with a checkpoint (send it "
                          "again to exit at once)")
            else:
                self._say(f"{name} received: finishing the final save first")
            return
        if now - self._t < REPEAT_WINDOW_S:
            return
        self._say(f"{name} received again: exiting at once without a checkpoint; re-run the same command to "
                  "resume from the last complete one")
        os._exit(128 + signum)


def agree(values: list[float], device) -> list[float]:
    """The element-wise maximum of ``values`` over all ranks (as is without torch.distributed): every rank
    must take the same decision to stop, or DDP hangs. The tensor lives on ``device`` (the Trainer's
    ``args.device``: NCCL refuses CPU tensors; gloo takes them)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.cpu().tolist()


class StopCallback(TrainerCallback):
    """Stop with a checkpoint at the end of a step once ``minutes`` of training passed in this process
    (0 = no limit) or a stop signal came (``signals``). ``reason``: None, "time", or the signal's name."""

    def __init__(self, minutes: float = 0.0, signals: SignalStop | None = None):
        self.limit = minutes * 60.0
        self.signals = signals
        self.t0 = time.time()
        self.reason: str | None = None

    @property
    def triggered(self) -> bool:
        return self.reason is not None

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.time()
        if self.signals is not None:
            self.signals.phase = "training"

    def on_step_end(self, args, state, control, **kwargs):
        over = self.limit > 0 and time.time() - self.t0 > self.limit
        sig = self.signals.signum if self.signals is not None and self.signals.signum else 0
        sig, over = agree([float(sig), float(over)], args.device)
        if sig or over:
            if sig:
                if self.signals is not None and self.signals.signum is None:
                    self.signals.signum = int(sig)          # another rank received it: exit alike
                self.reason = signal.Signals(int(sig)).name
            else:
                self.reason = "time"
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.signals is not None:
            self.signals.phase = "finishing"


__all__ = ["LogCallback", "CheckpointCallback", "StopCallback", "SignalStop", "agree", "STOP_SIGNALS",
           "REPEAT_WINDOW_S"]
