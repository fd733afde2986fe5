"""Training: torch Dataset with random contiguous crops, padding collator, HF Trainer subclass and callbacks.

The loop, LR schedule (cosine + warmup), gradient clipping, checkpoints (RUN_DIR/checkpoint-<step>/),
resume and DDP come from ``transformers.Trainer``. What this module adds:

* ``CropDataset`` / ``DistanceCollator``: chains longer than max_seq_len train on a random contiguous crop
  (torch RNG, so a resumed run continues the same stream); batches are right-padded, distances NaN-padded.
* ``DistanceTrainer``: saves checkpoints in the run format (head.safetensors + adapter/ or backbone/, no
  pickles), resumes from them, evaluates on whole validation chains with ``proteinmtp.metrics`` (MAE in Å
  overall and per separation range, long-range top-L/5 contact precision), stops on NaN/inf loss.
* Callbacks: ``LogCallback`` (RUN_DIR/train.log for ``tail -f`` and RUN_DIR/train_log.jsonl),
  ``CheckpointCallback`` (marks a checkpoint complete only after everything is on disk, refreshes the
  experiment record), ``TimeLimitCallback`` (--max_train_minutes: save and stop gracefully).
* Resume helpers: the latest complete checkpoint, ``finished_run`` / ``mark_finished``
  (RUN_DIR/training_complete.json after the final save: a re-run of a finished command is a no-op) and
  ``comparable_model`` / ``config_differences`` (a resume must not change the stored run).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback

from proteinmtp.fileio import atomic_write, write_json
from proteinmtp.geometry import distance_matrix
from proteinmtp.heads.common import add_ss_loss
from proteinmtp.metric_registry import TRAINING_KEYS, distance_scores
from proteinmtp.model import (
    DistanceModel,
    HeadConfig,
    ModelSpec,
    load_weights_into,
    prior_distances,
    save_weights,
)
from proteinmtp.rundir import (
    CHECKPOINT_PREFIX,
    COMPLETE_MARKER,
    TOKENIZER_DIR,
    TRAIN_FINISHED,
    TRAIN_JSONL,
    TRAIN_TEXT_LOG,
    TRAINER_STATE,
    latest_complete_checkpoint,
    read_json_or_none,
)
from proteinmtp.secondary import IGNORE_INDEX, ss8_labels


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf."""


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------
def usable(sample, min_present: int = 2) -> bool:
    """A chain can train if at least ``min_present`` residues have a Cα."""
    return int(sample.mask().sum()) >= min_present


def usable_samples(samples, min_present: int = 2):
    """The usable chains: a list for a list; a lazy view for ``proteinmtp.shards.ShardedSamples`` (filtered
    on its Cα counts, no Sample built), so a training set stays on its memory map."""
    if hasattr(samples, "n_present") and hasattr(samples, "select"):
        return samples.select(np.flatnonzero(samples.n_present() >= min_present))
    return [s for s in samples if usable(s, min_present)]


def sample_lengths(samples) -> np.ndarray:
    """[n] residues per sample (a lazy view's from its offsets)."""
    if hasattr(samples, "lengths"):
        return np.asarray(samples.lengths())
    return np.array([len(s.sequence) for s in samples], dtype=np.int64)


class CropDataset(Dataset):
    """Samples -> {"sequence": str, "ca": [l, 3] Å}, with a random contiguous crop of ``max_len`` residues
    for longer chains when ``random_crop`` (training); otherwise a central crop (deterministic).

    ``context_len`` > 0 (frozen runs with the feature cache): each item also names the backbone input it
    is a crop of, ``context`` (the whole chain, or its central ``context_len`` residues when longer: what
    the backbone's positions take) and ``context_start`` (where that window starts in the chain); crops
    are drawn inside the window. ``start`` and ``full_len`` stay in whole-chain coordinates.
    """

    def __init__(self, samples, max_len: int, random_crop: bool = True, long_len: int = 0,
                 long_fraction: float = 0.0, context_len: int = 0):
        self.samples = usable_samples(samples)
        self.max_len = int(max_len)
        self.random_crop = random_crop
        self.context_len = int(context_len)
        # with probability long_fraction a training item is cropped at long_len instead (AlphaFold-style mix,
        # so separations up to long_len are trained at a fraction of the L^2 cost)
        self.long_len = int(long_len)
        self.long_fraction = float(long_fraction)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        full = len(s.sequence)
        w0, L = 0, full                      # the window crops are drawn from (the whole chain by default)
        if self.context_len and full > self.context_len:
            w0, L = (full - self.context_len) // 2, self.context_len
        n = self.max_len
        if self.random_crop and self.long_len > n and float(torch.rand(())) < self.long_fraction:
            n = self.long_len
        start = 0
        if L > n:
            if self.random_crop:
                for _ in range(10):   # prefer crops with at least two present Cα
                    start = int(torch.randint(0, L - n + 1, (1,)).item())
                    if np.isfinite(s.ca[w0 + start:w0 + start + n, 0]).sum() >= 2:
                        break
            else:
                start = (L - n) // 2
        start += w0
        end = min(w0 + L, start + n)
        item = {"sequence": s.sequence[start:end], "ca": np.asarray(s.ca[start:end], dtype=np.float64),
                "full_len": full, "start": start}
        ss8 = getattr(s, "ss8", None)
        if ss8 is not None:
            item["ss8"] = ss8[start:end]     # DSSP labels cropped with the sequence
        if self.context_len:
            item["context"], item["context_start"] = s.sequence[w0:w0 + L], w0
        return item


class DistanceCollator:
    """List of CropDataset items -> model batch (ResidueEncoder tensors + dist [B, L, L] Å, NaN padded).

    With a ``feature_cache`` (proteinmtp.features.FeatureCache) the batch carries the crops' cached backbone
    features instead of token tensors: the rows of the item's ``context`` (default: the crop itself)
    that the crop covers.
    """

    def __init__(self, encoder, prior=None, feature_cache=None):
        self.encoder = encoder
        self.prior = prior   # SeparationPrior: adds prior_dist [B, L, L] Å for heads with prior_input
        self.feature_cache = feature_cache

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        if self.feature_cache is not None:
            batch = self.feature_cache.batch([
                (it.get("context", it["sequence"]), it["start"] - it.get("context_start", it["start"]),
                 len(it["sequence"])) for it in items])
        else:
            batch = self.encoder.collate([it["sequence"] for it in items])
        Lmax = batch["residue_mask"].shape[1]
        dist = torch.full((len(items), Lmax, Lmax), float("nan"), dtype=torch.float32)
        for b, it in enumerate(items):
            L = len(it["sequence"])
            dist[b, :L, :L] = torch.from_numpy(distance_matrix(it["ca"]).astype(np.float32))
        batch["dist"] = dist
        if any("ss8" in it for it in items):  # [B, L] SS8 class indices, IGNORE_INDEX at ?, padding, no labels
            labels = torch.full((len(items), Lmax), IGNORE_INDEX, dtype=torch.long)
            for b, it in enumerate(items):
                if "ss8" in it:
                    labels[b, :len(it["ss8"])] = torch.from_numpy(ss8_labels(it["ss8"]))
            batch["ss_labels"] = labels
        if self.prior is not None:
            batch["prior_dist"] = prior_distances(
                self.prior, [(it["full_len"], it["start"], len(it["sequence"])) for it in items], Lmax)
        return batch


# ----------------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------------
EVAL_KEYS = TRAINING_KEYS   # proteinmtp.metric_registry: the metrics with training keys


SUM_KEYS = ("loss", *EVAL_KEYS)


@torch.no_grad()
def evaluate_samples(model: DistanceModel, samples, max_len: int, collate: DistanceCollator,
                     device: str | torch.device = "cpu", batch_size: int = 1) -> dict[str, float]:
    """Mean over chains of distance and contact metrics (proteinmtp.metrics) plus the mean loss.

    ``collate`` is the training run's collator (the same prior and, for a frozen run, the same feature cache:
    the evaluated crop is its own backbone input, as at inference). Chains longer than ``max_len`` are
    evaluated on their central ``max_len`` residues.
    """
    sums, counts = evaluate_sums(model, samples, max_len, collate, device=device, batch_size=batch_size)
    return {k: sums[k] / counts[k] for k in sums if counts[k]}


def rank_share(samples, rank: int, world: int):
    """This rank's share of the samples for evaluation: every ``world``-th chain in length order, so the
    ranks' shares are disjoint, cover every chain, and cost about the same (a view for lazy samples)."""
    order = np.argsort(sample_lengths(samples), kind="stable")[rank::world]
    if hasattr(samples, "select"):
        return samples.select(order)
    return [samples[int(i)] for i in order]


def evaluate_distributed(model: DistanceModel, samples, max_len: int, collate: DistanceCollator,
                         device: str | torch.device = "cpu", batch_size: int = 1) -> dict[str, float]:
    """``evaluate_samples`` over all ranks of an initialised torch.distributed group: each rank scores its
    ``rank_share`` and the per-metric sums and counts are all-reduced (a tensor on ``device``: NCCL needs a
    CUDA one, gloo takes CPU), so every rank returns the whole split's means. Without a group: one process."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return evaluate_samples(model, samples, max_len, collate, device=device, batch_size=batch_size)
    share = rank_share(samples, dist.get_rank(), dist.get_world_size())
    sums, counts = evaluate_sums(model, share, max_len, collate, device=device, batch_size=batch_size)
    t = torch.tensor([sums.get(k, 0.0) for k in SUM_KEYS] + [float(counts.get(k, 0)) for k in SUM_KEYS],
                     dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    v = t.cpu().tolist()
    n = len(SUM_KEYS)
    return {k: v[i] / v[n + i] for i, k in enumerate(SUM_KEYS) if v[n + i] > 0}


@torch.no_grad()
def evaluate_sums(model: DistanceModel, samples, max_len: int, collate: DistanceCollator,
                  device: str | torch.device = "cpu", batch_size: int = 1) -> tuple[dict[str, float], dict[str, int]]:
    """Per-metric sums over chains and the number of chains with a finite value (``SUM_KEYS``)."""
    was_training = model.training
    model.eval()
    ds = CropDataset(samples, max_len, random_crop=False)
    stats = (float(model.log_dist_mean), float(model.log_dist_std))
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    order = np.argsort(np.minimum(sample_lengths(ds.samples), max_len), kind="stable").tolist()   # crop lengths
    for start in range(0, len(order), batch_size):
        items = [ds[i] for i in order[start:start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(items).items()}
        out = model(**batch)
        row = {"loss": float(out["loss"])}
        for b, it in enumerate(items):
            L = len(it["sequence"])
            pred = model.head.predict_numpy(out, b, L, stats)
            true = distance_matrix(it["ca"])
            mask = np.isfinite(it["ca"]).all(1)
            m = distance_scores(pred["dist"], pred["contact_prob"], true, mask)
            for k in EVAL_KEYS:
                v = m.get(k)
                if v is not None and np.isfinite(v):
                    sums[k] += float(v)
                    counts[k] += 1
        sums["loss"] += row["loss"] * len(items)
        counts["loss"] += len(items)
    model.train(was_training)
    return dict(sums), dict(counts)


# ----------------------------------------------------------------------------------------------------
# trainer
# ----------------------------------------------------------------------------------------------------
class DistanceTrainer(Trainer):
    """HF Trainer with the run-format checkpoints, head learning rate, own evaluation and NaN guard."""

    def __init__(self, *args, head_learning_rate: float | None = None, val_samples=None, max_eval_len: int = 1024,
                 save_base_backbone: bool = False, run_files: dict[str, str] | None = None, run_tokenizer=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.run_tokenizer = run_tokenizer   # saved into every checkpoint's tokenizer/ (self-contained)
        self.head_learning_rate = head_learning_rate
        self.val_samples = val_samples if val_samples is not None else []   # a list or a lazy view
        self.max_eval_len = max_eval_len
        self.save_base_backbone = save_base_backbone
        self.run_files = run_files or {}     # name -> text written into every checkpoint (config, prior)
        self._loss_parts: dict[str, float] = defaultdict(float)
        self._loss_parts_n = 0

    # -- optimisation ----------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        head_lr = self.head_learning_rate or self.args.learning_rate
        groups: dict[tuple[bool, bool], list] = defaultdict(list)
        for name, p in opt_model.named_parameters():
            if not p.requires_grad:
                continue
            is_backbone = name.startswith("backbone.")
            no_decay = p.ndim < 2 or name.endswith("_embed") or "norm" in name.lower() or "layer_mix" in name
            groups[(is_backbone, no_decay)].append(p)
        param_groups = [
            {"params": ps, "lr": self.args.learning_rate if bb else head_lr,
             "weight_decay": 0.0 if nd else self.args.weight_decay}
            for (bb, nd), ps in groups.items() if ps
        ]
        self.optimizer = torch.optim.AdamW(param_groups, lr=self.args.learning_rate,
                                           betas=(self.args.adam_beta1, self.args.adam_beta2),
                                           eps=self.args.adam_epsilon)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        head_cfg = getattr(model, "module", model).head.cfg
        add_ss_loss(outputs, inputs.get("ss_labels"), getattr(head_cfg, "ss_weight", 0.0))
        loss = outputs["loss"]
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {self.state.global_step + 1}; stopped without "
                "saving, the last complete checkpoint is intact. Lower --learning_rate or --max_grad_norm, "
                "or check the data.")
        for k, v in outputs.items():
            if k.startswith("loss_"):
                self._loss_parts[k] += float(v.detach())
        self._loss_parts_n += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_parts_n:
            for k, v in self._loss_parts.items():
                logs[k] = round(v / self._loss_parts_n, 5)
            self._loss_parts.clear()
            self._loss_parts_n = 0
        super().log(logs, start_time)

    # -- checkpoints in the run format -----------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if not self.args.should_save:
            return
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        save_weights(model, out, save_base_backbone=self.save_base_backbone)
        if self.run_tokenizer is not None:

            self.run_tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
        for name, text in self.run_files.items():
            atomic_write(out / name, text)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        load_weights_into(model, resume_from_checkpoint)

    # -- evaluation ------------------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if not self.val_samples:
            return {}
        model = self.accelerator.unwrap_model(self.model)
        t0 = time.time()
        # each rank scores its share; the sums are all-reduced
        # (docs/contracts.md#training-data-and-in-training-evaluation)
        raw = evaluate_distributed(model, self.val_samples, self.max_eval_len, self.data_collator,
                                   device=self.args.device)
        metrics = {f"{metric_key_prefix}_{k}": round(v, 5) for k, v in raw.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - t0, 2)
        metrics[f"{metric_key_prefix}_n_chains"] = len(self.val_samples)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


# ----------------------------------------------------------------------------------------------------
# callbacks
# ----------------------------------------------------------------------------------------------------
def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class LogCallback(TrainerCallback):
    """Appends to RUN_DIR/train.log (human) and RUN_DIR/train_log.jsonl (one JSON object per log/eval)."""

    def __init__(self, run_dir: str | Path, samples_per_step: int):
        self.run_dir = Path(run_dir)
        self.samples_per_step = samples_per_step
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
        self._write(row, f"{stamp} step {step}/{state.max_steps} | loss {logs['loss']:.4f} | "
                         f"lr {logs.get('learning_rate', float('nan')):.2e} | grad {gn:.3f} | "
                         f"{rate:.2f} samples/s{mem} | ETA {_fmt_time(eta) if math.isfinite(eta) else '?'}")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            if state.global_step >= state.max_steps:
                event, text = "done", f"training ended at step {state.global_step}"
            else:   # --max_train_minutes
                event, text = "stopped", (f"training stopped at step {state.global_step}/{state.max_steps}; "
                                          "re-run the command to continue")
            self._write({"event": event, "step": state.global_step, "time": time.time()},
                        f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}")


class CheckpointCallback(TrainerCallback):
    """After the Trainer has written checkpoint-<step>/ completely, drop a marker file into it
    (resume ignores checkpoints without one, e.g. cut short by kill -9) and refresh the experiment record."""

    def __init__(self, run_dir: str | Path, on_saved=None):
        self.run_dir = Path(run_dir)
        self.on_saved = on_saved

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = self.run_dir / f"{CHECKPOINT_PREFIX}{state.global_step}"
        if ckpt.is_dir():
            write_json(ckpt / COMPLETE_MARKER, {"step": state.global_step, "time": time.time()}, indent=None)
        if self.on_saved is not None:
            self.on_saved()


def broadcast_flag(flag: bool, device) -> bool:
    """Rank 0's ``flag`` on every rank (as is, without torch.distributed): every rank must agree to stop, or
    DDP hangs. The tensor lives on ``device`` (the Trainer's ``args.device``: NCCL refuses CPU tensors)."""
    t = torch.tensor([float(flag)], device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast(t, src=0)
    return bool(t.item() > 0)


class TimeLimitCallback(TrainerCallback):
    """Stop gracefully (with a checkpoint) after ``minutes`` of training in this process."""

    def __init__(self, minutes: float):
        self.limit = minutes * 60.0
        self.t0 = time.time()
        self.triggered = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if broadcast_flag(time.time() - self.t0 > self.limit, args.device):
            self.triggered = True
            control.should_save = True
            control.should_training_stop = True
        return control


# ----------------------------------------------------------------------------------------------------
# resume
# ----------------------------------------------------------------------------------------------------
def finished_run(run_dir: str | Path, max_steps: int, num_epochs: float) -> dict | None:
    """``{"step", "marker"}`` when the run in ``run_dir`` already trained to this target, else None.

    Finished means RUN_DIR/training_complete.json (written after the final save of a run that reached its
    last step) for the same --max_steps (and --num_epochs when max_steps is 0), or, with max_steps > 0,
    a complete checkpoint at max_steps or beyond. ``marker`` is False when the final save after that
    checkpoint is missing (the process ended between the two). A run stopped by --max_train_minutes
    is not finished.
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


def comparable_model(model: dict) -> dict:
    """A training_config.json "model" section as plain JSON values, with the defaults for keys an older run
    did not store (what ``load_run`` would rebuild), so stored and new specs compare key by key."""
    spec = asdict(ModelSpec.from_dict(model))
    spec["head"] = asdict(HeadConfig.from_dict(spec.get("head") or {}))
    spec["trust_remote_code"] = bool(model.get("trust_remote_code", False))
    return json.loads(json.dumps(spec, default=str))


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
