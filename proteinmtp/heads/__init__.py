"""Heads: per-residue backbone features [B, L, H] -> distances (and confidences). One module per head; the
shared pieces (HeadConfig, relative positions, pair weights, lDDT-like targets, the head protocol) are in
``heads.common``.

``REGISTRY`` maps ``HeadConfig.head_type`` to the head class; a new head is one module plus one line here.
"""

from __future__ import annotations

from torch import nn

from proteinmtp.heads.common import HeadConfig
from proteinmtp.heads.coords import CoordinateHead
from proteinmtp.heads.distance import DistanceHead

REGISTRY: dict[str, type[nn.Module]] = {
    "distance": DistanceHead,     # v2: pair tensor -> distogram, log-distance, confidences (the default)
    "coords": CoordinateHead,     # v1: Cα coordinates directly, distances derived
}


def build_head(in_dim: int, cfg: HeadConfig) -> nn.Module:
    """The head ``cfg.head_type`` for features of width ``in_dim``; ValueError for an unknown name."""
    if cfg.head_type not in REGISTRY:
        raise ValueError(f"unknown head_type {cfg.head_type!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[cfg.head_type](in_dim, cfg)


__all__ = ["REGISTRY", "HeadConfig", "DistanceHead", "CoordinateHead", "build_head"]
