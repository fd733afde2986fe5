"""The template embedding: per-template pair features -> one [B, L, L, c] term added to the pair representation.

Inputs are the collated ``proteinmtp.templates`` features (``stack_features``, then ``torch.from_numpy``),
K template slots per chain::

    dist_bin [B, K, L, L] long      distogram bin of the template's Cα–Cα distance (any value where no pair)
    pair_mask [B, K, L, L] bool     both residues aligned to template residues with a Cα
    aligned, identical, similar [B, K, L] bool      per-residue alignment columns
    aatype [B, K, L] long           aligned template residue (``templates.GAP`` where none)
    identity, coverage [B, K] float the hit's identity and coverage (fractions)
    template_mask [B, K] bool       a real template

For every template and pair (i, j): an embedding of the distance bin (zero where the pair has no template
distance) + an embedding of the pair mask + the same projection of residue i's and residue j's columns
(so the term is symmetric) + a projection of (identity, coverage) -> ``template_layers`` residual
pointwise MLP blocks (LayerNorm, Linear(w, 2w), GELU, Linear(2w, w)) -> a mean over the templates that
cover the pair (weights pair_mask x template_mask) -> Linear(w, c). Where no template covers a pair (no
hit, padding template slots, an unaligned residue) a learned "no template" vector of width w stands in
before the output projection. A masked template slot changes nothing (tested).

Cost: 4·K·L²·w² multiply-adds per block (K = 4, L = 256, w = 32: 1.1e9); measured beside the distance head
in ``benchmarks/bench_templates.py``.

Wiring (not done yet: ``heads/distance.py``, ``training.py`` and ``model.py`` are being refactored).
``HeadConfig`` gains this class's three flag fields (``templates``, ``template_dim``, ``template_layers``;
``from_dict`` reads a missing ``templates`` as 0, as ``from_head`` does), then in ``heads/distance.py``::

    # DistanceHead.__init__:
    tcfg = TemplateEmbedConfig.from_head(cfg)
    self.templates = TemplatePairEmbedding(tcfg, c) if tcfg.templates > 0 else None
    # DistanceHead.forward(self, feats, residue_mask, prior_norm=None, templates=None), after the prior term:
    if self.templates is not None:
        z = z + self.templates(**templates)      # templates: the batch's "templates" dict

and in the collator (``training.DistanceCollator.__call__``; ``CropDataset`` items also carry ``"id"`` and
``"full_sequence"``)::

    if self.templates is not None:               # a proteinmtp.templates.TemplateProvider
        feats = [self.templates.features(it["id"], it["full_sequence"], (it["start"], it["start"] + len(it["sequence"])),
                                         training=self.training, rng=self.rng) for it in items]
        batch["templates"] = template_tensors(stack_features(feats, Lmax))

Collator fields: one key ``templates`` holding the dict above (``dist_bin`` [B, K, L, L] long, ``pair_mask``
[B, K, L, L] bool, ``aligned``/``identical``/``similar`` [B, K, L] bool, ``aatype`` [B, K, L] long,
``identity``/``coverage`` [B, K] float, ``template_mask`` [B, K] bool, ``dist_A`` [B, K, L, L] float, unused
here); Hugging Face's Trainer moves a nested dict of tensors to the device (``_prepare_input``). ``DistanceModel.forward`` passes
``templates`` through to the head; inference builds the same dict for one chain (``crop=None``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from proteinmtp.config import flag

N_AATYPE = 26            # len(constants.ALLOWED_AA) + 1 for the gap (templates.GAP = 25)
N_RESIDUE_COLUMNS = 3    # aligned, identical, similar


@dataclass
class TemplateEmbedConfig:
    """Hyper-parameters of the template embedding (flag fields, as in ``heads.HeadConfig``; they join it when
    templates are wired into the distance head). The distogram bins default to the distance head's."""

    templates: int = field(default=4, metadata=flag(
        "template slots K per chain (the best K hits of the template search); 0 = no templates"))
    template_dim: int = field(default=32, metadata=flag("width w of the per-template pair features"))
    template_layers: int = field(default=2, metadata=flag("residual pointwise blocks of the template stack"))
    n_bins: int = 42                       # as HeadConfig: 41 edges 2..22 Å -> 40 bins of 0.5 Å, below, overflow
    dist_min: float = 2.0
    dist_max: float = 22.0

    def validate(self) -> None:
        rules = [(self.templates >= 0, f"--templates must be at least 0, got {self.templates}"),
                 (self.template_dim >= 1, f"--template_dim must be at least 1, got {self.template_dim}"),
                 (self.template_layers >= 0, f"--template_layers must be at least 0, got {self.template_layers}")]
        for ok, msg in rules:
            if not ok:
                raise ValueError(msg)

    def bin_edges(self) -> np.ndarray:
        """Distogram bin edges [n_bins - 1] Å (pass to ``templates.template_features(bin_edges=...)``)."""
        return np.linspace(self.dist_min, self.dist_max, self.n_bins - 1)

    @classmethod
    def from_head(cls, head_cfg) -> TemplateEmbedConfig:
        """The embedding config of a head config that has (some of) these fields; missing ones keep defaults,
        except ``templates``, which reads as 0 (a run stored before templates had none)."""
        known = set(cls.__dataclass_fields__)
        d = {"templates": 0, **{k: getattr(head_cfg, k) for k in known if hasattr(head_cfg, k)}}
        return cls(**d)


class _Block(nn.Module):
    def __init__(self, w: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 2 * w), nn.GELU(), nn.Linear(2 * w, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class TemplatePairEmbedding(nn.Module):
    """Template features -> [B, L, L, pair_dim] to add to the pair representation (module docstring)."""

    def __init__(self, cfg: TemplateEmbedConfig, pair_dim: int):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        w = cfg.template_dim
        self.dist = nn.Embedding(cfg.n_bins, w)
        self.pair_mask = nn.Embedding(2, w)
        self.aatype = nn.Embedding(N_AATYPE, w)
        self.columns = nn.Linear(N_RESIDUE_COLUMNS, w)
        self.hit = nn.Linear(2, w)
        self.blocks = nn.ModuleList(_Block(w) for _ in range(cfg.template_layers))
        self.norm = nn.LayerNorm(w)
        self.no_template = nn.Parameter(torch.randn(w) / math.sqrt(w))
        self.out = nn.Linear(w, pair_dim)

    def forward(self, dist_bin: torch.Tensor, pair_mask: torch.Tensor, aligned: torch.Tensor,
                identical: torch.Tensor, similar: torch.Tensor, aatype: torch.Tensor, identity: torch.Tensor,
                coverage: torch.Tensor, template_mask: torch.Tensor, **_unused) -> torch.Tensor:
        """The template term [B, L, L, pair_dim] (shapes in the module docstring)."""
        dtype = self.out.weight.dtype
        pm = pair_mask & template_mask[:, :, None, None]                                 # [B, K, L, L]
        pmf = pm.to(dtype)
        res = self.aatype(aatype.long().clamp(0, N_AATYPE - 1)) + self.columns(
            torch.stack([aligned, identical, similar], -1).to(dtype))                   # [B, K, L, w]
        hit = self.hit(torch.stack([identity, coverage], -1).to(dtype))                 # [B, K, w]
        x = (self.dist(dist_bin.long().clamp(0, self.cfg.n_bins - 1)) * pmf[..., None]
             + self.pair_mask(pm.long())
             + res[:, :, :, None] + res[:, :, None, :] + hit[:, :, None, None])         # [B, K, L, L, w]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        weight = pmf.sum(1)                                                              # [B, L, L]
        mean = (x * pmf[..., None]).sum(1) / weight.clamp(min=1)[..., None]             # [B, L, L, w]
        agg = torch.where((weight > 0)[..., None], mean, self.no_template.to(dtype))
        return self.out(agg)


def template_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """``templates.stack_features`` output -> the tensors ``TemplatePairEmbedding.forward`` takes."""
    out = {}
    for key, a in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(a))
        if a.dtype.kind == "i" or a.dtype.kind == "u":
            t = t.long()
        elif a.dtype.kind == "f":
            t = t.float()
        out[key] = t
    return out


__all__ = ["TemplateEmbedConfig", "TemplatePairEmbedding", "template_tensors", "N_AATYPE"]
