"""The run directory (``train_distmat.py --output_dir``) and its resume policy: every rule of it lives here.

File names, the training lock, checkpoints (found, completed, complete or not), the "finished" marker,
reading the stored ``training_config.json`` (through :func:`migrate`, the one place that holds
back-compatibility with configs written by older versions), comparing it with the config a new start
builds, deciding what a start does (:func:`resume_plan`), and finding the run's training data from
another working directory (:func:`train_data_path`). Torch-free, so status tools and input checks import
it without loading a model. Experiment records and the status CLI are ``proteinmtp.experiments``.

Layout of RUN_DIR::

    training_config.json        everything needed to rebuild the model ("model": ModelSpec, "args", ...;
                                "config_version": CONFIG_VERSION)
    prior.json                  the training split's separation prior (proteinmtp.prior.SeparationPrior)
    head.safetensors            the final save: head, special-token vectors, layer mix, normalisation buffers
    adapter/                    LoRA runs: the peft adapter (adapter_model.safetensors)
    backbone/                   full fine-tuning, a random-initialised backbone, or a self-contained run
    tokenizer/                  the tokenizer the run was trained with
    checkpoint-<step>/          Trainer checkpoints (the files above + trainer_state.json, optimizer.pt, ...)
        checkpoint_complete.json    written last: a checkpoint without it was cut short
    training_complete.json      written after the final save of a run that reached its last step
    train.lock                  held (flock) by the training process; holds its pid and host
    train.log, train_log.jsonl  human log (``tail -f``) and one JSON object per logged step / evaluation
    feature_cache/              frozen runs: cached backbone features (proteinmtp.features; safe to delete)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from proteinmtp.fileio import write_json

CONFIG_NAME = "training_config.json"
PRIOR_NAME = "prior.json"
HEAD_WEIGHTS = "head.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"   # inside ADAPTER_DIR (peft's name)
BACKBONE_DIR = "backbone"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "checkpoint_complete.json"    # inside a checkpoint, written after everything else
TRAINER_STATE = "trainer_state.json"            # inside a checkpoint (transformers.Trainer's names) ...
OPTIMIZER_STATE = "optimizer.pt"                # ... AdamW's moments
SCHEDULER_STATE = "scheduler.pt"                # ... the learning-rate schedule's position
TRAIN_FINISHED = "training_complete.json"       # written after the final save of a run that reached its last step
TRAIN_LOCK = "train.lock"                       # held (flock) by the training process; holds its pid and host
TRAIN_TEXT_LOG = "train.log"
TRAIN_JSONL = "train_log.jsonl"
FEATURE_CACHE_DIR = "feature_cache"


# The only flags that may change when resuming into an existing --output_dir: how long and how often, what is
# evaluated and where it is recorded. Every other flag, and the whole model spec built from the flags, the
# training data and the backbone (training_config.json "model", prior.json), must match the stored run.
# --train_data may be given by another path: its content is compared (global_stats, prior, chain count).
RESUME_MAY_CHANGE = ("output_dir", "max_steps", "num_epochs", "max_train_minutes", "logging_steps", "eval_steps",
                     "save_steps", "save_total_limit", "val_data", "max_eval_samples", "experiment_name", "no_tqdm",
                     "train_data", "feature_cache_dir", "dataloader_workers")


class RunLoadError(ValueError):
    """A run directory is missing, incomplete or corrupt."""


class RunChangedError(ValueError):
    """A start would change the run stored in its --output_dir (one line naming what differs)."""


# ---------------------------------------------------------------------------------------------------------
# The stored config and its back-compatibility

CONFIG_VERSION = 4      # training_config.json "config_version"; a config without the key is version 0


def migrate(config: dict) -> dict:
    """A stored training_config.json brought to CONFIG_VERSION: every back-compatibility rule is here.

    A copy is returned (the file on disk is rewritten only when the run is resumed). Each step fills what an
    older version left out with the value that reproduces what that version did, never today's default:

    0 -> 1: ``model.head.long_range_weight`` (stored among the flags only before it joined the head config;
    1.0 when neither has it); ``model.head.ss_weight`` = 0 (no secondary-structure head existed);
    ``model.residue_case`` = "upper" (residue letters were looked up as written); ``model.trust_remote_code``
    = False.

    1 -> 2: ``model.head.templates`` = 0 (no template embedding existed).

    2 -> 3: ``model.head.template_evalue`` = False (the template embedding read identity and coverage only).

    3 -> 4: ``model.head.template_copy`` = False (no template copy path).

    A config from a newer version is refused (RunLoadError) rather than guessed at.
    """
    cfg = json.loads(json.dumps(config, default=str))
    version = cfg.get("config_version", 0)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise RunLoadError(f"training_config.json has config_version {version!r}; this version of ProteinMTP "
                           f"reads up to {CONFIG_VERSION}: upgrade it")
    if version < 1:
        model = cfg.setdefault("model", {})
        if isinstance(model, dict):
            args = cfg.get("args") if isinstance(cfg.get("args"), dict) else {}
            head = model.get("head") if isinstance(model.get("head"), dict) else {}
            model["head"] = {"long_range_weight": args.get("long_range_weight", 1.0), "ss_weight": 0.0, **head}
            if not model.get("residue_case"):
                model["residue_case"] = "upper"
            model.setdefault("trust_remote_code", False)
    for since, fill in ((2, {"templates": 0}), (3, {"template_evalue": False}), (4, {"template_copy": False})):
        model = cfg.get("model")
        if version < since and isinstance(model, dict) and isinstance(model.get("head", {}), dict):
            model["head"] = {**fill, **(model.get("head") or {})}
    cfg["config_version"] = CONFIG_VERSION
    return cfg


def config_dir(run_dir: str | Path) -> Path:
    """The directory holding the run's training_config.json: ``run_dir`` itself, or its parent when
    ``run_dir`` is one of the run's checkpoint-<step>/ directories."""
    run = Path(run_dir)
    return run if (run / CONFIG_NAME).is_file() or not (run.parent / CONFIG_NAME).is_file() else run.parent


def read_run_config(run_dir: str | Path, *, missing_ok: bool = False) -> dict | None:
    """training_config.json of a run directory (or of the run a checkpoint-<step>/ belongs to).

    Returned through :func:`migrate` (what an older version stored reads as what it meant). RunLoadError
    (one line) when the directory does not exist, has no config (``missing_ok``: None instead), the config
    is not valid JSON, has no "model" section, or comes from a newer version.
    """
    run = Path(run_dir)
    if not run.is_dir():
        if missing_ok:
            return None
        raise RunLoadError(f"run directory {run} does not exist; pass the --output_dir of train_distmat.py")
    path = config_dir(run) / CONFIG_NAME
    if not path.is_file():
        if missing_ok:
            return None
        raise RunLoadError(f"{run} has no {CONFIG_NAME}; is it a train_distmat.py output directory?")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise RunLoadError(f"{path} is not valid JSON ({e}); the run is corrupt") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise RunLoadError(f"{path} has no 'model' section; not a ProteinMTP run")
    try:
        return migrate(cfg)
    except RunLoadError as e:
        raise RunLoadError(f"{path}: {e}") from None


def read_json_or_none(path: str | Path) -> dict | None:
    """A JSON object from ``path``, or None when it is missing or unreadable."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a checkpoint-<step> directory name, or None for any other name."""
    name = Path(path).name
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    try:
        return int(name[len(CHECKPOINT_PREFIX):])
    except ValueError:
        return None


def is_complete_checkpoint(path: str | Path) -> bool:
    """A checkpoint whose save finished: completion marker, trainer state and head weights present."""
    path = Path(path)
    return (path / COMPLETE_MARKER).is_file() and (path / TRAINER_STATE).is_file() \
        and (path / HEAD_WEIGHTS).is_file()


def latest_complete_checkpoint(run_dir: str | Path, remove_incomplete: bool = False) -> Path | None:
    """The complete checkpoint-<step>/ with the highest step, or None.

    With ``remove_incomplete``, checkpoint directories without the completion marker (a save cut short)
    are deleted so the Trainer can write that step again.
    """
    run = Path(run_dir)
    if not run.is_dir():
        return None
    best, best_step = None, -1
    for p in run.iterdir():
        step = checkpoint_step(p)
        if step is None or not p.is_dir():
            continue
        if is_complete_checkpoint(p):
            if step > best_step:
                best, best_step = p, step
        elif remove_incomplete:
            shutil.rmtree(p, ignore_errors=True)
    return best


def has_final_weights(run_dir: str | Path) -> bool:
    """RUN_DIR holds the final save of a run (head.safetensors next to training_config.json)."""
    return (Path(run_dir) / HEAD_WEIGHTS).is_file()


def mark_checkpoint_complete(checkpoint: str | Path, step: int) -> None:
    """Write the completion marker into a checkpoint the Trainer has finished writing (last file)."""
    write_json(Path(checkpoint) / COMPLETE_MARKER, {"step": int(step), "time": time.time()}, indent=None)


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """RUN_DIR/checkpoint-<step> (the Hugging Face name)."""
    return Path(run_dir) / f"{CHECKPOINT_PREFIX}{int(step)}"


# ---------------------------------------------------------------------------------------------------------
# The "finished" marker

def finished_run(run_dir: str | Path, max_steps: int, num_epochs: float) -> dict | None:
    """``{"step", "marker"}`` when the run in ``run_dir`` already trained to this target, else None.

    Finished means RUN_DIR/training_complete.json (written after the final save of a run that reached its
    last step) for the same --max_steps (and --num_epochs when max_steps is 0), or, with max_steps > 0,
    a complete checkpoint at max_steps or beyond. ``marker`` is False when the final save after that
    checkpoint is missing (the process ended between the two). A run stopped early (--max_train_minutes,
    a signal) is not finished.
    """
    run = Path(run_dir)
    done = read_json_or_none(run / TRAIN_FINISHED)
    ckpt = latest_complete_checkpoint(run)
    state = read_json_or_none(ckpt / TRAINER_STATE) if ckpt is not None else None
    step = int(state.get("global_step", 0)) if state else None
    if done is not None and done.get("max_steps") == max_steps and (max_steps > 0 or done.get("num_epochs") == num_epochs):
        return {"step": int(done.get("step", step or 0)), "marker": True}
    if max_steps > 0 and step is not None and step >= max_steps:
        return {"step": step, "marker": done is not None and done.get("step") == step}
    return None


def mark_finished(run_dir: str | Path, step: int, max_steps: int, num_epochs: float) -> None:
    """Write RUN_DIR/training_complete.json (after the final save): a re-run of the command is a no-op."""
    write_json(Path(run_dir) / TRAIN_FINISHED, {"step": int(step), "max_steps": int(max_steps),
                                                "num_epochs": float(num_epochs), "time": time.time()})


def clear_finished(run_dir: str | Path) -> None:
    """Training continues (e.g. --max_steps raised): the run is no longer complete."""
    (Path(run_dir) / TRAIN_FINISHED).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------
# The lock: one training process per run directory

class RunDirLocked(RuntimeError):
    """Another live process holds the run directory's lock."""


def lock_run_dir(run_dir: str | Path) -> int:
    """Take RUN_DIR/train.lock (an exclusive ``flock``) and write this process's pid and host into it.

    Returns the file descriptor; the lock lasts until it is closed (:func:`unlock_run_dir`) or the process
    ends in any way (kill -9 included: the OS releases it, so a dead process never blocks the directory).
    Raises RunDirLocked, naming the holder, when another process holds it.
    """
    import fcntl

    path = Path(run_dir) / TRAIN_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        h = lock_holder(run_dir) or {}
        who = f"pid {h['pid']} on {h.get('host') or '?'}" if h.get("pid") else "pid unknown"
        raise RunDirLocked(f"{run_dir} is in use by another training process ({who}); wait for it to end or stop "
                           "it, or use another --output_dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}).encode())
    return fd


def unlock_run_dir(fd: int) -> None:
    """Release a lock from :func:`lock_run_dir` (the file stays; it is free to lock again)."""
    os.close(fd)


def _started_after(pid: int, t: float) -> bool:
    """Linux: the process ``pid`` started more than 1 s after time ``t`` (False where that cannot be read)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])   # field 22: starttime
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK") > t + 1.0
    except (OSError, ValueError, IndexError, StopIteration):
        return False


def lock_holder(run_dir: str | Path) -> dict | None:
    """Who last held RUN_DIR/train.lock: {"pid", "host", "time", "alive"}, or None without a lock file.

    ``alive``: True while that process exists, False once it has ended, None when it ran on another host
    (cannot tell). Read only: never takes the lock, so a monitor cannot get in a starting run's way.
    """
    if not (Path(run_dir) / TRAIN_LOCK).is_file():
        return None
    info = read_json_or_none(Path(run_dir) / TRAIN_LOCK) or {}
    pid = info.get("pid")
    alive = None
    if isinstance(pid, int) and info.get("host") == socket.gethostname():
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:     # exists, another user's
            alive = True
        if alive and isinstance(info.get("time"), (int, float)) and _started_after(pid, info["time"]):
            alive = False           # the pid was reused by a process started after the lock was written
    return {**info, "alive": alive}


# ---------------------------------------------------------------------------------------------------------
# Comparing a stored config with a new one; what a start does

def config_differences(old: dict, new: dict, ignore: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """``"key: old → new"`` for every (dotted, nested) key whose JSON value differs. Skipped: top-level keys
    in ``ignore`` and top-level keys the old config lacks (flags added after that run was written)."""
    out = []
    for k in old:
        if k in ignore and not prefix:
            continue
        if k not in new:
            if prefix:
                out.append(f"{prefix}{k}: {old[k]!r} → (none)")
            continue
        a, b = json.loads(json.dumps(old[k], default=str)), json.loads(json.dumps(new[k], default=str))
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, prefix=f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} → {b!r}")
    out += [f"{prefix}{k}: (none) → {new[k]!r}" for k in new if k not in old and prefix and k not in ignore]
    return out


def refuse_changes(run_dir: str | Path, diff: list[str], flags: bool = False) -> None:
    """RunChangedError (one line) when resuming would change the stored run; nothing when ``diff`` is empty."""
    if not diff:
        return
    shown = [f"--{d}" for d in diff] if flags else diff
    may = ", ".join(f"--{k}" for k in RESUME_MAY_CHANGE if k != "output_dir")
    raise RunChangedError(f"{run_dir} holds a run with different settings ({'; '.join(shown)}); resume with the "
                          f"stored values or use a new --output_dir to start over (only {may} may change on resume)")


def refuse_model_changes(run_dir: str | Path, old: dict, new: dict, normalise, prior: dict) -> None:
    """Resume: the stored model spec (both sides through ``normalise``, which fills the defaults of keys a
    version did not store), the training chain count and prior.json must equal what the flags build.
    RunChangedError naming every difference otherwise."""
    diff = config_differences({"model": normalise(old.get("model", {})),
                               **{k: old[k] for k in ("n_train_chains",) if k in old}},
                              {"model": normalise(new["model"]), "n_train_chains": new["n_train_chains"]})
    old_prior = read_json_or_none(Path(run_dir) / PRIOR_NAME)
    if old_prior is not None and old_prior != prior:
        diff.append("prior.json: the training split's separation prior differs")
    refuse_changes(run_dir, diff)


class ResumePlan:
    """What a start in ``run_dir`` does (:func:`resume_plan`).

    ``old``: the stored config (migrated) or None for a fresh start; ``checkpoint``: the latest complete
    checkpoint to resume from, or None; ``done``: :func:`finished_run` (the run trained to this target);
    ``complete``: nothing to do (trained and finally saved); ``note``: a line to print, or None.
    """

    def __init__(self, old, checkpoint, done, complete, note=None):
        self.old, self.checkpoint, self.done, self.complete, self.note = old, checkpoint, done, complete, note


def resume_plan(run_dir: str | Path, args: dict, max_steps: int, num_epochs: float) -> ResumePlan:
    """Read ``run_dir`` and decide what a start with the flags ``args`` does, before anything is written.

    A config without any checkpoint or final weights (a start that failed before its first save) does not
    bind. A stored run refuses changed flags (RESUME_MAY_CHANGE aside): RunChangedError. A stored run
    with final weights but no checkpoint cannot be resumed: RunChangedError. RunLoadError for a corrupt
    config.
    """
    run = Path(run_dir)
    old = read_run_config(run, missing_ok=True)
    ckpt = latest_complete_checkpoint(run)
    note = None
    if old is not None and ckpt is None and not has_final_weights(run):
        note = f"{run} holds no checkpoint (a start that failed before its first save); starting over"
        old = None
    if old is None:
        return ResumePlan(None, None, None, False, note)
    refuse_changes(run, config_differences(old.get("args", {}), args, ignore=RESUME_MAY_CHANGE), flags=True)
    done = finished_run(run, max_steps, num_epochs)
    if done is not None and done["marker"]:
        note = (f"{run} is complete: trained to step {done['step']} (--max_steps {max_steps}); nothing to do. "
                "Raise --max_steps to train further, or use a new --output_dir.")
        return ResumePlan(old, ckpt, done, True, note)
    if ckpt is None:
        raise RunChangedError(f"{run} holds a trained run's final weights but no checkpoint to resume from; use "
                              "a new --output_dir")
    return ResumePlan(old, ckpt, done, False, note)


# ---------------------------------------------------------------------------------------------------------
# Data paths stored in a run

def data_paths(path: str | Path, run_dir: str | Path) -> dict[str, str]:
    """What a run stores for a data file: its absolute path and its path relative to the run directory (so a
    tree moved or copied as a whole still finds it)."""
    p = Path(path).resolve()
    return {"absolute": str(p), "from_run": os.path.relpath(p, Path(run_dir).resolve())}


def train_data_path(run_dir: str | Path, config: dict | None = None, key: str = "train_data") -> Path:
    """The run's training split (``key``: "train_data" or "val_data") as a path that exists, from any working
    directory; RunLoadError naming every place looked at when none does.

    Looked at, in order: the absolute path stored (``<key>``); the path relative to the run directory
    (``<key>_from_run``); for a run stored before paths were absolute, the relative path taken against the
    directory that run was started from (the run directory minus its stored relative --output_dir), then
    against the current directory.
    """
    run = config_dir(run_dir)
    cfg = read_run_config(run) if config is None else config
    stored = cfg.get(key)
    if not isinstance(stored, str) or not stored:
        raise RunLoadError(f"{run}/{CONFIG_NAME} names no {key}")
    tried: list[Path] = []
    cands = [Path(stored)] if Path(stored).is_absolute() else []
    if isinstance(cfg.get(f"{key}_from_run"), str):
        cands.append(run / cfg[f"{key}_from_run"])
    if not Path(stored).is_absolute():
        out = (cfg.get("args") or {}).get("output_dir")
        if isinstance(out, str) and out and not Path(out).is_absolute():
            parts = Path(os.path.normpath(out)).parts
            here = run.resolve()
            if ".." not in parts and here.parts[-len(parts):] == parts:
                cands.append(Path(*here.parts[:-len(parts)]) / stored)
        cands.append(Path(stored))
    for c in cands:
        if c.exists():
            return c
        tried.append(c)
    raise RunLoadError(f"the training data of {run} ({key} {stored!r}) is not found (looked at "
                       + ", ".join(str(t) for t in tried) + ")")


__all__ = ["CONFIG_NAME", "PRIOR_NAME", "HEAD_WEIGHTS", "ADAPTER_DIR", "ADAPTER_WEIGHTS", "BACKBONE_DIR",
           "TOKENIZER_DIR", "CHECKPOINT_PREFIX", "COMPLETE_MARKER", "TRAINER_STATE",
           "OPTIMIZER_STATE", "SCHEDULER_STATE", "TRAIN_FINISHED",
           "TRAIN_LOCK", "TRAIN_TEXT_LOG", "TRAIN_JSONL", "FEATURE_CACHE_DIR", "RESUME_MAY_CHANGE",
           "CONFIG_VERSION", "RunLoadError", "RunChangedError", "RunDirLocked", "migrate", "config_dir",
           "read_run_config", "read_json_or_none", "checkpoint_step", "checkpoint_dir", "is_complete_checkpoint",
           "latest_complete_checkpoint", "mark_checkpoint_complete", "has_final_weights", "finished_run",
           "mark_finished", "clear_finished", "lock_run_dir", "unlock_run_dir", "lock_holder",
           "config_differences", "refuse_changes", "refuse_model_changes", "ResumePlan", "resume_plan",
           "data_paths", "train_data_path"]
