"""Training with the Hugging Face Trainer: crops, the padding collator, the Trainer subclass, in-training
evaluation.

The loop, LR schedule (cosine + warmup), gradient clipping, checkpoints (RUN_DIR/checkpoint-<step>/),
resume and DDP come from ``transformers.Trainer``. What this module adds:

* ``CropDataset`` / ``DistanceCollator``: chains longer than max_seq_len train on a random contiguous crop
  (torch RNG, so a resumed run continues the same stream); batches are right-padded, distances NaN-padded.
* ``DistanceTrainer``: head vs backbone learning rates (no weight decay on norms, biases, embeddings and the
  layer mix), checkpoints in the run format (head.safetensors + adapter/ or backbone/, no pickles), resume
  from them (a warning when a checkpoint has no optimizer state), a failed save as one line
  (``CheckpointSaveError``), evaluation on whole validation chains with ``proteinmtp.metrics`` (MAE in Å
  overall and per separation range, long-range top-L/5 contact precision), a stop on NaN/inf loss.

The loss and its terms come from the model (``proteinmtp.heads.losses``); callbacks are
``proteinmtp.callbacks``; the run directory's rules are ``proteinmtp.rundir``.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from torch.utils.data import Dataset
from transformers import Trainer

from proteinmtp.fileio import atomic_write
from proteinmtp.geometry import distance_matrix
from proteinmtp.metric_registry import TRAINING_KEYS, distance_scores
from proteinmtp.model import DistanceModel, load_weights_into, prior_distances, save_weights
from proteinmtp.rundir import (
    HEAD_WEIGHTS,
    OPTIMIZER_STATE,
    SCHEDULER_STATE,
    TOKENIZER_DIR,
    checkpoint_dir,
    latest_complete_checkpoint,
)
from proteinmtp.secondary import IGNORE_INDEX, ss8_labels


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf."""


class CheckpointSaveError(RuntimeError):
    """Writing a checkpoint or the final weights failed (one line: the file and the cause)."""


def _write_cause(e: BaseException, where: Path) -> str:
    """The cause of a failed write in words: the OS error's text (File too large, No space left on device),
    also when a writer only quotes its errno; else the writer's message, with the file system's free space."""
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno)
    text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    m = re.search(r"os error (\d+)", text)                  # safetensors (Rust): "... (os error 27)"
    if m:
        return os.strerror(int(m.group(1)))
    # torch.save quotes no errno: give the context

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        text += f"; the file size limit (ulimit -f) is {limit} bytes"
    try:
        free = shutil.disk_usage(where if where.is_dir() else where.parent).free
        text += f"; {free / 1e6:.0f} MB free on that file system"
    except OSError:
        pass
    return text


@contextlib.contextmanager
def saving(directory: Path, first: str | None):
    """Turn a failed write under ``directory`` into a CheckpointSaveError naming the file and the cause.

    The file: the one the OS error names; else the newest file under ``directory`` written since the block
    began (a writer that leaves its partial file: torch.save, json), or for safetensors, which removes its
    partial file, that file's directory; else ``first`` (the file the block writes first, by an atomic
    writer that removed its temporary copy). A RuntimeError counts too: torch.save reports a failed write as
    one ("unexpected pos ...", "iostream error").
    """
    t0 = time.time_ns()
    try:
        yield
    except CheckpointSaveError:
        raise
    except (OSError, RuntimeError, SafetensorError) as e:
        if isinstance(e, OSError) and getattr(e, "filename", None):
            path = Path(e.filename)
        else:
            new = [p for p in directory.rglob("*") if p.is_file() and p.stat().st_mtime_ns >= t0] \
                if directory.is_dir() else []
            newest = max(new, key=lambda p: p.stat().st_mtime_ns) if new else None
            if newest is None:
                path = str(directory / first) if first else f"{directory}/"
            else:
                path = f"{newest.parent}/" if isinstance(e, SafetensorError) else str(newest)
        raise CheckpointSaveError(f"cannot write {path}: {_write_cause(e, directory)}") from None


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
                "full_len": full, "start": start, "id": s.id, "full_sequence": s.sequence}
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

    With ``templates`` (a ``proteinmtp.templates.TemplateProvider`` holding the searched hits of every
    chain it will see) the batch gains ``templates``: the crops' template features
    (``heads.templates.template_tensors``). ``training`` applies the provider's training-only rules (own
    cluster dropped, template dropout), drawn from a generator seeded by the torch stream (so a resumed run
    and DataLoader workers draw as the crops do); ``evaluation()`` is the same collator without them.
    """

    def __init__(self, encoder, prior=None, feature_cache=None, templates=None, training: bool = True):
        self.encoder = encoder
        self.prior = prior   # SeparationPrior: adds prior_dist [B, L, L] Å for heads with prior_input
        self.feature_cache = feature_cache
        self.templates = templates
        self.training = training

    def evaluation(self) -> DistanceCollator:
        """This collator for evaluation: templates selected without the training-only rules."""
        if not self.training:
            return self
        return DistanceCollator(self.encoder, self.prior, self.feature_cache, self.templates, training=False)

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
        if self.templates is not None:
            from proteinmtp.heads.templates import template_tensors
            from proteinmtp.templates import stack_features

            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)))) if self.training else None
            feats = [self.templates.features(it["id"], it["full_sequence"],
                                             (it["start"], it["start"] + len(it["sequence"])),
                                             training=self.training, rng=rng) for it in items]
            batch["templates"] = template_tensors(stack_features(feats, Lmax))
        return batch


def batch_to(batch: dict, device) -> dict:
    """A collated batch on ``device`` (nested dicts of tensors, e.g. ``templates``, included)."""
    return {k: batch_to(v, device) if isinstance(v, dict) else v.to(device) for k, v in batch.items()}


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
    if hasattr(collate, "evaluation"):
        collate = collate.evaluation()          # no template dropout / own-cluster drop in evaluation
    ds = CropDataset(samples, max_len, random_crop=False)
    stats = (float(model.log_dist_mean), float(model.log_dist_std))
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    order = np.argsort(np.minimum(sample_lengths(ds.samples), max_len), kind="stable").tolist()   # crop lengths
    for start in range(0, len(order), batch_size):
        items = [ds[i] for i in order[start:start + batch_size]]
        batch = batch_to(collate(items), device)
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
        outputs = model(**inputs)             # loss = the weighted loss terms (proteinmtp.heads.losses)
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
        with saving(out, HEAD_WEIGHTS):
            save_weights(model, out, save_base_backbone=self.save_base_backbone)
        if self.run_tokenizer is not None:
            with saving(out, TOKENIZER_DIR):
                self.run_tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
        for name, text in self.run_files.items():
            with saving(out, name):
                atomic_write(out / name, text)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint; a write that fails (disk full, file size limit) becomes one
        ``CheckpointSaveError`` naming the file and the cause, and the cut-short checkpoint is removed (it
        has no completion marker, so it would never be resumed from; its space is freed)."""
        ckpt = checkpoint_dir(self.args.output_dir, self.state.global_step)
        try:
            with saving(ckpt, HEAD_WEIGHTS):
                super()._save_checkpoint(model, trial)
        except CheckpointSaveError as e:
            if self.args.should_save:
                shutil.rmtree(ckpt, ignore_errors=True)
            last = latest_complete_checkpoint(self.args.output_dir)
            raise CheckpointSaveError(
                f"{e}; {ckpt.name} is incomplete and was removed; "
                + (f"re-run the same command to resume from {last.name}" if last is not None else
                   "there is no complete checkpoint yet: re-run the same command to start again")) from None

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        with saving(Path(output_dir or self.args.output_dir), HEAD_WEIGHTS):
            super().save_model(output_dir, _internal_call)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        load_weights_into(model, resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """The Trainer loads optimizer.pt and scheduler.pt only when both exist; otherwise say what restarts."""
        if checkpoint is not None and self.args.should_save:
            missing = [n for n in (OPTIMIZER_STATE, SCHEDULER_STATE) if not (Path(checkpoint) / n).is_file()]
            if missing:
                print(f"warning: {checkpoint} has no {' and no '.join(missing)}: AdamW restarts with empty moment "
                      "estimates and the learning-rate schedule from step 0 (warmup included)",
                      file=sys.stderr, flush=True)
        super()._load_optimizer_and_scheduler(checkpoint)

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
