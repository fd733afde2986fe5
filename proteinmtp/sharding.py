"""Which records of a FASTA this process predicts: ``--num_shards K --shard_index I`` and the ranks of a
multi-process launcher (torchrun / accelerate launch)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from proteinmtp.fasta import InputError


@dataclass(frozen=True)
class Shard:
    """Which records of a FASTA this process predicts: record number n (1-based position in the file)
    belongs to shard ``(n - 1) % count``. Stable: it depends on the position only, never on the content,
    the lengths or what is already written. ``local_rank``: this process's rank on its node under a
    multi-process launcher (None otherwise)."""

    index: int = 0
    count: int = 1
    local_rank: int | None = None

    def holds(self, number: int) -> bool:
        return (number - 1) % self.count == self.index

    @property
    def label(self) -> str:
        """``shard-I-of-K`` (empty when there is a single shard)."""
        return "" if self.count == 1 else f"shard-{self.index}-of-{self.count}"


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"environment variable {name}={raw!r} is not an integer") from None


def resolve_shard(num_shards: int = 1, shard_index: int = 0, environ: Mapping[str, str] | None = None) -> Shard:
    """The shard of this process, from ``--num_shards K --shard_index I`` and the launcher's environment.

    Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` W > 1, ``RANK`` R, ``LOCAL_RANK``) each rank
    takes its share of shard I: shard ``I + K·R`` of ``K·W``, which holds exactly the records n of shard I
    (``(n-1) % K == I``) with ``((n-1) // K) % W == R``. So a job array of K tasks, each launching W ranks,
    covers every record once. InputError for an index outside 0..K-1 or a malformed environment.
    """
    env = os.environ if environ is None else environ
    if num_shards < 1:
        raise InputError(f"--num_shards must be ≥ 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise InputError(f"--shard_index must be in 0..{num_shards - 1} (--num_shards {num_shards}), got {shard_index}")
    world = _env_int(env, "WORLD_SIZE", 1)
    if world <= 1:
        return Shard(shard_index, num_shards)
    rank = _env_int(env, "RANK", 0)
    if not 0 <= rank < world:
        raise InputError(f"environment: RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    return Shard(shard_index + num_shards * rank, num_shards * world, local_rank=_env_int(env, "LOCAL_RANK", rank))

