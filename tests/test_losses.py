"""Loss terms (proteinmtp.heads.losses): named, weighted from the head config, summed in one place, reported
in the training log; the SS term comes from the model like every other term (it used to be added by the
trainer, so evaluation and any other caller of the model got a loss without it)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from proteinmtp.heads import REGISTRY, HeadConfig, build_head
from proteinmtp.heads.losses import TERMS, LossTargets, head_loss, term_weight
from proteinmtp.secondary import IGNORE_INDEX
from tests.conftest import helix_ca, real_samples
from tests.test_training import cli_args, read_jsonl, run_cli

STATS = (torch.tensor(2.6), torch.tensor(0.7))


def targets(L: int = 12, labels: bool = True) -> LossTargets:
    ca = helix_ca(L)
    d = torch.tensor(np.linalg.norm(ca[:, None] - ca[None], axis=-1), dtype=torch.float32)[None]
    valid = ~torch.eye(L, dtype=torch.bool)[None]
    ss = torch.tensor([[0, 0, 0, 2, 2, 7, 7, IGNORE_INDEX, 0, 1, 3, 4][:L]]) if labels else None
    return LossTargets(d, valid, STATS, ss_labels=ss)


@pytest.mark.parametrize("head_type", sorted(REGISTRY))
def test_total_is_the_config_weighted_sum_of_the_named_terms(head_type):
    torch.manual_seed(0)
    cfg = HeadConfig(head_type=head_type, pair_dim=8, single_dim=16, dilations=(1,), axial_heads=2,
                     prior_input=False, distogram_weight=2.0, regression_weight=0.5, conf_weight=0.3,
                     rmsd_weight=0.25, ss_weight=0.7)
    head = build_head(8, cfg)
    t = targets()
    out = head(torch.randn(1, 12, 8), torch.ones(1, 12, dtype=torch.bool))
    got = head_loss(head, out, t)
    names = [n for n in head.loss_terms]
    assert set(names) <= set(TERMS) and sorted(got) == sorted(["loss", *(f"loss_{n}" for n in names)])
    weights = {"distogram": 2.0, "regression": 0.5, "pair_conf": 0.3, "residue_conf": 0.3, "rmsd": 0.25, "ss": 0.7}
    assert {n: term_weight(n, cfg) for n in names} == {n: weights[n] for n in names}
    expect = sum(weights[n] * got[f"loss_{n}"].item() for n in names)
    assert got["loss"].item() == pytest.approx(expect, rel=1e-6)
    # a term of weight 0 is neither computed nor reported; no SS labels: no SS term
    zero = head_loss(build_head(8, replace(cfg, regression_weight=0.0)), out, t)
    assert "loss_regression" not in zero
    assert "loss_ss" not in head_loss(head, out, targets(labels=False))


def test_model_adds_the_ss_term_from_the_batch_labels(tiny):
    """DistanceModel.forward with ss_labels: loss = distance terms + ss_weight x loss_ss (before, the labels
    were ignored by the model and only the Trainer added the term)."""
    from proteinmtp.model import ModelSpec, build_model

    torch.manual_seed(0)
    head = asdict(HeadConfig(pair_dim=8, single_dim=16, dilations=(1,), prior_input=False, ss_weight=0.5))
    model = build_model(ModelSpec(base_model=str(tiny), finetune="full", head=head,
                                  global_stats={"log_dist_mean": 2.6, "log_dist_std": 0.7})).eval()
    seq = "MKTAYIAKQR"
    batch = model.encoder.collate([seq])
    t = targets(10)
    with torch.no_grad():
        plain = model(**batch, dist=t.dist)
        with_ss = model(**batch, dist=t.dist, ss_labels=t.ss_labels)
    assert "loss_ss" not in plain and float(with_ss["loss_ss"]) > 0
    assert float(with_ss["loss"]) == pytest.approx(float(plain["loss"]) + 0.5 * float(with_ss["loss_ss"]), rel=1e-6)


def test_every_term_is_in_the_training_log(tiny, test_data_dir, tmp_path):
    """train_log.jsonl and train.log carry each term of the head (the SS term with ss8 labels)."""
    from proteinmtp.dataset import compute_global_stats, save_dataset

    samples = real_samples(test_data_dir, 4, 30)
    for s in samples:
        s.ss8 = ("HHHHEEEE--TS" * 3)[:len(s.sequence)]
    save_dataset(tmp_path / "train.json", samples, compute_global_stats(samples), {})
    run = tmp_path / "run"
    args = cli_args(tiny, tmp_path, run, "--max_steps", "2", "--eval_steps", "100")
    args[args.index("--val_data"):args.index("--val_data") + 2] = []
    assert run_cli(args) == 0
    cfg = json.loads((run / "training_config.json").read_text())["model"]["head"]
    assert cfg["ss_weight"] == 0.5 and cfg["distogram_weight"] == 1.0
    rows = [r for r in read_jsonl(run / "train_log.jsonl") if "loss" in r]
    from proteinmtp.heads.distance import DistanceHead

    weights = {n: term_weight(n, HeadConfig.from_dict(cfg)) for n in DistanceHead.loss_terms}
    for r in rows:
        assert all(f"loss_{n}" in r for n in DistanceHead.loss_terms), r
        # the logged loss is the weighted sum of the logged terms (one step per log row; terms rounded to 1e-5)
        assert r["loss"] == pytest.approx(sum(w * r[f"loss_{n}"] for n, w in weights.items()), abs=1e-4)
    line = next(s for s in (run / "train.log").read_text().splitlines() if " step 2/2 " in s)
    assert all(f"{n} " in line for n in DistanceHead.loss_terms), line
