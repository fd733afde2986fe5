"""Batching of sequences into forward passes: length-sorted, under a sequence count and a residue² budget.

A leaf module (no package import): the model's ``LoadedRun.predict`` and the inference pipeline both cut
their inputs with :func:`length_batches`, so the model layer needs nothing from the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence


def length_batches(lengths: Sequence[int], batch_size: int, max_residues2: int | None = None) -> list[list[int]]:
    """Indices into ``lengths`` grouped into forward passes, shortest first (ties in input order).

    A batch holds at most ``batch_size`` sequences and, with ``max_residues2``, at most that many padded
    pair positions: (sequences in the batch) × (its longest length)², the size of the [B, L, L] pair
    tensors the head builds. A sequence that alone exceeds the budget is a batch of its own.
    """
    bs = max(1, int(batch_size))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: lengths[k]):
        n = len(cur) + 1
        if cur and (n > bs or (max_residues2 is not None and n * lengths[i] ** 2 > max_residues2)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
