"""The seed's v1 idea as a selectable head: per-residue features -> Cα coordinates [L, 3] Å directly.

    feats [B, L, H] -> LayerNorm, Linear(H, s), GELU -> n residue-transformer layers (bidirectional
    self-attention with a learned per-head relative-position bias, the same i-j buckets as the distance
    head) -> Linear(s, 3) * COORD_SCALE Å -> xyz [B, L, 3] -> derived distances d_ij = |x_i - x_j| [B, L, L]

Selected with ``train_distmat.py --head_type coords`` (``proteinmtp.heads.REGISTRY["coords"]``). Width ``single_dim``, depth COORD_LAYERS, attention
heads ``axial_heads`` of ``HeadConfig``; the distance head's pair options are ignored. No L² tensor wider
than the attention bias (heads x L x L) exists: memory is linear in L up to that bias.

Loss (choice and reason, see DISCUSSION.md "v1 (coordinate head) vs v2 (distance head)"):

* ``loss_regression``: L1 between the normalised log-distance of the PREDICTED COORDINATES and the
  normalised log-distance of the truth, over valid pairs — the very target the distance head regresses,
  so the comparison isolates the parametrisation (coordinates vs a free pair matrix). Invariant by
  construction to rotation, translation and reflection; no SVD; every pair counts, on the log scale that
  keeps long distances from dominating.
* ``loss_rmsd``: RMSD in Å after optimal superposition (Kabsch) onto the true Cα of the present residues,
  the better of the two mirror images (weight ``HeadConfig.rmsd_weight``, 0.05). The batch carries distances only, so the true
  coordinates are rebuilt by classical MDS of the complete present-residue submatrix (exact up to a rigid
  motion and a mirror, hence the mirror minimum). The rotation is computed without gradient: at the
  optimal superposition the derivative of the RMSD with respect to R vanishes (envelope theorem), so this
  is the exact gradient without back-propagating through an SVD (unstable at degenerate singular values).
* ``loss_residue_conf``: BCE of a per-residue confidence against the lDDT-like score of the residue's
  derived distances (as in the distance head), weight ``conf_weight``.

Outputs shared with the distance head: ``loss`` and ``residue_conf_logits``; ``predict_numpy``
returns the same keys (``dist`` from the coordinates, ``contact_prob`` a monotone score of the distance —
it ranks pairs exactly like the distance, it is not a calibrated probability —, ``pair_confidence`` =
sqrt(c_i c_j), no distogram), so inference and ``evaluate_distmat_model.py`` use it unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from proteinmtp.constants import CONTACT_CUTOFF
from proteinmtp.geometry import classical_mds, kabsch
from proteinmtp.heads.common import (
    HeadConfig,
    SSClassifier,
    config_relpos,
    ss_probs_numpy,
)

COORD_SCALE = 10.0      # Å per unit of the output layer (initial coordinates spread over a few Å)
COORD_LAYERS = 3        # residue-transformer layers
DIST_EPS = 1e-2         # Å², keeps |x_i - x_j| differentiable when two predicted points coincide
CONTACT_SOFTNESS = 1.0  # Å, width of the sigmoid that turns a distance into a contact score


# ----------------------------------------------------------------------------------------------------
# geometry in torch (batched, masked)
# ----------------------------------------------------------------------------------------------------
def coords_to_dist(xyz: torch.Tensor, eps: float = DIST_EPS) -> torch.Tensor:
    """xyz [..., L, 3] Å -> distances [..., L, L] Å (sqrt(|x_i - x_j|² + eps), ~|x_i - x_j| + eps/2d)."""
    diff = xyz[..., :, None, :] - xyz[..., None, :, :]
    return torch.sqrt((diff * diff).sum(-1) + eps)


def mds_from_dist(dist: torch.Tensor) -> torch.Tensor:
    """Classical MDS of a complete distance matrix [n, n] Å -> coordinates [n, 3] Å (float64, no grad).

    Exact (up to rotation, translation and mirror) for distances of a point set in 3D; needs n >= 3.
    ``proteinmtp.geometry.classical_mds`` on the detached matrix.
    """
    xyz = classical_mds(dist.detach().double().cpu().numpy())
    return torch.from_numpy(xyz).to(dist.device)


def kabsch_rmsd(mobile: torch.Tensor, target: torch.Tensor, allow_mirror: bool = False) -> torch.Tensor:
    """RMSD (Å) between ``mobile`` [n, 3] and ``target`` [n, 3] after the optimal superposition of target
    onto mobile (proper rotation; with ``allow_mirror`` the better of target and its mirror image).

    Differentiable in ``mobile``; the rotation is found without gradient (``proteinmtp.geometry.kabsch``
    on detached copies; exact by the envelope theorem).
    """
    xm = mobile - mobile.mean(0, keepdim=True)
    candidates = [target, target * target.new_tensor([1.0, 1.0, -1.0])] if allow_mirror else [target]
    best = None
    for tgt in candidates:
        yc = (tgt - tgt.mean(0, keepdim=True)).to(xm.dtype)
        R, _ = kabsch(yc.detach().double().cpu().numpy(), xm.detach().double().cpu().numpy())
        R = torch.from_numpy(R).to(device=xm.device, dtype=xm.dtype)      # y_c @ R.T ~ x_c
        msd = ((xm - yc @ R.T) ** 2).sum(-1).mean()
        best = msd if best is None else torch.minimum(best, msd)
    return torch.sqrt(best + 1e-8)


# ----------------------------------------------------------------------------------------------------
# the head
# ----------------------------------------------------------------------------------------------------
class ResidueAttentionLayer(nn.Module):
    """Pre-LN transformer layer over residues with an additive [heads, L, L] bias (relative position + mask)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"coordinate head: single_dim {dim} must be divisible by axial_heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [B, L, s], bias [B, heads, L, L] float (-large on padded keys) -> [B, L, s]."""
        B, L, s = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, L, 3, self.heads, s // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))                   # [B, heads, L, s/heads]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        x = x + self.drop(self.out(o.transpose(1, 2).reshape(B, L, s)))
        return x + self.drop(self.ff(self.norm2(x)))


class CoordinateHead(nn.Module):
    """Per-residue features -> Cα coordinates [B, L, 3] Å and a per-residue confidence (module doc)."""

    loss_terms = ("regression", "rmsd", "residue_conf", "ss")     # computed in proteinmtp.heads.losses

    def __init__(self, in_dim: int, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        s, h = cfg.single_dim, cfg.axial_heads
        self.single = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, s), nn.GELU())
        self.relpos = nn.Embedding(cfg.n_relpos(), h)
        nn.init.zeros_(self.relpos.weight)
        self.layers = nn.ModuleList(ResidueAttentionLayer(s, h, cfg.dropout) for _ in range(COORD_LAYERS))
        self.out_norm = nn.LayerNorm(s)
        self.to_xyz = nn.Linear(s, 3)
        self.res_conf = nn.Sequential(nn.Linear(s, s), nn.GELU(), nn.Linear(s, 1))
        self.ss = SSClassifier(s, s) if cfg.ss_weight > 0 else None

    def forward(self, feats: torch.Tensor, residue_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """feats [B, L, H], residue_mask [B, L] bool -> {"xyz" [B, L, 3] Å (0 at padding),
        "dist" [B, L, L] Å (derived from xyz), "residue_conf_logits" [B, L]}."""
        B, L, _ = feats.shape
        x = self.single(feats) * residue_mask[..., None].to(feats.dtype)
        rel = self.relpos(config_relpos(self.cfg, L, feats.device))
        bias = rel.permute(2, 0, 1)[None].float()                                   # [1, heads, L, L]
        keymask = torch.where(residue_mask, 0.0, -1e9).to(bias.dtype)[:, None, None, :]
        bias = bias + keymask                                                        # [B, heads, L, L]
        for layer in self.layers:
            x = layer(x, bias)
        z = self.out_norm(x)
        xyz = self.to_xyz(z).float() * COORD_SCALE * residue_mask[..., None]
        dist = coords_to_dist(xyz)
        extra = {} if self.ss is None else {"ss_logits": self.ss(z)}                 # [B, L, 8]
        return {**extra, "xyz": xyz, "dist": dist, "residue_conf_logits": self.res_conf(z).squeeze(-1)}

    # -- inference -------------------------------------------------------------------------------------
    def predict_numpy(self, out: dict[str, torch.Tensor], b: int, L: int,
                      stats: tuple[float, float]) -> dict[str, np.ndarray | None]:
        """Outputs of batch item ``b`` (first L residues): the keys of ``DistanceHead.predict_numpy``.

        ``dist`` is the exact distance matrix of the predicted coordinates (zero diagonal, symmetric);
        ``distogram_probs``, ``bin_edges`` and ``pair_error_probs`` are None (no distogram, no pair error
        classes).
        """
        dist = coords_to_dist(out["xyz"][b, :L].double(), eps=0.0)
        dist = 0.5 * (dist + dist.T)
        dist.fill_diagonal_(0.0)
        contact = torch.sigmoid((CONTACT_CUTOFF - dist) / CONTACT_SOFTNESS)
        rconf = torch.sigmoid(out["residue_conf_logits"][b, :L].float()).double()
        pconf = torch.sqrt(rconf[:, None] * rconf[None, :])
        return {"dist": dist.cpu().numpy(), "contact_prob": contact.float().cpu().numpy(),
                "pair_confidence": pconf.float().cpu().numpy(), "residue_confidence": rconf.float().cpu().numpy(),
                "distogram_probs": None, "bin_edges": None, "pair_error_probs": None,
                **ss_probs_numpy(out, b, L)}


__all__ = ["CoordinateHead", "coords_to_dist", "kabsch_rmsd", "mds_from_dist", "COORD_SCALE"]
