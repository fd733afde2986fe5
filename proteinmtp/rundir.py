"""The run directory (``train_distmat.py --output_dir``): every file name in it, reading its config and
finding its checkpoints. Torch-free, so status tools and input checks import it without loading a model.

Layout of RUN_DIR::

    training_config.json        everything needed to rebuild the model ("model": ModelSpec, "args", ...)
    prior.json                  the training split's separation prior (proteinmtp.prior.SeparationPrior)
    head.safetensors            the final save: head, special-token vectors, layer mix, normalisation buffers
    adapter/                    LoRA runs: the peft adapter (adapter_model.safetensors)
    backbone/                   full fine-tuning, a random-initialised backbone, or a self-contained run
    tokenizer/                  the tokenizer the run was trained with
    checkpoint-<step>/          Trainer checkpoints (the files above + trainer_state.json, optimizer, ...)
        checkpoint_complete.json    written last: a checkpoint without it was cut short
    training_complete.json      written after the final save of a run that reached its last step
    train.lock                  held (flock) by the training process; holds its pid and host
    train.log, train_log.jsonl  human log (``tail -f``) and one JSON object per logged step / evaluation
    feature_cache/              frozen runs: cached backbone features (proteinmtp.features; safe to delete)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CONFIG_NAME = "training_config.json"
PRIOR_NAME = "prior.json"
HEAD_WEIGHTS = "head.safetensors"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"   # inside ADAPTER_DIR (peft's name)
BACKBONE_DIR = "backbone"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "checkpoint_complete.json"    # inside a checkpoint, written after everything else
TRAINER_STATE = "trainer_state.json"            # inside a checkpoint (transformers.Trainer's name)
TRAIN_FINISHED = "training_complete.json"       # written after the final save of a run that reached its last step
TRAIN_LOCK = "train.lock"                       # held (flock) by the training process; holds its pid and host
TRAIN_TEXT_LOG = "train.log"
TRAIN_JSONL = "train_log.jsonl"
FEATURE_CACHE_DIR = "feature_cache"


class RunLoadError(ValueError):
    """A run directory is missing, incomplete or corrupt."""


def config_dir(run_dir: str | Path) -> Path:
    """The directory holding the run's training_config.json: ``run_dir`` itself, or its parent when
    ``run_dir`` is one of the run's checkpoint-<step>/ directories."""
    run = Path(run_dir)
    return run if (run / CONFIG_NAME).is_file() or not (run.parent / CONFIG_NAME).is_file() else run.parent


def read_run_config(run_dir: str | Path, *, missing_ok: bool = False) -> dict | None:
    """training_config.json of a run directory (or of the run a checkpoint-<step>/ belongs to).

    RunLoadError (one line) when the directory does not exist, has no config (``missing_ok``: None
    instead), the config is not valid JSON, or it has no "model" section.
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
    return cfg


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


__all__ = ["CONFIG_NAME", "PRIOR_NAME", "HEAD_WEIGHTS", "ADAPTER_DIR", "ADAPTER_WEIGHTS", "BACKBONE_DIR",
           "TOKENIZER_DIR", "CHECKPOINT_PREFIX", "COMPLETE_MARKER", "TRAINER_STATE", "TRAIN_FINISHED",
           "TRAIN_LOCK", "TRAIN_TEXT_LOG", "TRAIN_JSONL", "FEATURE_CACHE_DIR", "RunLoadError", "config_dir",
           "read_run_config", "read_json_or_none", "checkpoint_step", "is_complete_checkpoint",
           "latest_complete_checkpoint", "has_final_weights"]
