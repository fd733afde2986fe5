"""Training options that had no test: the optimizer's parameter groups (head vs backbone learning rate,
no weight decay on norms, biases, learned vectors and the layer mix), --gradient_checkpointing, --bf16, and
refusing a --trust_remote_code run without the flag."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from proteinmtp import train_command
from proteinmtp.model import ModelSpec, build_model, load_run
from proteinmtp.rundir import RunLoadError
from tests.test_training import cli_args, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_distmat  # noqa: E402

GS = {"log_dist_mean": 2.6, "log_dist_std": 0.7}


def tiny_model(tiny, finetune="full", **spec):
    head = {"pair_dim": 8, "single_dim": 16, "dilations": (1,), "prior_input": False, "ss_weight": 0.0}
    return build_model(ModelSpec(base_model=str(tiny), finetune=finetune, global_stats=GS, head=head, **spec))


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_optimizer_groups_head_and_backbone_rates_and_no_decay(tiny, tmp_path, finetune):
    from transformers import TrainingArguments

    from proteinmtp.training import DistanceTrainer

    torch.manual_seed(0)
    model = tiny_model(tiny, finetune, layout="echo", feature_layers="-1,-2")
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=2e-4, weight_decay=0.05, use_cpu=True,
                             report_to="none")
    trainer = DistanceTrainer(model=model, args=args, head_learning_rate=3e-3)
    opt = trainer.create_optimizer()
    where = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert len(where) == sum(len(g["params"]) for g in opt.param_groups) == len(trainable)   # each once
    assert "placeholder_embed" not in trainable and id(named["placeholder_embed"]) not in where  # echo: unused

    def group(name):
        return where[id(named[name])]

    backbone = [n for n in trainable if n.startswith("backbone.")]
    assert backbone, "the backbone trains"
    for n in backbone:                 # backbone rate; decay on matrices only (LoRA A/B, projections)
        p = named[n]
        assert group(n) == (2e-4, 0.0 if p.ndim < 2 or "norm" in n.lower() else 0.05), n
    # the head's rate; by hand: which parameters are exempt from weight decay and why
    assert group("head.blocks.0.conv1.weight") == (3e-3, 0.05)              # a conv kernel decays
    assert group("head.blocks.0.conv1.bias") == (3e-3, 0.0)                 # bias
    assert group("head.single.0.weight") == (3e-3, 0.0)                     # LayerNorm scale
    assert group("head.relpos.weight") == (3e-3, 0.05)                      # an embedding table decays
    assert group("sep_embed") == (3e-3, 0.0)                                 # learned special-token vector
    assert group("layer_mix") == (3e-3, 0.0)                                 # layer-mix logits
    if finetune == "lora":
        assert all("lora_" in n for n in backbone)


def count_layer_calls(model) -> list[int]:
    """Calls of the first decoder layer's MLP (inside the checkpointed forward: transformers 5 checkpoints
    ``forward``, so the layer's own hooks stay outside the recomputation)."""
    bb = model.backbone.get_base_model() if hasattr(model.backbone, "get_base_model") else model.backbone
    calls = [0]
    # a pre-hook: the recomputation stops early, once the last tensor backward needs is rebuilt
    bb.layers[0].mlp.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_gradient_checkpointing_recomputes_the_backbone_and_keeps_the_gradients(tiny, tmp_path, finetune):
    """--gradient_checkpointing reaches the backbone (through train_distmat's flags): each decoder layer runs
    twice per training step (forward, then again in backward), and the gradients equal those without it."""
    grads, calls = {}, {}
    for gc in (False, True):
        argv = ["--train_data", "x.json", "--output_dir", str(tmp_path / "r"), "--model_name", str(tiny),
                "--finetune", finetune, "--pair_dim", "8", "--single_dim", "16", "--dilations", "1",
                "--no-prior_input", "--ss_weight", "0", "--lora_dropout", "0"] + (["--gradient_checkpointing"] if gc else [])
        args = train_distmat.parse_args(argv)
        dil = train_command.check_args(args)
        torch.manual_seed(0)
        model, _, _ = train_command.build_training_model(args, train_command.model_spec(args, dil, GS))
        model.train()
        n = count_layer_calls(model)
        batch = model.encoder.collate(["MKTAYIAKQRQISF", "GSHMLE"])
        d = torch.rand(2, 14, 14) * 10 + 3
        model(**batch, dist=(d + d.transpose(1, 2)) / 2)["loss"].backward()
        calls[gc] = n[0]
        grads[gc] = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert calls == {False: 1, True: 2}
    assert grads[True].keys() == grads[False].keys() and any(k.startswith("backbone.") for k in grads[True])
    for k in grads[True]:
        torch.testing.assert_close(grads[True][k], grads[False][k], rtol=1e-5, atol=1e-7, msg=k)


def test_bf16_flag_sets_mixed_precision(tiny, data, tmp_path, monkeypatch):
    """--bf16 yes trains under bf16 autocast (CPU here), no in fp32; auto follows the GPU's bf16 support."""
    from proteinmtp import model as M

    assert train_command.use_bf16("yes") is True and train_command.use_bf16("no") is False
    assert train_command.use_bf16("auto") is bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    seen = []
    forward = M.DistanceModel.forward

    def spy(self, *a, **k):
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        seen.append((torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)) if self.training else None)
        return forward(self, *a, **k)

    monkeypatch.setattr(M.DistanceModel, "forward", spy)
    for choice, on in (("yes", True), ("no", False)):
        seen.clear()
        run = tmp_path / choice
        assert run_cli(cli_args(tiny, data, run, "--max_steps", "2", "--eval_steps", "100", "--bf16", choice)) == 0
        steps = [s for s in seen if s is not None]
        assert len(steps) == 2 and all(s[0] is on for s in steps), (choice, seen)
        if on:
            assert all(s[1] == torch.bfloat16 for s in steps)
        assert json.loads((run / "training_config.json").read_text())["args"]["bf16"] == choice


def test_a_trust_remote_code_run_is_refused_without_the_flag(tiny, data, tmp_path, capsys):
    """A run trained with --trust_remote_code loads and resumes only with the flag again: load_run refuses it
    with one line, and a resume without the flag is refused before anything is written."""
    run = tmp_path / "run"
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "2", "--eval_steps", "100", "--trust_remote_code")) == 0
    assert json.loads((run / "training_config.json").read_text())["model"]["trust_remote_code"] is True
    with pytest.raises(RunLoadError, match="was trained with --trust_remote_code; load it with --trust_remote_code"):
        load_run(run)
    assert load_run(run, trust_remote_code=True).predict(["MKTAYIAKQR"])[0].dist.shape == (10, 10)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "train.lock"}
    capsys.readouterr()
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "3", "--eval_steps", "100")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust_remote_code: True → False" in err[0]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "train.lock"} == before
