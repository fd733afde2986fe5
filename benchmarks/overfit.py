"""Overfit benchmark: a tiny model must drive the TRAINING distance MAE on 8 real chains below 1 Å.

    python benchmarks/overfit.py [--steps 600] [--crop 64] [--layout echo]

Chains: the first 8 distinct protein chains with >= 20 residues among tests/data/*.gz (committed),
first --crop residues of each. Full fine-tuning of a tiny Qwen2 (hidden 128, 4 layers) + the default
pair head, AdamW, the whole set as one padded batch per step. Prints the MAE curve; writes
benchmarks/results/overfit.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from proteinmtp.dataset import Sample, compute_global_stats
from proteinmtp.geometry import distance_matrix
from proteinmtp.model import ModelSpec, build_model
from proteinmtp.structure import read_structure
from proteinmtp.tiny import write_tiny
from proteinmtp.training import DistanceCollator

REPO = Path(__file__).resolve().parents[1]


def real_chains(n: int = 8, crop: int = 64, min_len: int = 20) -> list[Sample]:
    """First n distinct chains (>= min_len residues) of the committed test structures, cut to crop."""
    out, seen = [], set()
    for f in sorted((REPO / "tests" / "data").glob("*.gz")):
        try:
            chains = read_structure(f)
        except ValueError:
            continue
        for c in chains:
            if len(c.sequence) < min_len or c.sequence in seen:
                continue
            seen.add(c.sequence)
            out.append(Sample(id=c.id, sequence=c.sequence[:crop], ca=c.ca[:crop], residue_ids=list(c.residue_ids[:crop]),
                              source=str(f.name), split="train"))
            if len(out) == n:
                return out
    return out


def training_mae(model, batch, items) -> float:
    """Mean over chains of the MAE (Å) of the regression distances over pairs i<j with both Cα."""
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    model.train()
    stats = (float(model.log_dist_mean), float(model.log_dist_std))
    maes = []
    for b, it in enumerate(items):
        L = len(it["sequence"])
        pred = model.head.predict_numpy(out, b, L, stats)["dist"]
        true = distance_matrix(it["ca"])
        iu = np.triu_indices(L, 1)
        ok = np.isfinite(true[iu])
        maes.append(np.abs(pred[iu][ok] - true[iu][ok]).mean())
    return float(np.mean(maes))


def overfit(steps: int = 600, crop: int = 64, layout: str = "echo", lr: float = 2e-3, seed: int = 0,
            target: float = 1.0, eval_every: int = 25, pair_dim: int = 64, log=print) -> dict:
    torch.manual_seed(seed)
    samples = real_chains(8, crop)
    gs = compute_global_stats(samples)
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny(tmp, "qwen2", seed=seed)
        spec = ModelSpec(base_model=tmp, layout=layout, finetune="full", global_stats=gs,
                         head={"pair_dim": pair_dim, "prior_input": False})
        model = build_model(spec)
    items = [{"sequence": s.sequence, "ca": s.ca} for s in samples]
    batch = DistanceCollator(model.encoder)(items)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    curve, t0, reached = [], time.time(), None
    for step in range(1, steps + 1):
        loss = model(**batch)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == steps:
            mae = training_mae(model, batch, items)
            curve.append({"step": step, "loss": float(loss.detach()), "train_mae": mae, "seconds": time.time() - t0})
            log(f"step {step:4d}  loss {float(loss.detach()):.4f}  train MAE {mae:.3f} Å  ({time.time() - t0:.0f} s)")
            if mae < target and reached is None:
                reached = step
                break
    return {"n_chains": len(samples), "lengths": [len(s.sequence) for s in samples], "layout": layout,
            "pair_dim": pair_dim,
            "lr": lr, "target_mae": target, "reached_at_step": reached, "final_train_mae": curve[-1]["train_mae"],
            "seconds": time.time() - t0, "torch_threads": torch.get_num_threads(), "curve": curve}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=600, help="maximum optimizer steps")
    p.add_argument("--crop", type=int, default=64, help="residues kept per chain")
    p.add_argument("--layout", default="echo", choices=("placeholder", "echo", "direct"), help="residue layout")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--pair_dim", type=int, default=64, help="channels of the pair tensor")
    p.add_argument("--eval_every", type=int, default=25, help="measure the training MAE every N steps")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "overfit.json"), help="JSON output")
    args = p.parse_args()
    res = overfit(args.steps, args.crop, args.layout, args.lr, args.seed, eval_every=args.eval_every,
                  pair_dim=args.pair_dim)
    print(f"\n{'chains':>6} {'layout':>8} {'reached <1 Å at step':>22} {'final MAE Å':>12} {'seconds':>8}")
    print(f"{res['n_chains']:>6} {res['layout']:>8} {str(res['reached_at_step']):>22} "
          f"{res['final_train_mae']:>12.3f} {res['seconds']:>8.0f}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
