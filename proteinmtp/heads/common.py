"""What every pair/coordinate head shares: the head configuration, relative-position buckets, pair weights
and the lDDT-like confidence targets.

A head is an ``nn.Module`` built as ``Head(in_dim, HeadConfig)`` with

* ``forward(feats [B, L, H] float, residue_mask [B, L] bool[, prior_norm [B, L, L]]) -> dict`` of outputs
  (at least ``residue_conf_logits`` [B, L]);
* ``loss_terms``: the names of its loss terms in ``proteinmtp.heads.losses.TERMS`` (the one place where
  every term is computed, weighted from this config and reported: ``heads.losses.head_loss``);
* ``predict_numpy(out, b, L, stats) -> dict`` with keys dist, contact_prob, pair_confidence,
  residue_confidence, distogram_probs, bin_edges, pair_error_probs (NumPy, Å / probabilities; None where a
  head does not predict one) used at inference, and
  ss_probs [L, 8] when the head has the secondary-structure classifier (``ss_weight`` > 0: output
  ``ss_logits`` [B, L, 8]; its loss term ``ss`` scores them against the batch's ``ss_labels``).

Heads are looked up by name in ``proteinmtp.heads.REGISTRY`` (config ``head_type``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from proteinmtp.config import flag
from proteinmtp.constants import ERROR_EDGES
from proteinmtp.heads.templates import TemplateEmbedConfig

_TEMPLATE_FIELDS = TemplateEmbedConfig.__dataclass_fields__     # one definition of the template flags

# lDDT-like score of each pair-confidence class (|predicted - true distance| < ERROR_EDGES Å).
ERROR_SCORES = (1.0, 0.75, 0.5, 0.25, 0.0)
LDDT_INCLUSION = 15.0   # Å, neighbours counted in the per-residue confidence target
LONG_RANGE_MIN_SEP = 24  # residues: |i - j| from which a pair is long-range (weighted by long_range_weight)


@dataclass
class HeadConfig:
    """Hyper-parameters of the pair head (saved in training_config.json under model.head).

    The one source of the head's hyper-parameters: a field with ``flag`` metadata is also a
    ``train_distmat.py`` flag of the same name with the field's default (``proteinmtp.config``), checked by
    ``validate``. A new hyper-parameter is one field here.
    """

    head_type: str = field(default="distance", metadata=flag(
        "pair head: distance = distogram and log-distance regression on the L x L pair tensor; "
        "coords = Cα coordinates per residue, distances derived from them (pair options ignored)",
        choices=("coords", "distance")))                      # = sorted(proteinmtp.heads.REGISTRY) (tested)
    pair_dim: int = field(default=64, metadata=flag("channels c of the L x L pair tensor"))
    single_dim: int = field(default=128, metadata=flag("width of the per-residue projection"))
    dilations: tuple[int, ...] = field(default=(1, 2, 4, 1), metadata=flag(
        "one residual 3x3 conv block per dilation (comma-separated)"))
    axial_attention: bool = field(default=False, metadata=flag(
        "add row/column attention after each block", action="store_true"))
    axial_heads: int = 4
    n_bins: int = 42                       # distogram: 41 edges 2..22 Å -> 40 bins of 0.5 Å, + below, + overflow
    dist_min: float = 2.0
    dist_max: float = 22.0
    relpos_clip: int = 32                  # exact relative positions within ±clip ...
    relpos_log_buckets: int = 5            # ... plus log2-spaced buckets per sign beyond (64,128,256,512,>)
    # loss-term weights (proteinmtp.heads.losses): a term of weight 0 is not computed
    distogram_weight: float = 1.0          # distogram cross-entropy (distance head)
    regression_weight: float = 1.0         # L1 on the normalised log-distance
    conf_weight: float = 0.1               # weight of the two confidence losses (pair classes, residue lDDT)
    rmsd_weight: float = 0.05              # aligned RMSD in Å (coords head)
    dropout: float = 0.0
    # separation prior (chain-length aware) as input and regression baseline
    prior_input: bool = field(default=True, metadata=flag(
        "feed the training split's length-aware separation prior to the distance head as a pair "
        "feature and regression baseline (the head then learns corrections to it; distance head only)",
        action="BooleanOptionalAction"))
    max_rel_sep: int = 0                   # clamp |i - j| to this in the relative-position buckets (0 = off)
    long_range_weight: float = field(default=1.0, metadata=flag(
        "loss weight of pairs with |i-j| >= 24", type=float))
    # per-residue 8-state secondary-structure classifier trained jointly (labels: the dataset's DSSP ss8).
    # A run stored before this field existed has no SS head: proteinmtp.rundir.migrate stores 0 for it.
    ss_weight: float = field(default=0.5, metadata=flag(
        "loss weight of the per-residue 8-state secondary-structure (DSSP) classifier trained jointly with "
        "the distances (cross-entropy, residues without a DSSP state masked); 0 = no SS head. A training "
        "split without ss8 labels trains with 0", type=float))
    # homologous templates (heads.templates; distance head only). A run stored before these fields existed
    # has none: rundir.migrate fills ``templates`` = 0 (version 2), ``template_evalue`` = False (3) and
    # ``template_copy`` = False (4).
    templates: int = field(default=_TEMPLATE_FIELDS["templates"].default,
                           metadata=_TEMPLATE_FIELDS["templates"].metadata)
    template_dim: int = field(default=_TEMPLATE_FIELDS["template_dim"].default,
                              metadata=_TEMPLATE_FIELDS["template_dim"].metadata)
    template_layers: int = field(default=_TEMPLATE_FIELDS["template_layers"].default,
                                 metadata=_TEMPLATE_FIELDS["template_layers"].metadata)
    template_evalue: bool = field(default=_TEMPLATE_FIELDS["template_evalue"].default,
                                  metadata=_TEMPLATE_FIELDS["template_evalue"].metadata)
    template_copy: bool = field(default=_TEMPLATE_FIELDS["template_copy"].default,
                                metadata=_TEMPLATE_FIELDS["template_copy"].metadata)

    def __post_init__(self) -> None:
        if self.head_type != "distance":
            self.prior_input = False       # only the distance head takes the prior (its pair features)
            self.templates = 0             # ... and templates (the coordinate head has no pair tensor)

    def validate(self) -> None:
        """ValueError (naming the flag) for values no head can be built or trained with."""
        rules = [
            (self.pair_dim >= 1, f"--pair_dim must be at least 1, got {self.pair_dim}"),
            (self.single_dim >= 1, f"--single_dim must be at least 1, got {self.single_dim}"),
            (math.isfinite(self.long_range_weight) and self.long_range_weight >= 0,
             f"--long_range_weight must be a finite number >= 0, got {self.long_range_weight}"),
            (math.isfinite(self.ss_weight) and self.ss_weight >= 0,
             f"--ss_weight must be a finite number >= 0, got {self.ss_weight}"),
            (len(self.dilations) > 0 and min(self.dilations) >= 1,
             f"--dilations must all be at least 1, got {','.join(map(str, self.dilations))!r}"),
        ]
        for ok, msg in rules:
            if not ok:
                raise ValueError(msg)
        TemplateEmbedConfig.from_head(self).validate()

    def bin_edges(self) -> np.ndarray:
        """Distogram bin edges [n_bins - 1] Å."""
        return np.linspace(self.dist_min, self.dist_max, self.n_bins - 1)

    def n_relpos(self) -> int:
        """Number of relative-position classes ``relpos_buckets`` produces with this config."""
        return 2 * self.relpos_clip + 1 + 2 * self.relpos_log_buckets

    @classmethod
    def from_dict(cls, d: dict) -> HeadConfig:
        """The config of a dict (missing keys: the field defaults; unknown keys ignored). A stored run's
        dict is read through ``proteinmtp.rundir.migrate`` first, which fills what older versions left out
        with what they meant."""
        d = dict(d)
        if "dilations" in d:
            d["dilations"] = tuple(d["dilations"])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


class SSClassifier(nn.Module):
    """Per-residue representation [B, L, D] -> 8-state secondary-structure logits [B, L, 8] (order
    ``proteinmtp.secondary.SS8``)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        from proteinmtp.secondary import SS8

        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, len(SS8)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def ss_probs_numpy(out: dict[str, torch.Tensor], b: int, L: int) -> dict[str, np.ndarray]:
    """``{"ss_probs": [L, 8]}`` softmax of batch item ``b``'s SS logits; ``{}`` for a head without them."""
    if "ss_logits" not in out:
        return {}
    return {"ss_probs": torch.softmax(out["ss_logits"][b, :L].float(), -1).cpu().numpy()}


def relpos_buckets(L: int, clip: int = 32, n_log: int = 5, device=None, max_sep: int = 0) -> torch.Tensor:
    """Relative-position class of every pair [L, L] long, in [0, 2*clip + 1 + 2*n_log).

    |j - i| <= clip: exact (0 .. 2*clip); beyond: log2 buckets (clip, 2clip], (2clip, 4clip], ... per sign.
    ``max_sep`` > 0 clamps |j - i| first: a model trained on crops of n residues never saw a separation
    of n or more, so longer chains reuse the largest trained bucket instead of untrained embeddings.
    """
    idx = torch.arange(L, device=device)
    d = idx[None, :] - idx[:, None]
    if max_sep > 0:
        d = d.clamp(-max_sep, max_sep)
    ad = d.abs()
    k = torch.floor(torch.log2((ad - 1).clamp(min=1).float() / clip)).long() + 1
    k = k.clamp(1, n_log)
    far = 2 * clip + k + torch.where(d > 0, 0, n_log)
    return torch.where(ad <= clip, d + clip, far)


def config_relpos(cfg: HeadConfig, L: int, device=None) -> torch.Tensor:
    """``relpos_buckets`` with the config's clip, log buckets and separation clamp: [L, L] long."""
    return relpos_buckets(L, cfg.relpos_clip, cfg.relpos_log_buckets, device, cfg.max_rel_sep)


def pair_weights(valid: torch.Tensor, long_range_weight: float = 1.0) -> torch.Tensor:
    """Loss weight of every pair [B, L, L] float: 0 where not ``valid`` [B, L, L] bool, ``long_range_weight``
    where |i - j| >= LONG_RANGE_MIN_SEP, else 1."""
    w = valid.float()
    if long_range_weight != 1.0:
        L = valid.shape[-1]
        idx = torch.arange(L, device=valid.device)
        far = (idx[None, :] - idx[:, None]).abs() >= LONG_RANGE_MIN_SEP
        w = w * torch.where(far, long_range_weight, 1.0)
    return w


def masked_mean(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(x * weight) / sum(weight) (0 when the weights sum to 0); x and weight of one shape."""
    return (x * weight).sum() / weight.sum().clamp(min=1e-6)


@torch.no_grad()
def lddt_like_targets(err: torch.Tensor, dist: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence targets from the absolute distance error (no gradient).

    Args:
        err: [B, L, L] |predicted - true| distance, Å.
        dist: [B, L, L] true distances, Å (any value where not valid).
        valid: [B, L, L] bool.
    Returns:
        pair_score [B, L, L]: fraction of the thresholds ERROR_EDGES (0.5, 1, 2, 4 Å) the error is below;
        residue_target [B, L]: mean pair_score over the residue's valid neighbours closer than LDDT_INCLUSION
        Å (all its valid pairs where it has no such neighbour; 0 where it has no valid pair).
    """
    thr = torch.tensor(ERROR_EDGES, device=err.device)
    pair_score = (err[..., None] < thr).float().mean(-1)
    near = valid & (dist < LDDT_INCLUSION)
    near = torch.where(near.any(-1, keepdim=True), near, valid)
    nf = near.float()
    return pair_score, (pair_score * nf).sum(-1) / nf.sum(-1).clamp(min=1)


__all__ = ["ERROR_EDGES", "ERROR_SCORES", "LDDT_INCLUSION", "LONG_RANGE_MIN_SEP", "HeadConfig", "relpos_buckets",
           "config_relpos", "pair_weights", "masked_mean", "lddt_like_targets", "SSClassifier",
           "ss_probs_numpy"]
