"""The template embedding: per-template pair features -> one [B, L, L, c] term added to the pair representation.

Inputs are the collated ``proteinmtp.templates`` features (``stack_features``, then ``torch.from_numpy``),
K template slots per chain::

    dist_bin [B, K, L, L] long      distogram bin of the template's Cα–Cα distance (any value where no pair)
    pair_mask [B, K, L, L] bool     both residues aligned to template residues with a Cα
    aligned, identical, similar [B, K, L] bool      per-residue alignment columns
    aatype [B, K, L] long           aligned template residue (``templates.GAP`` where none)
    identity, coverage [B, K] float the hit's identity and coverage (fractions)
    significance [B, K] float       the hit's E-value as ``templates.hit_significance`` (template_evalue)
    template_mask [B, K] bool       a real template

For every template and pair (i, j): an embedding of the distance bin (zero where the pair has no template
distance) + an embedding of the pair mask + the same projection of residue i's and residue j's columns
(so the term is symmetric) + a projection of (identity, coverage[, significance]) -> ``template_layers`` residual
pointwise MLP blocks (LayerNorm, Linear(w, 2w), GELU, Linear(2w, w)) -> a mean over the templates that
cover the pair (weights pair_mask x template_mask) -> Linear(w, c). Where no template covers a pair (no
hit, padding template slots, an unaligned residue) a learned "no template" vector of width w stands in
before the output projection. A masked template slot changes nothing (tested).

Cost: 4·w² multiply-adds per block and covered (template, pair) entry, at most K·L² of them (K = 4, L = 256,
w = 32: 1.1e9 when every pair is covered; a template covering half the chain covers a quarter of the
pairs); measured beside the distance head in ``benchmarks/bench_templates.py``.

Wiring (done as below). ``HeadConfig`` gains this class's three flag fields (``templates``, ``template_dim``, ``template_layers``;
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
        "template slots K per chain (the best K hits of the template search); 0 = no templates. "
        "train_distmat.py: default 4 for a new run, a resumed run keeps its own (0 for a run stored before "
        "templates)"))
    template_dim: int = field(default=32, metadata=flag("width w of the per-template pair features"))
    template_layers: int = field(default=2, metadata=flag("residual pointwise blocks of the template stack"))
    template_evalue: bool = field(default=True, metadata=flag(
        "feed each template hit's E-value (as min(max(-log10 E, -1), 10) / 10) beside its identity and "
        "coverage, so the model can tell a significant relative from a chance hit (a run stored before "
        "this option has none)", action="BooleanOptionalAction"))
    template_copy: bool = field(default=True, metadata=flag(
        "a gated copy path beside the embedding: where templates cover a pair, the distance head mixes their "
        "distances (weighted by a learned score of each hit's identity, coverage and E-value) into its "
        "distogram and regressed distance, with a per-pair gate it learns from the pair representation (a "
        "run stored before this option has none)", action="BooleanOptionalAction"))
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
        except ``templates``, ``template_evalue`` and ``template_copy``, which read as 0, False and False
        (what a run stored before them had)."""
        known = set(cls.__dataclass_fields__)
        d = {"templates": 0, "template_evalue": False, "template_copy": False,
             **{k: getattr(head_cfg, k) for k in known if hasattr(head_cfg, k)}}
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
        self.hit = nn.Linear(3 if cfg.template_evalue else 2, w)
        self.blocks = nn.ModuleList(_Block(w) for _ in range(cfg.template_layers))
        self.norm = nn.LayerNorm(w)
        self.no_template = nn.Parameter(torch.randn(w) / math.sqrt(w))
        self.out = nn.Linear(w, pair_dim)

    def forward(self, dist_bin: torch.Tensor, pair_mask: torch.Tensor, aligned: torch.Tensor,
                identical: torch.Tensor, similar: torch.Tensor, aatype: torch.Tensor, identity: torch.Tensor,
                coverage: torch.Tensor, template_mask: torch.Tensor, significance: torch.Tensor | None = None,
                **_unused) -> torch.Tensor:
        """The template term [B, L, L, pair_dim] (shapes in the module docstring)."""
        dtype = self.out.weight.dtype
        pm = pair_mask & template_mask[:, :, None, None]                                 # [B, K, L, L]
        B, _, L, _ = pm.shape
        res = self.aatype(aatype.long().clamp(0, N_AATYPE - 1)) + self.columns(
            torch.stack([aligned, identical, similar], -1).to(dtype))                   # [B, K, L, w]
        hit = self.hit(hit_features(self.cfg, identity, coverage, significance).to(dtype))  # [B, K, w]
        # Only the covered (template, pair) entries enter the mean (weight pair_mask x template_mask), so the
        # stack runs on those alone: the same numbers as on the dense [B, K, L, L, w] tensor (tested), at
        # the cost of the covered fraction (about coverage^2 of the pairs).
        b, k, i, j = pm.nonzero(as_tuple=True)
        x = (self.dist(dist_bin[b, k, i, j].long().clamp(0, self.cfg.n_bins - 1)) + self.pair_mask.weight[1]
             + res[b, k, i] + res[b, k, j] + hit[b, k])                                 # [N, w]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        flat = (b * L + i) * L + j
        total = torch.zeros(B * L * L, x.shape[-1], dtype=x.dtype, device=x.device).index_add(0, flat, x)
        weight = torch.zeros(B * L * L, dtype=x.dtype, device=x.device).index_add(
            0, flat, torch.ones_like(flat, dtype=x.dtype))
        mean = total / weight.clamp(min=1)[:, None]
        agg = torch.where((weight > 0)[:, None], mean, self.no_template.to(dtype))
        return self.out(agg).reshape(B, L, L, -1)

    def no_template_term(self) -> torch.Tensor:
        """[pair_dim]: what ``forward`` gives every pair when no template covers it (no hit, dropout,
        ``--templates 0`` at inference), without building the [B, K, L, L, w] features."""
        return self.out(self.no_template)


def hit_features(cfg: TemplateEmbedConfig, identity: torch.Tensor, coverage: torch.Tensor,
                 significance: torch.Tensor | None) -> torch.Tensor:
    """[B, K, 2 or 3]: each hit's identity, coverage and (``template_evalue``) E-value significance."""
    per_hit = [identity, coverage]
    if cfg.template_evalue:
        if significance is None:
            raise ValueError("this template embedding reads each hit's E-value (template_evalue): the features "
                             "have no 'significance'")
        per_hit.append(significance)
    return torch.stack(per_hit, -1).float()


class TemplateCopy(nn.Module):
    """The copy path (``template_copy``): where templates cover a pair, a vote over their distogram bins and
    their normalised log-distance, each template weighted by a softmax over the covering templates of a
    learned score of its hit features; and a per-pair gate in [0, 1] from the pair representation.

    ``DistanceHead`` adds ``gate_dgram x strength x vote`` to its distogram logits and moves its regressed
    normalised distance ``gate_dist`` of the way from its baseline (the prior) to the templates'. Pairs no
    template covers get nothing (the gate is masked to 0): the no-template path is the head without it."""

    def __init__(self, cfg: TemplateEmbedConfig, pair_dim: int):
        super().__init__()
        self.cfg = cfg
        self.score = nn.Linear(3 if cfg.template_evalue else 2, 1)
        self.gate = nn.Linear(pair_dim, 2)                  # [regression, distogram]
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, -1.0)             # start mostly closed (sigmoid 0.27)
        self.strength = nn.Parameter(torch.tensor(4.0))

    def forward(self, z: torch.Tensor, templates: dict[str, torch.Tensor], n_bins: int):
        """z [B, L, L, c] -> (gate [B, L, L, 2], vote [B, L, L, n_bins], copied normalised log-distance
        [B, L, L]); ``templates`` needs ``dist_norm`` [B, K, L, L] (``DistanceModel`` adds it)."""
        pm = templates["pair_mask"] & templates["template_mask"][:, :, None, None]             # [B, K, L, L]
        score = self.score(hit_features(self.cfg, templates["identity"], templates["coverage"],
                                        templates.get("significance"))).squeeze(-1)           # [B, K]
        logits = score[:, :, None, None].expand(pm.shape).masked_fill(~pm, -1e4)
        w = torch.softmax(logits, dim=1) * pm                                                 # [B, K, L, L]
        covered = pm.any(1)                                                                    # [B, L, L]
        bins = templates["dist_bin"].long().clamp(0, n_bins - 1).permute(0, 2, 3, 1)          # [B, L, L, K]
        vote = torch.zeros(*covered.shape, n_bins, dtype=w.dtype, device=w.device).scatter_add_(
            -1, bins, w.permute(0, 2, 3, 1))
        dn = templates.get("dist_norm")
        if dn is None:
            if bool(covered.any()):
                raise ValueError("the template copy path needs the templates' normalised log-distances "
                                 "('dist_norm', which DistanceModel.forward adds)")
            dn = torch.zeros_like(w)
        copied = (w * dn.to(w.dtype)).sum(1)
        gate = torch.sigmoid(self.gate(z).float()) * covered[..., None]
        return gate, vote, copied


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


__all__ = ["TemplateEmbedConfig", "TemplatePairEmbedding", "TemplateCopy", "hit_features", "template_tensors",
           "N_AATYPE"]
