"""What ``train_distmat.py`` does once its flags are parsed: :func:`run` (flags -> exit code).

Checks the flags, loads the data, decides with ``proteinmtp.rundir`` whether this is a fresh start, a
resume, the last save of a finished run or nothing to do, builds the model, refuses a resume that would
change the stored run before anything is written, writes the run directory, trains with
``proteinmtp.training.DistanceTrainer`` and the callbacks of ``proteinmtp.callbacks``, and ends with the
final save and the completion marker. SIGINT/SIGTERM stop it at the end of a step with a checkpoint
(exit 130/143; ``callbacks.SignalStop``).

Exit codes: 0 done (or nothing to do), 1 NaN/inf loss or a failed save, 2 bad flags or input (one line,
nothing written), 130/143 stopped by SIGINT/SIGTERM (re-run the same command to resume).
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

from proteinmtp import rundir as R


class StartError(ValueError):
    """A start refused before anything is written (one line; exit 2)."""


def fail(msg: str) -> None:
    raise StartError(msg)


def run(args: argparse.Namespace) -> int:
    """Train as ``args`` say (module doc); returns the exit code. The run-directory lock is released on
    return, and the signal handlers are the caller's again."""
    from proteinmtp.callbacks import SignalStop

    locks: list[int] = []
    signals = SignalStop().install()
    try:
        return _run(args, locks, signals)
    except StartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        signals.uninstall()
        for fd in locks:
            R.unlock_run_dir(fd)


def take_lock(run_dir: Path, locks: list[int]) -> None:
    """One training process per run directory (rank 0 holds it for all ranks); a second one is refused."""
    if locks:
        return
    try:
        locks.append(R.lock_run_dir(run_dir))
    except R.RunDirLocked as e:
        fail(str(e))


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
        template_options(args).validate()
    except ValueError as e:
        fail(str(e))
    return dilations


def stored_templates(run_dir: Path) -> int:
    """The default of --templates: the stored run's K when resuming (0 for a run stored before templates:
    ``rundir.migrate``), else ``HeadConfig().templates`` (4)."""
    from proteinmtp.heads import HeadConfig

    try:
        old = R.read_run_config(run_dir, missing_ok=True) if run_dir.is_dir() else None
    except R.RunLoadError:
        old = None                                   # the resume check reports it
    if old is None:
        return HeadConfig().templates
    return int(((old.get("model") or {}).get("head") or {}).get("templates", 0))


def template_options(args: argparse.Namespace):
    from proteinmtp.config import from_args
    from proteinmtp.templates import TemplateOptions

    return TemplateOptions(**from_args(args, TemplateOptions))


def template_database(args: argparse.Namespace, global_stats: dict):
    """The template database (None with --templates 0 or the coordinate head), checked: one line and exit for
    a missing or corrupt database, held-out chains in it, or another build's training split."""
    from proteinmtp.templates import TemplateDatabase, TemplateError

    if args.templates == 0 or args.head_type != "distance":
        return None
    try:
        db = TemplateDatabase.load(args.template_db or args.train_data)
        db.check_statistics(global_stats)
    except TemplateError as e:
        fail(str(e))
    return db


def template_record(config: dict) -> dict:
    """A run's template database by content (its path may move with --train_data): compared on resume."""
    return {k: v for k, v in (config.get("templates") or {}).items() if k != "path"}


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
    from proteinmtp.dataio import open_dataset

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


def model_spec(args: argparse.Namespace, dilations: tuple[int, ...], gs: dict):
    """The ModelSpec (with its head config dict) the flags describe."""
    from proteinmtp.config import from_args
    from proteinmtp.model import ModelSpec

    return ModelSpec(**from_args(args, ModelSpec), global_stats=dict(gs), head=asdict(head_config(args, dilations)),
                     max_len=args.max_eval_len, init_seed=args.seed)


def comparable_model(model: dict) -> dict:
    """A training_config.json "model" section as plain JSON values, with the defaults for keys a version did
    not store (what ``load_run`` rebuilds), so stored and new specs compare key by key."""
    from proteinmtp.heads import HeadConfig
    from proteinmtp.model import ModelSpec

    spec = asdict(ModelSpec.from_dict(model))
    spec["head"] = asdict(HeadConfig.from_dict(spec.get("head") or {}))
    spec["trust_remote_code"] = bool(model.get("trust_remote_code", False))
    return json.loads(json.dumps(spec, default=str))


def enable_gradient_checkpointing(model) -> None:
    """Recompute the backbone's activations in the backward pass (non-reentrant; under LoRA as well)."""
    bb = model.backbone.get_base_model() if hasattr(model.backbone, "get_base_model") else model.backbone
    if hasattr(bb, "activation_checkpointing_enable"):        # transformers >= 5 name
        bb.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        bb.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def build_training_model(args: argparse.Namespace, spec):
    """(model, tokenizer, fit): the backbone (4-bit, checkpointing as asked) with the head; ``fit`` is the
    longest chain the backbone's positions take in this layout (None = no limit); spec.max_len is capped."""
    import torch

    from proteinmtp.backbone import load_tokenizer
    from proteinmtp.model import build_model

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
        enable_gradient_checkpointing(model)
    fit = model.encoder.max_len
    if fit is not None:
        for flag, n in (("--max_seq_len", args.max_seq_len), ("--long_crop_len", args.long_crop_len)):
            if n > fit:
                fail(f"{flag} {n} needs {model.encoder.n_tokens(n)} tokens in the {args.residue_layout} layout, "
                     f"more than the backbone's {model.encoder.max_tokens} positions (max_position_embeddings); "
                     f"use at most {fit}")
        spec.max_len = min(spec.max_len, fit)
    return model, tokenizer, fit


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


def run_config(args: argparse.Namespace, spec, train, train_ds, val_samples, n_train: int, n_total: int) -> dict:
    """training_config.json: the flags, the whole model spec, data provenance (absolute paths, and relative
    to the run directory: ``rundir.train_data_path``), sizes and library versions."""
    run_dir = Path(args.output_dir)
    data = {}
    for key in ("train_data", "val_data"):
        path = getattr(args, key)
        if path:
            where = R.data_paths(path, run_dir)
            data.update({key: where["absolute"], f"{key}_from_run": where["from_run"]})
        else:
            data[key] = None
    return {
        "config_version": R.CONFIG_VERSION,
        "args": vars(args), "base_model": args.model_name, "layout": args.residue_layout,
        "model": {**asdict(spec), "trust_remote_code": args.trust_remote_code},
        "global_stats": dict(train.global_stats), "dataset_config": train.config, **data,
        "n_train_chains": len(train_ds), "n_val_chains": len(val_samples),
        "parameters": {"trainable": n_train, "total": n_total},
        "libraries": library_versions(), "git_commit": git_commit(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")), "max_steps": args.max_steps or None,
    }


def use_bf16(choice: str) -> bool:
    """--bf16 yes | no | auto (auto: on where a CUDA GPU supports bf16)."""
    import torch

    if choice in ("yes", "no"):
        return choice == "yes"
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def training_arguments(args: argparse.Namespace, run_dir: Path, has_val: bool):
    """transformers.TrainingArguments for this run (bf16 auto, gloo DDP on CPU)."""
    import torch
    from transformers import TrainingArguments

    world = int(os.environ.get("WORLD_SIZE", "1"))
    return TrainingArguments(
        output_dir=str(run_dir), max_steps=args.max_steps if args.max_steps else -1,
        num_train_epochs=args.num_epochs, per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm,
        lr_scheduler_type="cosine", seed=args.seed, bf16=use_bf16(args.bf16), logging_steps=args.logging_steps,
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
    from proteinmtp.experiments import experiment_dir, record_training

    exp_dir = experiment_dir(args.experiment_name, run_dir=run_dir)
    return lambda: record_training(run_dir, exp_dir)


def feature_cache_message(feature_cache, train_ds, fit: int | None) -> str:
    """One line on where the frozen features are cached and which chains are read on a central window."""
    from proteinmtp.training import sample_lengths

    n_long = int((sample_lengths(train_ds.samples) > train_ds.context_len).sum())
    return (f"feature cache: {feature_cache.dir} (whole chains"
            + (f"; {n_long} chains longer than the backbone's {fit} residues are read on their central "
               f"{fit}-residue window" if n_long else "") + ")")


def resume_plan(args: argparse.Namespace, run_dir: Path, is_main: bool) -> R.ResumePlan:
    """``rundir.resume_plan`` for these flags; its refusals become a StartError, its note is printed."""
    try:
        plan = R.resume_plan(run_dir, vars(args), args.max_steps, args.num_epochs)
    except (R.RunLoadError, R.RunChangedError) as e:
        fail(str(e))
    if plan.note and is_main:
        print(plan.note, file=sys.stderr)
    return plan


def _run(args: argparse.Namespace, locks: list[int], signals) -> int:
    dilations = check_args(args)
    check_environment(args)

    from transformers import set_seed

    from proteinmtp import training as T
    from proteinmtp.callbacks import CheckpointCallback, LogCallback, StopCallback
    from proteinmtp.model import count_parameters
    from proteinmtp.prior import SeparationPrior, prior_for_training

    run_dir = Path(args.output_dir)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main and run_dir.is_dir():
        take_lock(run_dir, locks)        # before reading anything there (a new directory: when it is made)

    train, gs, train_ds, val_samples = load_data(args)
    template_db = template_database(args, gs)
    if args.ss_weight > 0 and not any(getattr(s, "ss8", None) for s in train.samples):
        # a dataset built before DSSP labels: no secondary-structure head (an untrained one would be noise)
        print(f"{args.train_data} has no ss8 (DSSP) labels: training without the secondary-structure head "
              "(--ss_weight 0); rebuild the dataset with create_distmat_data.py to train it", flush=True)
        args.ss_weight = 0.0
    plan = resume_plan(args, run_dir, is_main)
    if plan.complete:
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
    if template_db is not None:
        config["templates"] = {**template_db.record(), "k": args.templates, **asdict(template_options(args))}
    config_text = json.dumps(config, indent=2, default=str)
    prior, prior_source = prior_for_training(args.train_data, train.samples)   # shipped prior.json or fitted
    prior_text = json.dumps(prior.to_dict())
    if is_main:
        print(prior_source)
    # the exact prior inference will load (prior.json), also fed to the head when it takes the prior as input
    head_prior = SeparationPrior.from_dict(json.loads(prior_text)) if spec.head["prior_input"] else None
    if plan.old is not None:
        try:
            R.refuse_model_changes(run_dir, plan.old, config, comparable_model, json.loads(prior_text))
            R.refuse_changes(run_dir, R.config_differences({"templates": template_record(plan.old)},
                                                           {"templates": template_record(config)}))
        except R.RunChangedError as e:
            fail(str(e))

    if is_main:
        write_run_dir(run_dir, locks, {R.CONFIG_NAME: config_text, R.PRIOR_NAME: prior_text}, tokenizer)
    record = experiment_recorder(args, run_dir, is_main)
    templates = None
    if template_db is not None:
        from proteinmtp.template_inputs import provider_for

        st: dict = {}
        templates = provider_for(template_db, [*train_ds.samples, *val_samples], args.templates,
                                 template_options(args), bin_edges=model.head.cfg.bin_edges(),
                                 cache_dir=run_dir / "template_cache", stats=st)
        if is_main:
            print(f"templates: K={args.templates} from {template_db.path} ({len(template_db)} chains); "
                  f"{st['n_with_hit']} of {st['n_queries']} training/validation chains have a hit "
                  f"({st['n_cached']} cached, search {st['search_seconds']:.1f} s)", file=sys.stderr)

    # --- trainer ------------------------------------------------------------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    stop = StopCallback(args.max_train_minutes, signals)
    callbacks = [LogCallback(run_dir, args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
                             stop=stop), CheckpointCallback(run_dir, on_saved=record), stop]
    trainer = T.DistanceTrainer(
        model=model, args=training_arguments(args, run_dir, bool(val_samples)), train_dataset=train_ds,
        data_collator=T.DistanceCollator(model.encoder, prior=head_prior, feature_cache=feature_cache,
                                         templates=templates),
        eval_dataset=T.CropDataset(val_samples, spec.max_len, random_crop=False) if val_samples else None,
        callbacks=callbacks, head_learning_rate=args.head_learning_rate, val_samples=val_samples,
        max_eval_len=spec.max_len, save_base_backbone=save_base_backbone,
        run_files={R.CONFIG_NAME: config_text, R.PRIOR_NAME: prior_text}, run_tokenizer=tokenizer,
    )
    if plan.done is not None:
        # trained to its last step, but the process ended before the final save: finish it from the checkpoint
        signals.phase = "finishing"
        trainer._load_from_checkpoint(str(plan.checkpoint))
        if not _save_final(trainer, run_dir, plan.checkpoint.name):
            return 1
        if is_main:
            R.mark_finished(run_dir, plan.done["step"], args.max_steps, args.num_epochs)
        record()
        if is_main:
            print(f"{run_dir} is complete: trained to step {plan.done['step']}; final weights written from "
                  f"{plan.checkpoint}", file=sys.stderr)
        return signals.exit_code or 0
    if is_main:
        R.clear_finished(run_dir)
        where = f"resuming from {plan.checkpoint}" if plan.checkpoint else "starting"
        print(f"{where}: {n_train:,} trainable of {n_total:,} parameters, {len(train_ds)} training chains, "
              f"{len(val_samples)} validation chains, layout {args.residue_layout}, finetune {args.finetune}",
              file=sys.stderr)
        if feature_cache is not None:
            print(feature_cache_message(feature_cache, train_ds, fit), file=sys.stderr)
    return train_and_save(args, trainer, run_dir, plan.checkpoint, stop, is_main, record)


def train_and_save(args: argparse.Namespace, trainer, run_dir: Path, resume: Path | None, stop, is_main: bool,
                   record) -> int:
    """Train (from ``resume``, the latest complete checkpoint, when there is one), then the final save and the
    completion marker. Stopped by a signal: the checkpoint of the last step is the save. Returns the exit
    code."""
    from proteinmtp import training as T
    from proteinmtp.dataset import DatasetFormatError

    t0 = time.time()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except (T.NonFiniteLossError, T.CheckpointSaveError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except DatasetFormatError as e:   # a shard sample's metadata is checked when the sample is built
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 2
    step = trainer.state.global_step
    if stop.reason not in (None, "time"):
        record()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:           # every rank says where it stopped
            print(f"rank {os.environ.get('RANK', '0')}: stopped by {stop.reason} at step {step}", file=sys.stderr)
        if is_main:
            print(f"stopped by {stop.reason} at step {step}: {R.checkpoint_dir(run_dir, step)} written; re-run "
                  "the same command to resume from it", file=sys.stderr)
        return stop.signals.exit_code
    if stop.reason == "time" and is_main:
        print(f"stopped after --max_train_minutes {args.max_train_minutes} at step {step}; re-run the same "
              "command to continue", file=sys.stderr)
    if not _save_final(trainer, run_dir, R.checkpoint_dir(run_dir, step).name):
        return 1
    if is_main and step >= trainer.state.max_steps:
        R.mark_finished(run_dir, step, args.max_steps, args.num_epochs)
    record()
    if is_main:
        print(f"done: step {step} in {time.time() - t0:.0f} s; run saved to {run_dir}", file=sys.stderr)
    return stop.signals.exit_code or 0


__all__ = ["run", "StartError", "check_args", "head_config", "model_spec", "comparable_model", "run_config",
           "training_arguments", "use_bf16", "enable_gradient_checkpointing", "train_and_save"]


def _save_final(trainer, run_dir: Path, complete_checkpoint: str) -> bool:
    """Write the final weights into ``run_dir``; on a failed write one line saying which complete checkpoint a
    rerun writes them from, and False."""
    from proteinmtp import training as T

    try:
        trainer.save_model(str(run_dir))
    except T.CheckpointSaveError as e:
        print(f"error: {e} (the final weights); {complete_checkpoint} is complete: re-run the same command to "
              "write them from it", file=sys.stderr)
        return False
    return True
