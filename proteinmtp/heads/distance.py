"""The distance head (v2, the default): per-residue features -> symmetric pair outputs.

    feats [B, L, H] -> LayerNorm, Linear(H, s), GELU -> outer sum + outer product + relative position
    (+ separation prior) -> pair features [B, L, L, c] -> residual dilated 3x3 conv blocks (+ optional
    axial attention) -> symmetrised -> distogram logits [B, L, L, n_bins], normalised log-distance
    [B, L, L], pair confidence logits [B, L, L, 5], residue confidence logits [B, L]

With templates, their embedding joins the pair features, and (``template_copy``) a gated copy path
(``heads.templates.TemplateCopy``) adds their distance votes to the distogram logits and moves the regressed
distance towards theirs, by a per-pair gate the head learns from its pair representation.

The regression target is ``(ln d - log_dist_mean) / log_dist_std`` with the TRAIN split's global_stats.
Only the pair tensor is L²·c, with c the head width; the backbone's hidden size H never enters an L² tensor.
Loss terms (``loss_terms``, computed and weighted in ``proteinmtp.heads.losses``): distogram cross-entropy,
L1 on the normalised log-distance, ``conf_weight`` x (pair-confidence cross-entropy + residue-confidence
BCE), ``ss_weight`` x SS cross-entropy; masked means over valid pairs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from proteinmtp.constants import CONTACT_CUTOFF
from proteinmtp.heads.common import (
    ERROR_SCORES,
    HeadConfig,
    SSClassifier,
    config_relpos,
    ss_probs_numpy,
)
from proteinmtp.heads.templates import TemplateCopy, TemplateEmbedConfig, TemplatePairEmbedding


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a [B, c, L, L] tensor (padding-independent, unlike BatchNorm)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ResidualConvBlock(nn.Module):
    """x + conv(gelu(conv(norm(x)))) with 3x3 dilated convs; padding positions are zeroed before each conv."""

    def __init__(self, c: int, dilation: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = ChannelLayerNorm(c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation)
        self.norm2 = ChannelLayerNorm(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x [B, c, L, L], m [B, 1, L, L] float pair mask."""
        h = self.conv1(self.norm1(x) * m)
        h = self.conv2(self.drop(F.gelu(self.norm2(h))) * m)
        return (x + h) * m


class AxialAttention(nn.Module):
    """Row then column self-attention over the pair tensor (masked)."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.out = nn.Linear(c, c)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _rows(self, z: torch.Tensor, rmask: torch.Tensor) -> torch.Tensor:
        # z [B, L, L, c]; attend along the last L axis for every row.
        B, L, _, c = z.shape
        q, k, v = self.qkv(self.norm(z)).reshape(B * L, L, 3, self.heads, c // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        keymask = rmask[:, None, :].expand(B, L, L).reshape(B * L, 1, 1, L)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=keymask)
        return self.out(o.transpose(1, 2).reshape(B, L, L, c))

    def forward(self, x: torch.Tensor, m: torch.Tensor, rmask: torch.Tensor) -> torch.Tensor:
        z = x.permute(0, 2, 3, 1)
        z = z + self._rows(z, rmask)
        z = z + self._rows(z.transpose(1, 2), rmask).transpose(1, 2)
        return z.permute(0, 3, 1, 2) * m


class DistanceHead(nn.Module):
    """Pairwise head: per-residue features -> symmetric distogram, log-distance, confidences."""

    loss_terms = ("distogram", "regression", "pair_conf", "residue_conf", "ss")     # proteinmtp.heads.losses

    def __init__(self, in_dim: int, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        c, s = cfg.pair_dim, cfg.single_dim
        self.single = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, s), nn.GELU())
        self.left, self.right = nn.Linear(s, c), nn.Linear(s, c)
        self.left_prod, self.right_prod = nn.Linear(s, c), nn.Linear(s, c)
        self.prod_out = nn.Linear(c, c)
        self.relpos = nn.Embedding(cfg.n_relpos(), c)
        self.prior_proj = nn.Linear(1, c) if cfg.prior_input else None
        tcfg = TemplateEmbedConfig.from_head(cfg)
        self.templates = TemplatePairEmbedding(tcfg, c) if tcfg.templates > 0 else None
        self.template_copy = TemplateCopy(tcfg, c) if tcfg.templates > 0 and tcfg.template_copy else None
        self.blocks = nn.ModuleList(ResidualConvBlock(c, d, cfg.dropout) for d in cfg.dilations)
        self.axial = nn.ModuleList(AxialAttention(c, cfg.axial_heads) for _ in cfg.dilations) \
            if cfg.axial_attention else None
        self.out_norm = nn.LayerNorm(c)
        self.distogram = nn.Linear(c, cfg.n_bins)
        self.regress = nn.Linear(c, 1)
        self.pair_conf = nn.Linear(c, len(ERROR_SCORES))
        self.res_conf = nn.Sequential(nn.Linear(s + c, s), nn.GELU(), nn.Linear(s, 1))
        self.ss = SSClassifier(s + c, s) if cfg.ss_weight > 0 else None     # same per-residue input as res_conf
        self.register_buffer("bin_edges", torch.tensor(cfg.bin_edges(), dtype=torch.float32), persistent=False)

    def forward(self, feats: torch.Tensor, residue_mask: torch.Tensor,
                prior_norm: torch.Tensor | None = None,
                templates: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """feats [B, L, H] float, residue_mask [B, L] bool -> dict of symmetric outputs (see module doc).

        With ``cfg.templates`` > 0, ``templates`` is the batch's template features (``heads.templates``, K =
        ``cfg.templates`` slots); None is the no-template path (every pair gets the learned "no template"
        term, exactly what K empty slots give). A head without templates refuses them.

        With ``cfg.prior_input``, ``prior_norm`` [B, L, L] is the separation prior's normalised log-distance
        for each pair (it knows the whole chain's length, which a crop or a causal layout cannot see): it
        enters the pair features and is the baseline the regression output corrects.
        """
        B, L, _ = feats.shape
        rm = residue_mask.to(feats.dtype)
        s = self.single(feats) * rm[..., None]                                   # [B, L, s]
        z = self.left(s)[:, :, None] + self.right(s)[:, None, :]                 # outer sum [B, L, L, c]
        z = z + self.prod_out(self.left_prod(s)[:, :, None] * self.right_prod(s)[:, None, :])
        z = z + self.relpos(config_relpos(self.cfg, L, feats.device))
        if self.prior_proj is not None:
            if prior_norm is None:
                raise ValueError("this head takes the separation prior as input (prior_input): pass prior_dist")
            z = z + self.prior_proj(prior_norm[..., None].to(z.dtype))
        if self.templates is not None:
            if templates is None:
                z = z + self.templates.no_template_term().to(z.dtype)
            else:
                k = templates["template_mask"].shape[1]
                if k != self.cfg.templates:
                    raise ValueError(f"this head takes {self.cfg.templates} template slots, the batch has {k}")
                z = z + self.templates(**templates).to(z.dtype)
        elif templates is not None:
            raise ValueError("this head has no template embedding (trained with --templates 0): pass no templates")
        pm = (rm[:, :, None] * rm[:, None, :])                                   # [B, L, L]
        m = pm[:, None]
        x = z.permute(0, 3, 1, 2) * m                                            # [B, c, L, L]
        for i, block in enumerate(self.blocks):
            x = block(x, m)
            if self.axial is not None:
                x = self.axial[i](x, m, residue_mask)
        x = 0.5 * (x + x.transpose(2, 3))                                        # symmetric pair tensor
        z = self.out_norm(x.permute(0, 2, 3, 1))                                 # [B, L, L, c]
        pooled = (z * pm[..., None]).sum(2) / pm.sum(2).clamp(min=1)[..., None]  # [B, L, c]
        per_residue = torch.cat([s, pooled], -1)                                 # [B, L, s + c]
        extra = {} if self.ss is None else {"ss_logits": self.ss(per_residue)}   # [B, L, 8]
        logits = self.distogram(z)                                               # [B, L, L, n_bins]
        base = 0.0 if prior_norm is None else prior_norm
        dist_norm = self.regress(z).squeeze(-1) + base                           # [B, L, L]
        if self.template_copy is not None and templates is not None:
            gate, vote, copied = self.template_copy(z, templates, self.cfg.n_bins)
            logits = logits + (gate[..., 1:] * self.template_copy.strength * vote).to(logits.dtype)
            dist_norm = dist_norm + (gate[..., 0] * (copied - base)).to(dist_norm.dtype)
        return {**extra,
            "distogram_logits": logits,
            "dist_norm": dist_norm,
            "pair_conf_logits": self.pair_conf(z),                               # [B, L, L, 5]
            "residue_conf_logits": self.res_conf(per_residue).squeeze(-1),          # [B, L]
        }

    # -- inference -------------------------------------------------------------------------------------
    def predict_numpy(self, out: dict[str, torch.Tensor], b: int, L: int,
                      stats: tuple[float, float]) -> dict[str, np.ndarray]:
        """Outputs of batch item ``b`` (first L residues) as NumPy arrays in Å / probabilities.

        ``pair_error_probs`` [L, L, 5]: probabilities of the error classes |predicted − true distance| <
        0.5, 1, 2, 4 Å and ≥ 4 Å (``ERROR_EDGES``); ``pair_confidence`` is their expected ``ERROR_SCORES``.
        """
        mu, sd = stats
        dn = out["dist_norm"][b, :L, :L].float()
        dist = torch.exp(dn * sd + mu)
        dist = 0.5 * (dist + dist.T)
        dist.fill_diagonal_(0.0)
        probs = torch.softmax(out["distogram_logits"][b, :L, :L].float(), -1)
        edges = self.bin_edges
        # P(d < 8 Å): bins entirely below the cutoff (edges <= cutoff) -> bins 0..k-1
        k = int((edges <= CONTACT_CUTOFF + 1e-6).sum().item())
        contact = probs[..., :k].sum(-1)
        perr = torch.softmax(out["pair_conf_logits"][b, :L, :L].float(), -1)        # [L, L, 5], symmetric
        pconf = perr @ torch.tensor(ERROR_SCORES, device=probs.device)
        rconf = torch.sigmoid(out["residue_conf_logits"][b, :L].float())
        return {"dist": dist.cpu().numpy().astype(np.float64), "contact_prob": contact.cpu().numpy(),
                "pair_confidence": pconf.cpu().numpy(), "residue_confidence": rconf.cpu().numpy(),
                "distogram_probs": probs.cpu().numpy(), "bin_edges": edges.cpu().numpy(),
                "pair_error_probs": perr.cpu().numpy(),
                **ss_probs_numpy(out, b, L)}


__all__ = ["DistanceHead", "ChannelLayerNorm", "ResidualConvBlock", "AxialAttention"]
