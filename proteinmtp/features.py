"""Frozen-backbone feature cache: each chain's backbone features computed once, kept on disk, cropped per step.

With ``--finetune frozen`` the backbone is a fixed function of the sequence, so running it at every step
recomputes the same numbers. ``FeatureCache`` stores, per backbone input sequence, what
``DistanceModel.backbone_hidden`` returns for it (the residue rows of the last hidden state, or the
selected layers stacked when ``--feature_layers`` mixes several; the learned mix is applied afterwards, so
it still trains), and training crops take the matching rows: the same crop as the distances.

Whole chains, as inference sees them. A training crop's cached rows come from the backbone reading the
WHOLE chain, not from it reading the crop alone (which is what a run without the cache does): for a chain
longer than the crop the features carry context from outside the crop, exactly as they do when the trained
model predicts that whole chain. A chain longer than the backbone's positions is read as its central
window of what fits (``training.CropDataset(context_len=...)``) and its crops are drawn inside it.

Layout on disk (safe to delete at any time; rebuilt on demand)::

    CACHE_DIR/<key>/meta.json                  what the key stands for (model, init, seed, layout, layers ...)
    CACHE_DIR/<key>/<sha256(sequence)>.safetensors    "hidden": float16 [L, H] or [k, L, H]

``key`` hashes the backbone's identity: the model name or path, init and seed as given, the layout,
letter case, feature layers, the learned <sep>/placeholder vectors the layout injects, and a SHA-256 of
the backbone's weights, so a directory whose weights changed, or a different random seed, never reads
stale features (runs may share one cache directory). Files are written atomically (``fileio``); a file
that cannot be read is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from proteinmtp.fileio import atomic_write, write_json

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
META_NAME = "meta.json"


def tensor_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes of the tensors (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def backbone_fingerprint(model) -> str:
    """SHA-256 of the backbone weights and buffers (the frozen function the cache memoises)."""
    bb = model.backbone.get_base_model() if hasattr(model.backbone, "get_base_model") else model.backbone
    return tensor_sha256(dict(bb.state_dict()))


def sequence_key(sequence: str) -> str:
    return hashlib.sha256(sequence.encode()).hexdigest()


class FeatureCache:
    """Per-sequence frozen backbone features on disk (see the module docstring).

    Args:
        model: a ``DistanceModel`` with ``spec.finetune == "frozen"``. In the echo/placeholder layouts its
            learned <sep>/placeholder vectors are frozen at their initial values (they are part of the
            cached function; saved with the head as always).
        cache_dir: the directory holding one sub-directory per key (default of train_distmat:
            RUN_DIR/feature_cache).
    """

    def __init__(self, model, cache_dir: str | Path):
        if model.spec.finetune != "frozen":
            raise ValueError("the feature cache needs a frozen backbone (--finetune frozen)")
        model.sep_embed.requires_grad_(False)
        model.placeholder_embed.requires_grad_(False)
        self.model = model
        spec = model.spec
        self.meta = {
            "version": CACHE_VERSION, "base_model": spec.base_model, "init_backbone": spec.init_backbone,
            "init_seed": spec.init_seed if spec.init_backbone == "random" else None, "layout": spec.layout,
            "residue_case": spec.residue_case, "is_encoder": spec.is_encoder,
            "feature_layers": model.layer_ids if model.layer_ids is not None else "last",
            "backbone_sha256": backbone_fingerprint(model),
            "special_vectors_sha256": (None if spec.layout == "direct" else tensor_sha256(
                {"sep": model.sep_embed, "placeholder": model.placeholder_embed})),
            "dtype": "float16",
        }
        self.key = hashlib.sha256(json.dumps(self.meta, sort_keys=True).encode()).hexdigest()[:20]
        self.dir = Path(cache_dir) / self.key
        self.hits = 0
        self.misses = 0

    def path(self, sequence: str) -> Path:
        return self.dir / f"{sequence_key(sequence)}.safetensors"

    def _read(self, sequence: str) -> torch.Tensor | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        p = self.path(sequence)
        if not p.is_file():
            return None
        try:
            t = load_file(str(p))["hidden"]
        except (OSError, KeyError, SafetensorError) as e:
            logger.warning("feature cache entry %s is unreadable (%s); recomputing it", p, e)
            return None                                   # recompute (and overwrite)
        return t if t.shape[-2] == len(sequence) else None

    @torch.no_grad()
    def compute(self, sequence: str) -> torch.Tensor:
        """Run the frozen backbone on one sequence: [L, H] or [k, L, H] float16 on the CPU."""
        m = self.model
        was_training = m.training
        m.eval()
        try:
            dev = m.log_dist_mean.device
            b = m.encoder.collate([sequence])
            h = m.backbone_hidden(b["input_ids"].to(dev), b["attention_mask"].to(dev), b["token_kind"].to(dev),
                                  b["residue_pos"].to(dev))[0]
        finally:
            m.train(was_training)
        h16 = h.to(torch.float16)
        if not torch.isfinite(h16).all():
            big = h.float().abs().max().item()
            raise ValueError(f"backbone features reach {big:.3g}, beyond float16; run without the feature "
                             "cache (--no-feature_cache)")
        return h16.cpu().contiguous()

    def features(self, sequence: str) -> torch.Tensor:
        """Cached features of ``sequence`` (computed and stored on a miss): float16 [L, H] or [k, L, H]."""
        t = self._read(sequence)
        if t is not None:
            self.hits += 1
            return t
        self.misses += 1
        t = self.compute(sequence)
        self.store(sequence, t)
        return t

    def store(self, sequence: str, t: torch.Tensor) -> None:
        """Write the entry of ``sequence`` (float16 [L, H] or [k, L, H], what ``compute`` returns), e.g. from
        one backbone pass that produced several layers' entries at once."""
        from safetensors.torch import save

        if t.dtype != torch.float16 or t.shape[-2] != len(sequence):
            raise ValueError(f"a cache entry is float16 [..., {len(sequence)}, H], got {t.dtype} {tuple(t.shape)}")
        if not (self.dir / META_NAME).is_file():
            write_json(self.dir / META_NAME, self.meta)
        atomic_write(self.path(sequence), save({"hidden": t.contiguous()},
                                               metadata={"sequence_length": str(len(sequence))}))

    def batch(self, contexts: list[tuple[str, int, int]]) -> dict[str, torch.Tensor]:
        """Features for a batch of crops: (backbone input sequence, first row, number of rows) per item.

        Returns {"features": float32 [B, Lmax, H] or [B, k, Lmax, H] (zeros at padding),
        "residue_mask": [B, Lmax] bool}.
        """
        rows = []
        for seq, start, n in contexts:
            t = self.features(seq)
            if start < 0 or start + n > t.shape[-2]:
                raise ValueError(f"crop {start}:{start + n} outside the {t.shape[-2]} cached residues")
            rows.append(t[..., start:start + n, :])
        Lmax = max(r.shape[-2] for r in rows)
        shape = (len(rows), *rows[0].shape[:-2], Lmax, rows[0].shape[-1])
        feats = torch.zeros(shape, dtype=torch.float32)
        mask = torch.zeros(len(rows), Lmax, dtype=torch.bool)
        for b, r in enumerate(rows):
            feats[b, ..., : r.shape[-2], :] = r.float()
            mask[b, : r.shape[-2]] = True
        return {"features": feats, "residue_mask": mask}

    def size_bytes(self) -> int:
        """Bytes on disk under this key's directory."""
        return sum(f.stat().st_size for f in self.dir.glob("*.safetensors")) if self.dir.is_dir() else 0
