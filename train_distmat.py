"""Train a ProteinMTP distance model: an LLM backbone + pairwise head on a dataset JSON.

One CPU/GPU:
    python -m proteinmtp.tiny runs/tiny_backbone
    python train_distmat.py --train_data data/demo/dataset/train.json.gz --val_data data/demo/dataset/val.json.gz \
        --model_name runs/tiny_backbone --finetune full --output_dir runs/demo --max_steps 2000
Real backbone (LoRA):
    python train_distmat.py --train_data ... --val_data ... --model_name Qwen/Qwen2.5-0.5B --output_dir runs/qwen
Several processes (DDP through the Trainer; gloo on CPU):
    torchrun --nproc_per_node 2 train_distmat.py ... (same arguments)

Re-running the same command on the same --output_dir resumes from the latest complete checkpoint; once the
run is complete (RUN_DIR/training_complete.json) it does nothing. Resuming refuses any changed flag except
RESUME_MAY_CHANGE, and any change of the model spec, before writing anything. One process trains in a run
directory at a time (RUN_DIR/train.lock; a killed process leaves no lock behind).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

# The only flags that may change when resuming into an existing --output_dir: how long and how often, what is
# evaluated and where it is recorded. Every other flag, and the whole model spec built from the flags, the
# training data and the backbone (training_config.json "model", prior.json), must match the stored run.
# --train_data may be given by another path: its content is compared (global_stats, prior, chain count).
RESUME_MAY_CHANGE = ("output_dir", "max_steps", "num_epochs", "max_train_minutes", "logging_steps", "eval_steps",
                     "save_steps", "save_total_limit", "val_data", "max_eval_samples", "experiment_name", "no_tqdm",
                     "train_data", "feature_cache_dir", "dataloader_workers")


def parse_args(argv=None) -> argparse.Namespace:
    from proteinmtp.config import HelpFormatter, add_flags
    from proteinmtp.heads import HeadConfig
    from proteinmtp.model import ModelSpec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--train_data", required=True,
                   help="training split: dataset .json / .json.gz, or a sharded binary directory "
                        "(create_distmat_data.py --format binary; memory-mapped, pages shared by all ranks)")
    d.add_argument("--val_data", default=None,
                   help="validation split (either format) evaluated every --eval_steps, each rank scoring its "
                        "share of the chains (optional)")
    d.add_argument("--dataloader_workers", type=int, default=0,
                   help="DataLoader worker processes per rank that crop training chains (0 = in the training "
                        "process); workers draw crops from their own torch seeds, so the crop stream differs "
                        "from 0 workers")
    d.add_argument("--max_seq_len", type=int, default=256,
                   help="training crop length in residues (longer chains train on random contiguous crops)")
    d.add_argument("--long_crop_len", type=int, default=0,
                   help="residues of the occasional longer training crop (0 = off, else longer than --max_seq_len); "
                        "separations up to it get trained")
    d.add_argument("--long_crop_fraction", type=float, default=0.25,
                   help="fraction (0 to 1) of training items cropped at --long_crop_len instead of --max_seq_len")
    d.add_argument("--max_eval_len", type=int, default=1024,
                   help="longest chain in residues the trained run accepts (capped at what the backbone's positions "
                        "fit): infer_distmat.py refuses longer sequences and evaluate_distmat_model.py skips them, "
                        "listed in its report; during training, longer validation chains are scored on their "
                        "central crop of this length")
    d.add_argument("--max_eval_samples", type=int, default=0,
                   help="evaluate on at most this many validation chains (0 = all)")
    m = p.add_argument_group("model")
    m.add_argument("--trust_remote_code", action="store_true", help="allow the backbone's own Python code")
    add_flags(m, HeadConfig)                         # the head's flags: one source, proteinmtp.heads.HeadConfig
    f = p.add_argument_group("backbone and fine-tuning")
    add_flags(f, ModelSpec)                          # the backbone's flags: one source, proteinmtp.model.ModelSpec
    f.add_argument("--use_4bit", action="store_true", help="QLoRA: NF4 4-bit backbone (CUDA + bitsandbytes only)")
    f.add_argument("--gradient_checkpointing", action="store_true", help="recompute backbone activations")
    f.add_argument("--feature_cache", action=argparse.BooleanOptionalAction, default=True,
                   help="with --finetune frozen: run the backbone once per WHOLE chain (as inference reads it), "
                        "cache the features on disk (float16) and train on crops of them, so a step costs "
                        "what the head costs; --no-feature_cache runs the backbone on every crop instead")
    f.add_argument("--feature_cache_dir", default=None,
                   help="directory of the frozen feature cache (default: OUTPUT_DIR/feature_cache); entries are "
                        "keyed by the backbone's weights, init, layout and layers, so runs may share one; safe "
                        "to delete")
    t = p.add_argument_group("training")
    t.add_argument("--output_dir", required=True,
                   help="run directory (checkpoints, logs, final weights); the same command again resumes from its "
                        "latest complete checkpoint, or does nothing once the run is complete; one training "
                        "process at a time (RUN_DIR/train.lock)")
    t.add_argument("--max_steps", type=int, default=0,
                   help="optimizer steps in total (0 = use --num_epochs); raise it to train a complete run further")
    t.add_argument("--num_epochs", type=float, default=1.0, help="epochs when --max_steps is 0")
    t.add_argument("--per_device_train_batch_size", type=int, default=1, help="chains per batch per process")
    t.add_argument("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    t.add_argument("--learning_rate", type=float, default=2e-4, help="peak LR of the backbone (LoRA/full)")
    t.add_argument("--head_learning_rate", type=float, default=1e-3, help="peak LR of the head")
    t.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay (not on norms/biases)")
    t.add_argument("--warmup_steps", type=int, default=100, help="linear warmup steps before the cosine decay")
    t.add_argument("--max_grad_norm", type=float, default=1.0,
                   help="clip the gradients' global L2 norm to this (0 = no clipping)")
    t.add_argument("--seed", type=int, default=0, help="random seed (init, crops, order)")
    t.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto",
                   help="bf16 mixed precision; auto = on where the GPU supports it")
    t.add_argument("--logging_steps", type=int, default=10, help="log every N steps")
    t.add_argument("--eval_steps", type=int, default=200, help="evaluate on --val_data every N steps")
    t.add_argument("--save_steps", type=int, default=200, help="write checkpoint-<step>/ every N steps")
    t.add_argument("--save_total_limit", type=int, default=3, help="keep at most N checkpoints (older ones are deleted)")
    t.add_argument("--max_train_minutes", type=float, default=0.0,
                   help="stop gracefully with a checkpoint after this many minutes in this process (0 = no limit); "
                        "the run is then not complete: the same command continues it")
    t.add_argument("--experiment_name", default=None,
                   help="also record the run (config, text log, training curves) under experiments/<UTC date>_<NAME>/"
                        "; a record of another run is never reused: the first free <NAME>_2, _3, ... is taken, "
                        "while this run, resumed, keeps its record (default: no record)")
    t.add_argument("--no_tqdm", action="store_true", help="no progress bar on the console")
    return p.parse_args(argv)


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def library_versions() -> dict:
    import numpy
    import peft
    import torch
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "numpy": numpy.__version__}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    """Train (see the module docstring); the run-directory lock is released on return."""
    locks: list[int] = []
    try:
        return _main(argv, locks)
    finally:
        from proteinmtp.runs import unlock_run_dir

        for fd in locks:
            unlock_run_dir(fd)


def take_lock(run_dir: Path, locks: list[int]) -> None:
    """One training process per run directory (rank 0 holds it for all ranks); a second one is refused."""
    from proteinmtp.runs import RunDirLocked, lock_run_dir

    if locks:
        return
    try:
        locks.append(lock_run_dir(run_dir))
    except RunDirLocked as e:
        fail(str(e))


def refuse_changes(run_dir: Path, diff: list[str], flags: bool = False) -> None:
    """Stop (nothing written) when resuming would change the stored run."""
    if not diff:
        return
    shown = [f"--{d}" for d in diff] if flags else diff
    may = ", ".join(f"--{k}" for k in RESUME_MAY_CHANGE if k != "output_dir")
    fail(f"{run_dir} holds a run with different settings ({'; '.join(shown)}); resume with the stored values or "
         f"use a new --output_dir to start over (only {may} may change on resume)")


def check_args(args: argparse.Namespace) -> tuple[int, ...]:
    """Refuse nonsensical values before anything is loaded or written; returns the parsed --dilations."""
    def finite(x: float) -> bool:
        return math.isfinite(x)

    rules = [
        (args.max_seq_len >= 2, f"--max_seq_len must be at least 2, got {args.max_seq_len}"),
        (args.long_crop_len == 0 or args.long_crop_len > args.max_seq_len,
         f"--long_crop_len must be 0 (off) or longer than --max_seq_len {args.max_seq_len}, got {args.long_crop_len}"),
        (0.0 <= args.long_crop_fraction <= 1.0, f"--long_crop_fraction must be in [0, 1], got {args.long_crop_fraction}"),
        (args.max_eval_len >= 2, f"--max_eval_len must be at least 2, got {args.max_eval_len}"),
        (args.max_eval_samples >= 0, f"--max_eval_samples must be 0 (all) or more, got {args.max_eval_samples}"),
        (args.dataloader_workers >= 0, f"--dataloader_workers must be 0 or more, got {args.dataloader_workers}"),
        (args.lora_r >= 1, f"--lora_r must be at least 1, got {args.lora_r}"),
        (finite(args.lora_alpha) and args.lora_alpha > 0, f"--lora_alpha must be > 0, got {args.lora_alpha}"),
        (0.0 <= args.lora_dropout < 1.0, f"--lora_dropout must be in [0, 1), got {args.lora_dropout}"),
        (args.max_steps >= 0, f"--max_steps must be 0 (use --num_epochs) or more, got {args.max_steps}"),
        (args.max_steps > 0 or (finite(args.num_epochs) and args.num_epochs > 0),
         f"--num_epochs must be > 0 when --max_steps is 0, got {args.num_epochs}"),
        (args.per_device_train_batch_size >= 1,
         f"--per_device_train_batch_size must be at least 1, got {args.per_device_train_batch_size}"),
        (args.gradient_accumulation_steps >= 1,
         f"--gradient_accumulation_steps must be at least 1, got {args.gradient_accumulation_steps}"),
        (finite(args.learning_rate) and args.learning_rate > 0,
         f"--learning_rate must be a finite number > 0, got {args.learning_rate}"),
        (finite(args.head_learning_rate) and args.head_learning_rate > 0,
         f"--head_learning_rate must be a finite number > 0, got {args.head_learning_rate}"),
        (finite(args.weight_decay) and args.weight_decay >= 0, f"--weight_decay must be >= 0, got {args.weight_decay}"),
        (args.warmup_steps >= 0, f"--warmup_steps must be 0 or more, got {args.warmup_steps}"),
        (finite(args.max_grad_norm) and args.max_grad_norm >= 0,
         f"--max_grad_norm must be >= 0 (0 = no clipping), got {args.max_grad_norm}"),
        (args.logging_steps >= 1, f"--logging_steps must be at least 1, got {args.logging_steps}"),
        (args.eval_steps >= 1, f"--eval_steps must be at least 1, got {args.eval_steps}"),
        (args.save_steps >= 1, f"--save_steps must be at least 1, got {args.save_steps}"),
        (args.save_total_limit >= 1, f"--save_total_limit must be at least 1, got {args.save_total_limit}"),
        (finite(args.max_train_minutes) and args.max_train_minutes >= 0,
         f"--max_train_minutes must be 0 (no limit) or more, got {args.max_train_minutes}"),
        (not Path(args.output_dir).exists() or Path(args.output_dir).is_dir(),
         f"--output_dir {args.output_dir} exists and is not a directory"),
    ]
    for ok, msg in rules:
        if not ok:
            fail(msg)
    if args.feature_layers != "last" and not re.fullmatch(r"\s*-?\d+(\s*,\s*-?\d+)*\s*", args.feature_layers):
        fail(f"--feature_layers must be 'last' or comma-separated layer indices, got {args.feature_layers!r}")
    try:
        dilations = tuple(int(x) for x in args.dilations.split(","))
    except ValueError:
        fail(f"--dilations must be comma-separated integers, got {args.dilations!r}")
    if min(dilations) < 1:
        fail(f"--dilations must all be at least 1, got {args.dilations!r}")
    try:
        head_config(args, dilations).validate()
    except ValueError as e:
        fail(str(e))
    return dilations


def head_config(args: argparse.Namespace, dilations: tuple[int, ...]):
    """The HeadConfig the flags describe: every HeadConfig flag as given, --dilations parsed, relative
    positions clamped to the longest trained separation."""
    from proteinmtp.config import from_args
    from proteinmtp.heads import HeadConfig

    values = from_args(args, HeadConfig)
    values.update(dilations=dilations, max_rel_sep=max(args.max_seq_len, args.long_crop_len) - 1)
    return HeadConfig(**values)


def check_environment(args: argparse.Namespace) -> None:
    """What --use_4bit needs (CUDA, bitsandbytes, LoRA), checked before anything is loaded."""
    import torch

    if args.use_4bit:
        if not torch.cuda.is_available():
            fail("--use_4bit needs a CUDA GPU (bitsandbytes NF4); on CPU drop the flag")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            fail("--use_4bit needs the bitsandbytes package (pip install bitsandbytes)")
        if args.finetune != "lora":
            fail("--use_4bit trains LoRA adapters only; use --finetune lora")


def load_data(args: argparse.Namespace):
    """(train DistMatDataset, its global_stats, the training CropDataset, the validation samples)."""
    from proteinmtp import training as T
    from proteinmtp.shards import open_dataset

    try:   # a sharded binary directory stays on its memory map (lazy samples); JSON is read whole
        train = open_dataset(args.train_data)
        val = open_dataset(args.val_data) if args.val_data else None
    except (OSError, ValueError) as e:
        fail(str(e))
    gs = train.global_stats or {}
    if "log_dist_mean" not in gs or "log_dist_std" not in gs:
        fail(f"{args.train_data} has no global_stats log_dist_mean/log_dist_std; rebuild it with create_distmat_data.py")
    train_ds = T.CropDataset(train.samples, args.max_seq_len, random_crop=True, long_len=args.long_crop_len,
                             long_fraction=args.long_crop_fraction)
    if len(train_ds) == 0:
        fail(f"{args.train_data} has no chain with two or more residues with a Cα")
    val_samples = T.usable_samples(val.samples) if val else []
    if args.max_eval_samples:
        val_samples = val_samples[: args.max_eval_samples]
    return train, gs, train_ds, val_samples


def resume_state(args: argparse.Namespace, run_dir: Path, is_main: bool):
    """(stored config or None, latest complete checkpoint or None, finished_run() or None, complete).

    Refuses changed flags (RESUME_MAY_CHANGE aside); ``complete`` is True when the run already trained to
    this target and wrote its final save (nothing to do)."""
    from proteinmtp import rundir as R
    from proteinmtp import training as T

    try:
        old = R.read_run_config(run_dir, missing_ok=True)
    except R.RunLoadError as e:
        fail(str(e))
    resume = R.latest_complete_checkpoint(run_dir)
    if old is not None and resume is None and not R.has_final_weights(run_dir):
        # a start that failed before its first checkpoint (nothing trained was saved): not binding
        if is_main:
            print(f"{run_dir} holds no checkpoint (a start that failed before its first save); starting over",
                  file=sys.stderr)
        old = None
    if old is not None:
        refuse_changes(run_dir, T.config_differences(old.get("args", {}), vars(args), ignore=RESUME_MAY_CHANGE),
                       flags=True)
    done = T.finished_run(run_dir, args.max_steps, args.num_epochs) if old is not None else None
    if done is not None and done["marker"]:
        if is_main:
            print(f"{run_dir} is complete: trained to step {done['step']} (--max_steps {args.max_steps}); nothing "
                  "to do. Raise --max_steps to train further, or use a new --output_dir.", file=sys.stderr)
        return old, resume, done, True
    if old is not None and resume is None:
        fail(f"{run_dir} holds a trained run's final weights but no checkpoint to resume from; use a new "
             "--output_dir")
    return old, resume, done, False


def model_spec(args: argparse.Namespace, dilations: tuple[int, ...], gs: dict):
    """The ModelSpec (with its head config dict) the flags describe."""
    from proteinmtp.config import from_args
    from proteinmtp.model import ModelSpec

    return ModelSpec(**from_args(args, ModelSpec), global_stats=dict(gs), head=asdict(head_config(args, dilations)),
                     max_len=args.max_eval_len, init_seed=args.seed)


def build_training_model(args: argparse.Namespace, spec):
    """(model, tokenizer, fit): the backbone (4-bit, checkpointing as asked) with the head; ``fit`` is the
    longest chain the backbone's positions take in this layout (None = no limit); spec.max_len is capped."""
    import torch

    from proteinmtp.model import build_model, load_tokenizer

    quant = None
    if args.use_4bit:
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
    try:
        tokenizer = load_tokenizer(args.model_name, gguf_file=args.gguf_file, trust_remote_code=args.trust_remote_code)
        model = build_model(spec, tokenizer=tokenizer, trust_remote_code=args.trust_remote_code,
                            quantization_config=quant)
    except (OSError, ValueError) as e:
        fail(str(e).splitlines()[0])
    if args.gradient_checkpointing:
        bb = model.backbone.get_base_model() if hasattr(model.backbone, "get_base_model") else model.backbone
        if hasattr(bb, "activation_checkpointing_enable"):        # transformers >= 5 name
            bb.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            bb.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    fit = model.encoder.max_len
    if fit is not None:
        for flag, n in (("--max_seq_len", args.max_seq_len), ("--long_crop_len", args.long_crop_len)):
            if n > fit:
                fail(f"{flag} {n} needs {model.encoder.n_tokens(n)} tokens in the {args.residue_layout} layout, "
                     f"more than the backbone's {model.encoder.max_tokens} positions (max_position_embeddings); "
                     f"use at most {fit}")
        spec.max_len = min(spec.max_len, fit)
    return model, tokenizer, fit


def run_config(args: argparse.Namespace, spec, train, train_ds, val_samples, n_train: int, n_total: int) -> dict:
    """training_config.json: the flags, the whole model spec, data provenance, sizes and library versions."""
    gs = dict(train.global_stats)
    return {
        "args": vars(args), "base_model": args.model_name, "layout": args.residue_layout,
        "model": {**asdict(spec), "trust_remote_code": args.trust_remote_code},
        "global_stats": gs, "dataset_config": train.config, "train_data": args.train_data,
        "val_data": args.val_data, "n_train_chains": len(train_ds), "n_val_chains": len(val_samples),
        "parameters": {"trainable": n_train, "total": n_total},
        "libraries": library_versions(), "git_commit": git_commit(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")), "max_steps": args.max_steps or None,
    }


def refuse_model_changes(run_dir: Path, old: dict, config: dict, n_train_chains: int, prior_text: str) -> None:
    """Resume: the whole stored model spec, the chain count and prior.json must match what the flags build."""
    from proteinmtp import rundir as R
    from proteinmtp import training as T

    old_model = dict(old.get("model", {}))
    # runs written before long_range_weight joined HeadConfig stored it among the flags only
    old_model["head"] = {"long_range_weight": (old.get("args") or {}).get("long_range_weight", 1.0),
                         **(old_model.get("head") or {})}
    diff = T.config_differences({"model": T.comparable_model(old_model),
                                 **{k: old[k] for k in ("n_train_chains",) if k in old}},
                                {"model": T.comparable_model(config["model"]), "n_train_chains": n_train_chains})
    old_prior = R.read_json_or_none(run_dir / R.PRIOR_NAME)
    if old_prior is not None and old_prior != json.loads(prior_text):
        diff.append("prior.json: the training split's separation prior differs")
    refuse_changes(run_dir, diff)


def training_arguments(args: argparse.Namespace, run_dir: Path, has_val: bool):
    """transformers.TrainingArguments for this run (bf16 auto, gloo DDP on CPU)."""
    import torch
    from transformers import TrainingArguments

    use_bf16 = {"yes": True, "no": False}.get(args.bf16)
    if use_bf16 is None:
        use_bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return TrainingArguments(
        output_dir=str(run_dir), max_steps=args.max_steps if args.max_steps else -1,
        num_train_epochs=args.num_epochs, per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm,
        lr_scheduler_type="cosine", seed=args.seed, bf16=use_bf16, logging_steps=args.logging_steps,
        eval_strategy="steps" if has_val else "no", eval_steps=args.eval_steps,
        save_strategy="steps", save_steps=args.save_steps, save_total_limit=args.save_total_limit,
        report_to="none", remove_unused_columns=False, dataloader_num_workers=args.dataloader_workers,
        disable_tqdm=args.no_tqdm, ddp_backend="gloo" if (world > 1 and not torch.cuda.is_available()) else None,
        ddp_find_unused_parameters=False, use_cpu=not torch.cuda.is_available(),
        save_only_model=False, logging_first_step=True,
    )


def write_run_dir(run_dir: Path, locks: list[int], files: dict[str, str], tokenizer) -> None:
    """Rank 0: create and lock the run directory, drop checkpoints cut short (that step is written again),
    write ``files`` (name -> text) atomically and the tokenizer."""
    from proteinmtp import rundir as R
    from proteinmtp.fileio import atomic_write

    run_dir.mkdir(parents=True, exist_ok=True)
    take_lock(run_dir, locks)
    R.latest_complete_checkpoint(run_dir, remove_incomplete=True)
    for name, text in files.items():
        atomic_write(run_dir / name, text)
    tokenizer.save_pretrained(str(run_dir / R.TOKENIZER_DIR))


def experiment_recorder(args: argparse.Namespace, run_dir: Path, is_main: bool):
    """A function that (re)records the run under experiments/ (--experiment_name; rank 0), else a no-op."""
    if not (args.experiment_name and is_main):
        return lambda: None
    from proteinmtp.runs import experiment_dir, record_training

    exp_dir = experiment_dir(args.experiment_name, run_dir=run_dir)
    return lambda: record_training(run_dir, exp_dir)


def feature_cache_message(feature_cache, train_ds, fit: int | None) -> str:
    """One line on where the frozen features are cached and which chains are read on a central window."""
    from proteinmtp.training import sample_lengths

    n_long = int((sample_lengths(train_ds.samples) > train_ds.context_len).sum())
    return (f"feature cache: {feature_cache.dir} (whole chains"
            + (f"; {n_long} chains longer than the backbone's {fit} residues are read on their central "
               f"{fit}-residue window" if n_long else "") + ")")


def _main(argv, locks: list[int]) -> int:
    args = parse_args(argv)
    dilations = check_args(args)
    check_environment(args)

    from transformers import set_seed

    from proteinmtp import rundir as R
    from proteinmtp import training as T
    from proteinmtp.model import count_parameters
    from proteinmtp.prior import SeparationPrior, prior_for_training
    from proteinmtp.rundir import CONFIG_NAME, PRIOR_NAME

    run_dir = Path(args.output_dir)
    world_rank = int(os.environ.get("RANK", "0"))
    is_main = world_rank == 0
    if is_main and run_dir.is_dir():
        take_lock(run_dir, locks)        # before reading anything there (a new directory: when it is made)

    train, gs, train_ds, val_samples = load_data(args)
    if args.ss_weight > 0 and not any(getattr(s, "ss8", None) for s in train.samples):
        # a dataset built before DSSP labels: no secondary-structure head (an untrained one would be noise)
        print(f"{args.train_data} has no ss8 (DSSP) labels: training without the secondary-structure head "
              "(--ss_weight 0); rebuild the dataset with create_distmat_data.py to train it", flush=True)
        args.ss_weight = 0.0
    old, resume, done, complete = resume_state(args, run_dir, is_main)
    if complete:
        return 0

    # --- model --------------------------------------------------------------------------------------
    set_seed(args.seed)
    spec = model_spec(args, dilations, gs)
    model, tokenizer, fit = build_training_model(args, spec)
    feature_cache = None
    if args.finetune == "frozen" and args.feature_cache:
        from proteinmtp.features import FeatureCache

        feature_cache = FeatureCache(model, args.feature_cache_dir or run_dir / R.FEATURE_CACHE_DIR)
        train_ds.context_len = fit or int(T.sample_lengths(train_ds.samples).max())   # whole chains
    n_train, n_total = count_parameters(model)
    is_local = Path(args.model_name).is_dir()
    save_base_backbone = is_local and args.finetune != "full" and n_total < 50_000_000

    # --- the whole stored model must match before anything is written ----------------------------
    config = run_config(args, spec, train, train_ds, val_samples, n_train, n_total)
    config_text = json.dumps(config, indent=2, default=str)
    prior, prior_source = prior_for_training(args.train_data, train.samples)   # shipped prior.json or fitted
    prior_text = json.dumps(prior.to_dict())
    if is_main:
        print(prior_source)
    # the exact prior inference will load (prior.json), also fed to the head when it takes the prior as input
    head_prior = SeparationPrior.from_dict(json.loads(prior_text)) if spec.head["prior_input"] else None
    if old is not None:
        refuse_model_changes(run_dir, old, config, len(train_ds), prior_text)

    if is_main:
        write_run_dir(run_dir, locks, {CONFIG_NAME: config_text, PRIOR_NAME: prior_text}, tokenizer)
    record = experiment_recorder(args, run_dir, is_main)

    # --- trainer ------------------------------------------------------------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    callbacks = [T.LogCallback(run_dir, args.per_device_train_batch_size * args.gradient_accumulation_steps * world),
                 T.CheckpointCallback(run_dir, on_saved=record)]
    limit = T.TimeLimitCallback(args.max_train_minutes) if args.max_train_minutes > 0 else None
    if limit is not None:
        callbacks.append(limit)
    trainer = T.DistanceTrainer(
        model=model, args=training_arguments(args, run_dir, bool(val_samples)), train_dataset=train_ds,
        data_collator=T.DistanceCollator(model.encoder, prior=head_prior, feature_cache=feature_cache),
        eval_dataset=T.CropDataset(val_samples, spec.max_len, random_crop=False) if val_samples else None,
        callbacks=callbacks, head_learning_rate=args.head_learning_rate, val_samples=val_samples,
        max_eval_len=spec.max_len, save_base_backbone=save_base_backbone,
        run_files={CONFIG_NAME: config_text, PRIOR_NAME: prior_text}, run_tokenizer=tokenizer,
    )
    if done is not None:
        # trained to its last step, but the process ended before the final save: finish it from the checkpoint
        trainer._load_from_checkpoint(str(resume))
        trainer.save_model(str(run_dir))
        if is_main:
            T.mark_finished(run_dir, done["step"], args.max_steps, args.num_epochs)
        record()
        if is_main:
            print(f"{run_dir} is complete: trained to step {done['step']}; final weights written from {resume}",
                  file=sys.stderr)
        return 0
    if is_main:
        T.clear_finished(run_dir)
        where = f"resuming from {resume}" if resume else "starting"
        print(f"{where}: {n_train:,} trainable of {n_total:,} parameters, {len(train_ds)} training chains, "
              f"{len(val_samples)} validation chains, layout {args.residue_layout}, finetune {args.finetune}",
              file=sys.stderr)
        if feature_cache is not None:
            print(feature_cache_message(feature_cache, train_ds, fit), file=sys.stderr)
    return train_and_save(args, trainer, run_dir, resume, limit, is_main, record)


def train_and_save(args: argparse.Namespace, trainer, run_dir: Path, resume: Path | None, limit, is_main: bool,
                   record) -> int:
    """Train (from ``resume``, the latest complete checkpoint, when there is one), then the final save and the
    completion marker. Returns the exit code."""
    from proteinmtp import training as T

    t0 = time.time()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except T.NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume from the last complete checkpoint", file=sys.stderr)
        return 130
    if limit is not None and limit.triggered:
        if is_main:
            print(f"stopped after --max_train_minutes {args.max_train_minutes} at step "
                  f"{trainer.state.global_step}; re-run the same command to continue", file=sys.stderr)
    trainer.save_model(str(run_dir))
    if is_main and trainer.state.global_step >= trainer.state.max_steps:
        T.mark_finished(run_dir, trainer.state.global_step, args.max_steps, args.num_epochs)
    record()
    if is_main:
        print(f"done: step {trainer.state.global_step} in {time.time() - t0:.0f} s; run saved to {run_dir}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
