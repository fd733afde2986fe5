"""In-training evaluation sharded across ranks: the shares partition the split, their sums add up to the
single-process evaluation, and 2 gloo ranks (torchrun) return the 1-process metrics on every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from proteinmtp import dataio as D
from proteinmtp import shards as S
from proteinmtp.dataset import Sample, save_dataset
from proteinmtp.model import ModelSpec, build_model
from proteinmtp.training import SUM_KEYS, DistanceCollator, evaluate_samples, evaluate_sums, rank_share

REPO = Path(__file__).resolve().parents[1]
GS = {"log_dist_mean": 2.5, "log_dist_std": 0.6}


def _samples() -> list[Sample]:
    out = []
    for k, L in enumerate((9, 31, 14, 40, 22, 17, 35)):
        rng = np.random.default_rng(k)
        ca = np.round(np.cumsum(rng.normal(size=(L, 3)) * 2.2, axis=0), 3)
        ca[k % L] = np.nan
        out.append(Sample(id=f"c{k}:A", sequence="".join("ACDEFGHIKLMNPQRSTVWY"[i % 20] for i in range(k, k + L)),
                          ca=ca, residue_ids=[str(i) for i in range(L)], source="x", split="val"))
    return out


def _model(tiny: Path):
    torch.manual_seed(0)
    return build_model(ModelSpec(base_model=str(tiny), layout="direct", finetune="full", global_stats=GS,
                                 head={"pair_dim": 8, "single_dim": 16, "dilations": (1,), "prior_input": False}))


def test_rank_shares_partition_and_their_sums_add_up(tiny, tmp_path: Path) -> None:
    samples = _samples()
    S.save_shards(tmp_path / "v", samples, GS, {}, shard_mb=0.002)
    lazy = S.open_shards(tmp_path / "v").samples
    for world in (2, 3):
        ids = [s.id for r in range(world) for s in rank_share(samples, r, world)]
        assert sorted(ids) == sorted(s.id for s in samples)                    # disjoint, complete
        assert [s.id for s in rank_share(lazy, 1, world)] == [s.id for s in rank_share(samples, 1, world)]
    model = _model(tiny)
    collate = DistanceCollator(model.encoder)
    whole = evaluate_samples(model, samples, 32, collate)
    parts = [evaluate_sums(model, rank_share(lazy, r, 2), 32, collate) for r in range(2)]
    merged = {k: sum(p[0].get(k, 0.0) for p in parts) / sum(p[1].get(k, 0) for p in parts)
              for k in SUM_KEYS if any(k in p[1] for p in parts)}
    assert set(merged) == set(whole) and "mae" in whole and "precision_L5_long" in whole
    for k in whole:
        assert merged[k] == pytest.approx(whole[k], rel=1e-9, abs=1e-12), k


SCRIPT = """
import json, os, sys
import torch
sys.path.insert(0, {repo!r})
torch.distributed.init_process_group("gloo")
from tests.test_eval_sharding import _model
from proteinmtp.shards import open_shards
from proteinmtp.training import DistanceCollator, evaluate_distributed
model = _model({tiny!r})
m = evaluate_distributed(model, open_shards({data!r}).samples, 32, DistanceCollator(model.encoder))
rank = torch.distributed.get_rank()
open(os.path.join({out!r}, f"rank{{rank}}.json"), "w").write(json.dumps(m))
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_metrics(tiny, tmp_path: Path) -> None:
    samples = _samples()
    save_dataset(tmp_path / "v.json", samples, GS, {})
    D.convert(tmp_path / "v.json", tmp_path / "v.shards", shard_mb=0.002)
    script = tmp_path / "ev.py"
    script.write_text(SCRIPT.format(repo=str(REPO), tiny=str(tiny), data=str(tmp_path / "v.shards"),
                                    out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29547", str(script)], capture_output=True, text=True, cwd=REPO,
                       timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    model = _model(tiny)
    whole = evaluate_samples(model, samples, 32, DistanceCollator(model.encoder))
    for r in range(2):
        got = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert set(got) == set(whole)
        for k in whole:
            assert got[k] == pytest.approx(whole[k], rel=1e-6, abs=1e-9), (r, k)


@pytest.mark.slow
def test_ddp_training_on_binary_data_with_loader_workers(tiny, tmp_path: Path) -> None:
    """torchrun, 2 gloo ranks, binary train/val splits, --dataloader_workers 1: trains, evaluates the whole
    split (each rank its share; the logged count is the split's), and the run predicts."""
    samples = _samples()
    for s in samples:
        s.split = "train"
    from proteinmtp.dataset import compute_global_stats
    from proteinmtp.model import load_run

    gs = compute_global_stats(samples)
    S.save_shards(tmp_path / "train.shards", samples, gs, {}, shard_mb=0.002)
    S.save_shards(tmp_path / "val.shards", samples[:5], gs, {}, shard_mb=0.002)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29549",
           str(REPO / "train_distmat.py"), "--train_data", str(tmp_path / "train.shards"),
           "--val_data", str(tmp_path / "val.shards"), "--model_name", str(tiny), "--output_dir", str(run),
           "--finetune", "full", "--max_seq_len", "24", "--pair_dim", "8", "--single_dim", "16",
           "--dilations", "1", "--logging_steps", "1", "--eval_steps", "2", "--save_steps", "2",
           "--warmup_steps", "1", "--max_steps", "2", "--dataloader_workers", "1", "--no_tqdm"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = json.loads((run / "training_config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["n_train_chains"] == 7 and cfg["args"]["dataloader_workers"] == 1
    rows = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines() if x.strip()]
    evals = [r for r in rows if "eval_mae" in r]
    assert evals and evals[-1]["eval_n_chains"] == 5 and np.isfinite(evals[-1]["eval_mae"])
    assert np.isfinite(load_run(run).predict(["MKTAYIAKQR"])[0].dist).all()
