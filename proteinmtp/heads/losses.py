"""Loss terms of every head, in one place: each term named, weighted from the head config, and reported.

Modelled on OpenFold's ``loss.py`` (``AlphaFoldLoss``): a registry maps a term's name to its function and
to the ``HeadConfig`` field that holds its weight; a head lists the names of its terms (``loss_terms``);
:func:`head_loss` evaluates the listed terms whose weight is not 0, reports each one unweighted as
``loss_<name>`` and sums weight x term into ``loss``. The Trainer logs every ``loss_<name>``
(train_log.jsonl, train.log). A new term is one function here plus its name in a head's ``loss_terms``
and, for a new weight, one ``HeadConfig`` field.

| term | heads | weight (HeadConfig) | what |
|---|---|---|---|
| distogram | distance | distogram_weight (1) | cross-entropy of the distogram bins |
| regression | distance, coords | regression_weight (1) | L1 on the normalised log-distance |
| pair_conf | distance | conf_weight (0.1) | cross-entropy of the pair error classes |
| residue_conf | distance, coords | conf_weight (0.1) | BCE of the lDDT-like residue confidence |
| rmsd | coords | rmsd_weight (0.05) | Kabsch RMSD (Å) to the true Cα, mirror-minimal |
| ss | distance, coords | ss_weight (0.5) | 8-state secondary-structure cross-entropy |

All are masked means over valid pairs (both Cα present, i != j, not padding) or residues; pairs with
|i - j| >= 24 weigh ``long_range_weight`` in the pair terms that take pair weights (distogram, regression).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from proteinmtp.heads.common import ERROR_EDGES, HeadConfig, lddt_like_targets, masked_mean, pair_weights
from proteinmtp.heads.coords import kabsch_rmsd, mds_from_dist
from proteinmtp.secondary import IGNORE_INDEX


@dataclass
class LossTargets:
    """What the terms compare the outputs with.

    dist [B, L, L] true Cα–Cα distances Å (any value where not valid); valid [B, L, L] bool; stats
    (log_dist_mean, log_dist_std) of the training split; ss_labels [B, L] long SS8 classes
    (``secondary.IGNORE_INDEX`` = no label) or None; long_range_weight: None = the config's.
    """

    dist: torch.Tensor
    valid: torch.Tensor
    stats: tuple
    ss_labels: torch.Tensor | None = None
    long_range_weight: float | None = None

    def distances(self) -> torch.Tensor:
        """[B, L, L] float, 1 Å where not valid (keeps logs finite)."""
        return torch.where(self.valid, self.dist, torch.ones_like(self.dist)).float()

    def weights(self, cfg: HeadConfig) -> torch.Tensor:
        lrw = cfg.long_range_weight if self.long_range_weight is None else self.long_range_weight
        return pair_weights(self.valid, lrw)


@dataclass(frozen=True)
class LossTerm:
    """One term: ``fn(out, targets, cfg) -> scalar tensor`` (None: nothing to score in this batch, e.g. no
    SS labels) and the name of the HeadConfig field holding its weight."""

    fn: Callable
    weight_field: str


TERMS: dict[str, LossTerm] = {}


def term(name: str, weight_field: str):
    """Register ``fn`` as the loss term ``name`` weighted by ``HeadConfig.<weight_field>``."""
    def register(fn):
        TERMS[name] = LossTerm(fn, weight_field)
        return fn
    return register


def predicted_distance(out: dict, stats) -> torch.Tensor:
    """[B, L, L] predicted distances Å: from the regression output (distance head) or derived (coords)."""
    if "dist_norm" in out:
        mu, sd = stats
        return torch.exp(out["dist_norm"].float() * sd + mu)
    return out["dist"].float()


def predicted_norm(out: dict, stats) -> torch.Tensor:
    """[B, L, L] predicted normalised log-distance ``(ln d - mu) / sd``."""
    if "dist_norm" in out:
        return out["dist_norm"].float()
    mu, sd = stats
    return (torch.log(out["dist"].float()) - mu) / sd


@term("distogram", "distogram_weight")
def distogram_loss(out, t: LossTargets, cfg: HeadConfig):
    d = t.distances()
    edges = torch.tensor(cfg.bin_edges(), dtype=torch.float32, device=d.device)
    logits = out["distogram_logits"].float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.bucketize(d, edges).reshape(-1),
                         reduction="none")
    return masked_mean(ce.reshape(d.shape), t.weights(cfg))


@term("regression", "regression_weight")
def regression_loss(out, t: LossTargets, cfg: HeadConfig):
    mu, sd = t.stats
    target = (torch.log(t.distances()) - mu) / sd
    return masked_mean((predicted_norm(out, t.stats) - target).abs(), t.weights(cfg))


@term("pair_conf", "conf_weight")
def pair_confidence_loss(out, t: LossTargets, cfg: HeadConfig):
    d = t.distances()
    with torch.no_grad():        # targets from the (detached) distance error in Å
        err = (predicted_distance(out, t.stats) - d).abs()
        err_cls = torch.bucketize(err, torch.tensor(ERROR_EDGES, device=err.device))
    pc = out["pair_conf_logits"].float()
    loss = F.cross_entropy(pc.reshape(-1, pc.shape[-1]), err_cls.reshape(-1), reduction="none")
    return masked_mean(loss.reshape(d.shape), t.valid.float())


@term("residue_conf", "conf_weight")
def residue_confidence_loss(out, t: LossTargets, cfg: HeadConfig):
    d = t.distances()
    with torch.no_grad():
        err = (predicted_distance(out, t.stats) - d).abs()
    _, target = lddt_like_targets(err, d, t.valid)                               # [B, L]
    rc = F.binary_cross_entropy_with_logits(out["residue_conf_logits"].float(), target, reduction="none")
    return masked_mean(rc, t.valid.any(-1).float())


@term("rmsd", "rmsd_weight")
def rmsd_loss(out, t: LossTargets, cfg: HeadConfig):
    """Aligned RMSD (Å) of the predicted coordinates to the true Cα, rebuilt by MDS of the present residues'
    distances (exact up to a rigid motion and a mirror, hence the mirror minimum); mean over chains."""
    present = t.valid.any(-1)
    rmsds = []
    for b in range(t.dist.shape[0]):
        idx = present[b].nonzero().squeeze(-1)
        if idx.numel() < 3:
            continue
        true_xyz = mds_from_dist(t.dist[b][idx][:, idx].nan_to_num(0.0))
        rmsds.append(kabsch_rmsd(out["xyz"][b, idx].float(), true_xyz, allow_mirror=True))
    return torch.stack(rmsds).mean() if rmsds else out["xyz"].new_zeros(())


@term("ss", "ss_weight")
def ss_loss(out, t: LossTargets, cfg: HeadConfig):
    """Mean cross-entropy of SS logits [B, L, 8] over residues with a label; None without labels or logits."""
    if t.ss_labels is None or "ss_logits" not in out:
        return None
    logits = out["ss_logits"]
    labels = t.ss_labels.to(logits.device).long()
    keep = labels != IGNORE_INDEX
    if not bool(keep.any()):
        return logits.float().sum() * 0.0        # 0 with a gradient path (DDP needs every parameter used)
    return F.cross_entropy(logits.float()[keep], labels[keep])


def term_weight(name: str, cfg: HeadConfig) -> float:
    """The weight of term ``name`` under ``cfg``."""
    return float(getattr(cfg, TERMS[name].weight_field))


def head_loss(head, out: dict, targets: LossTargets) -> dict[str, torch.Tensor]:
    """``{"loss": sum of weight x term, "loss_<name>": term}`` over the head's ``loss_terms`` whose weight is
    not 0 and that have something to score. KeyError for a name no term is registered under."""
    cfg = head.cfg
    losses: dict[str, torch.Tensor] = {}
    total = None
    for name in head.loss_terms:
        w = term_weight(name, cfg)
        if w == 0:
            continue
        value = TERMS[name].fn(out, targets, cfg)
        if value is None:
            continue
        losses[f"loss_{name}"] = value
        total = w * value if total is None else total + w * value
    losses["loss"] = total if total is not None else targets.dist.new_zeros(())
    return losses


__all__ = ["LossTargets", "LossTerm", "TERMS", "term", "term_weight", "head_loss", "ss_loss"]
