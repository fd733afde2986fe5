"""Training: crops, collator, a short learning check, the CLI end to end (logs, checkpoints, resume after
interruptions, NaN stop, --use_4bit on CPU) and a 2-rank gloo DDP run (torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from proteinmtp import experiments, rundir
from proteinmtp.dataset import Sample, compute_global_stats
from proteinmtp.geometry import distance_matrix
from proteinmtp.model import ModelSpec, build_model, load_run
from proteinmtp.rundir import COMPLETE_MARKER, latest_complete_checkpoint
from proteinmtp.training import CropDataset, DistanceCollator
from tests.conftest import real_samples

REPO = Path(__file__).resolve().parents[1]


def test_crop_is_contiguous_and_collator_pads_with_nan():
    L = 30
    t = np.arange(L, dtype=float)
    ca = np.stack([t * 3.8, np.zeros(L), np.zeros(L)], 1)        # straight line: d_ij = 3.8 |i - j|
    ca[4] = np.nan
    seq = "ACDEFGHIKLMNPQRSTVWYACDEFGHIKL"
    s = Sample(id="x:A", sequence=seq, ca=ca, residue_ids=[str(i) for i in range(L)], source="", split="train")
    ds = CropDataset([s], max_len=10, random_crop=True)
    torch.manual_seed(0)
    starts = set()
    for _ in range(20):
        it = ds[0]
        start = seq.find(it["sequence"])
        assert len(it["sequence"]) == 10 and start >= 0
        np.testing.assert_array_equal(it["ca"], ca[start:start + 10])
        starts.add(start)
    assert len(starts) > 3                                       # random crops differ
    assert CropDataset([s], max_len=10, random_crop=False)[0]["sequence"] == seq[10:20]   # central crop
    # occasional longer crops: all of them with fraction 1, none with fraction 0, never for evaluation
    torch.manual_seed(1)
    assert {len(CropDataset([s], 10, long_len=16, long_fraction=1.0)[0]["sequence"]) for _ in range(5)} == {16}
    assert {len(CropDataset([s], 10, long_len=16, long_fraction=0.0)[0]["sequence"]) for _ in range(5)} == {10}
    assert len(CropDataset([s], 10, random_crop=False, long_len=16, long_fraction=1.0)[0]["sequence"]) == 10
    it = CropDataset([s], 10, long_len=16, long_fraction=1.0)[0]
    assert it["full_len"] == L and seq[it["start"]:it["start"] + 16] == it["sequence"]
    enc = build_enc()
    b = DistanceCollator(enc)([{"sequence": seq[:5], "ca": ca[:5]}, {"sequence": seq[:3], "ca": ca[:3]}])
    d = b["dist"]
    assert d.shape == (2, 5, 5) and torch.isnan(d[1, 3:, :]).all() and torch.isnan(d[1, :, 3:]).all()
    assert d[0, 0, 3].item() == pytest.approx(3.8 * 3) and torch.isnan(d[0, 4, 0])
    np.testing.assert_allclose(distance_matrix(ca[:3]), d[1, :3, :3].numpy(), rtol=1e-6)


def build_enc():
    from proteinmtp.layouts import ResidueEncoder
    from proteinmtp.tiny import build_tokenizer

    return ResidueEncoder(build_tokenizer(), "echo")


@pytest.mark.slow
def test_short_overfit_drops_training_mae(tiny, test_data_dir):
    """A short version of benchmarks/overfit.py: 4 real chains x 24 residues, training MAE falls by > 50%."""
    torch.manual_seed(0)
    samples = real_samples(test_data_dir, 4, 24)
    gs = compute_global_stats(samples)
    model = build_model(ModelSpec(base_model=str(tiny), layout="echo", finetune="full", global_stats=gs,
                                  head={"pair_dim": 32, "single_dim": 32, "prior_input": False}))
    items = [{"sequence": s.sequence, "ca": s.ca} for s in samples]
    batch = DistanceCollator(model.encoder)(items)

    def mae() -> float:
        model.eval()
        with torch.no_grad():
            out = model(**batch)
        model.train()
        errs = []
        for b, it in enumerate(items):
            L = len(it["sequence"])
            pred = model.head.predict_numpy(out, b, L, (gs["log_dist_mean"], gs["log_dist_std"]))["dist"]
            true = distance_matrix(it["ca"])
            iu = np.triu_indices(L, 1)
            errs.append(np.nanmean(np.abs(pred[iu] - true[iu])))
        return float(np.mean(errs))

    before = mae()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model(**batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mae()
    assert after < 0.5 * before, (before, after)


def cli_args(tiny, data, out, *extra) -> list[str]:
    return ["--train_data", str(data / "train.json"), "--val_data", str(data / "val.json"),
            "--model_name", str(tiny), "--output_dir", str(out), "--finetune", "full", "--max_seq_len", "24",
            "--pair_dim", "16", "--single_dim", "16", "--dilations", "1,2", "--logging_steps", "1",
            "--eval_steps", "2", "--save_steps", "2", "--warmup_steps", "1", "--learning_rate", "1e-3",
            "--no_tqdm", *extra]


def run_cli(args: list[str]) -> int:
    import train_distmat

    try:
        return train_distmat.main(args)
    except SystemExit as e:
        return int(e.code)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_cli_trains_logs_checkpoints_and_resumes(tiny, data, tmp_path):
    run = tmp_path / "run"
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "4")) == 0
    cfg = json.loads((run / "training_config.json").read_text())
    assert cfg["base_model"] == str(tiny) and cfg["layout"] == "direct" and cfg["args"]["max_steps"] == 4
    assert set(cfg["global_stats"]) >= {"log_dist_mean", "log_dist_std"} and cfg["libraries"]["torch"]
    assert (run / "prior.json").is_file() and (run / "tokenizer").is_dir() and (run / "head.safetensors").is_file()
    rows = read_jsonl(run / "train_log.jsonl")
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_mae" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and all("learning_rate" in r for r in steps)
    assert [r["step"] for r in evals] == [2, 4] and all(r["eval_mae"] > 0 for r in evals)
    assert all(f"eval_mae_{k}" in evals[0] for k in ("short", "medium")) and "eval_precision_L5_long" in evals[0]
    assert "samples/s" in (run / "train.log").read_text()
    for step in (2, 4):
        assert (run / f"checkpoint-{step}" / COMPLETE_MARKER).is_file()
    assert latest_complete_checkpoint(run).name == "checkpoint-4"
    pred = load_run(run).predict(["MKTAYIAKQR"])[0]
    assert pred.dist.shape == (10, 10)

    # interrupted run: every invocation stops after one step (time limit) and saves; a half-written
    # checkpoint (no completion marker, as after kill -9) must be skipped and removed
    run2 = tmp_path / "run2"
    args2 = cli_args(tiny, data, run2, "--max_steps", "4", "--max_train_minutes", "1e-9")
    n_invocations = 0
    while True:
        assert run_cli(args2) == 0
        n_invocations += 1
        if n_invocations == 1:                      # stopped by the time limit: not finished, "stopped" logged
            assert not experiments.training_status(run2)["finished"] and not (run2 / "training_complete.json").exists()
            assert read_jsonl(run2 / "train_log.jsonl")[-1]["event"] == "stopped"
        if n_invocations == 2:
            broken = run2 / "checkpoint-99"
            broken.mkdir()
            (broken / "head.safetensors").write_bytes(b"\x00" * 10)
        state = latest_complete_checkpoint(run2)
        if state is not None and state.name == "checkpoint-4":
            break
        assert n_invocations < 8
    assert n_invocations == 4
    assert not (run2 / "checkpoint-99").exists()
    rows2 = read_jsonl(run2 / "train_log.jsonl")
    assert [r["step"] for r in rows2 if "loss" in r][-1] == 4
    assert sum(r.get("event") == "resumed" for r in rows2) == 3
    # a finished run re-run: nothing more to do, still step 4
    assert run_cli(args2) == 0
    assert json.loads((run2 / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    assert not (run2 / "checkpoint-5").exists()


def snapshot(run: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``run`` but the lock: relative path -> (size, mtime in ns)."""
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns) for p in run.rglob("*")
            if p.is_file() and p.name != "train.lock"}


def test_finished_run_rerun_is_a_noop(tiny, data, tmp_path, capsys):
    """Re-running a finished command trains nothing and touches nothing (it used to train step 6, 7, ...
    and rotate the real checkpoints away); killed before the final save, the re-run only writes that save."""
    from safetensors.torch import load_file

    run = tmp_path / "run"
    args = cli_args(tiny, data, run, "--max_steps", "5", "--eval_steps", "100")
    assert run_cli(args) == 0
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-5"]
    assert experiments.training_status(run)["finished"]
    before = snapshot(run)
    capsys.readouterr()
    assert run_cli(args) == 0
    assert "is complete: trained to step 5" in capsys.readouterr().err
    assert snapshot(run) == before
    # the process ended after checkpoint-5 but before the final save (no marker, no final weights)
    (run / "training_complete.json").unlink()
    (run / "head.safetensors").unlink()
    assert run_cli(args) == 0
    assert "final weights written from" in capsys.readouterr().err
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-5"]
    final, ckpt = load_file(run / "head.safetensors"), load_file(run / "checkpoint-5" / "head.safetensors")
    assert final.keys() == ckpt.keys() and all(torch.equal(final[k], ckpt[k]) for k in final)
    assert (run / "training_complete.json").is_file()
    assert sum(r.get("event") == "resumed" for r in read_jsonl(run / "train_log.jsonl")) == 0


def test_resume_with_a_changed_model_is_refused_before_writing(tiny, data, tmp_path, capsys):
    """A changed architecture flag used to overwrite training_config.json, then fail with a size mismatch
    (and the old run no longer loaded). Now the stored run is compared whole first and stays untouched."""
    run = tmp_path / "run"
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "2", "--eval_steps", "100")) == 0
    changed = cli_args(tiny, data, run, "--max_steps", "4", "--eval_steps", "100", "--single_dim", "8")
    before = snapshot(run)
    capsys.readouterr()
    assert run_cli(changed) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"error: {run} holds a run with different settings (--single_dim: 16 → 8)" in err[0]
    assert snapshot(run) == before
    load_run(run)
    # a run stored by a version that did not record the flag: the whole model spec still catches it
    cfg_path = run / "training_config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["args"]["single_dim"]
    cfg_path.write_text(json.dumps(cfg))
    before = snapshot(run)
    assert run_cli(changed) == 2
    assert "(model.head.single_dim: 16 → 8)" in capsys.readouterr().err
    assert snapshot(run) == before
    # flags on the allow-list may change: this resumes from checkpoint-2 and trains to step 3
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "3", "--eval_steps", "100", "--logging_steps", "2")) == 0
    assert json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3


@pytest.mark.parametrize("flags, named", [
    (("--learning_rate", "-1"), "--learning_rate"), (("--head_learning_rate", "0"), "--head_learning_rate"),
    (("--learning_rate", "nan"), "--learning_rate"), (("--max_steps", "-5"), "--max_steps"),
    (("--max_steps", "0", "--num_epochs", "0"), "--num_epochs"),
    (("--per_device_train_batch_size", "0"), "--per_device_train_batch_size"),
    (("--gradient_accumulation_steps", "-1"), "--gradient_accumulation_steps"),
    (("--long_crop_fraction", "1.5"), "--long_crop_fraction"), (("--lora_dropout", "1"), "--lora_dropout"),
    (("--long_crop_len", "10"), "--long_crop_len"), (("--save_steps", "0"), "--save_steps"),
    (("--warmup_steps", "-1"), "--warmup_steps"), (("--max_train_minutes", "-2"), "--max_train_minutes"),
    (("--dilations", "1,0"), "--dilations"), (("--feature_layers", "top"), "--feature_layers"),
    (("--max_eval_len", "1"), "--max_eval_len"), (("--single_dim", "0"), "--single_dim"),
])
def test_bad_arguments_are_refused_before_anything_is_made(tiny, data, tmp_path, capsys, flags, named):
    run = tmp_path / "run"
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "2", *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {named} must ")
    assert not run.exists()


def test_failed_start_leaves_nothing_that_blocks_the_corrected_rerun(tiny, data, tmp_path, capsys):
    """A failure while building the model leaves no directory; a start that failed after writing its config
    but before its first checkpoint (here: NaN loss) does not bind the corrected rerun."""
    run = tmp_path / "run"
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "2", "--feature_layers", "-1,-9")) == 2
    assert "--feature_layers" in capsys.readouterr().err and not run.exists()
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "6", "--save_steps", "100", "--eval_steps", "100",
                            "--learning_rate", "1e30", "--head_learning_rate", "1e30", "--warmup_steps", "0",
                            "--max_grad_norm", "0")) == 1
    assert (run / "training_config.json").is_file() and latest_complete_checkpoint(run) is None
    capsys.readouterr()
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "2", "--eval_steps", "100", "--pair_dim", "8")) == 0
    assert "starting over" in capsys.readouterr().err
    cfg = json.loads((run / "training_config.json").read_text())
    assert cfg["args"]["pair_dim"] == 8 and cfg["args"]["learning_rate"] == 1e-3
    assert latest_complete_checkpoint(run).name == "checkpoint-2"
    # a run whose checkpoints were deleted but whose final weights remain is never trained over
    import shutil

    shutil.rmtree(run / "checkpoint-2")
    (run / "training_complete.json").unlink()
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "4", "--eval_steps", "100", "--pair_dim", "8")) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_same_experiment_name_twice_keeps_both_records(tiny, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                      # records go to ./experiments
    for name in ("a", "b"):
        assert run_cli(cli_args(tiny, data, tmp_path / name, "--max_steps", "1", "--eval_steps", "100",
                                "--experiment_name", "same")) == 0
    recs = sorted((tmp_path / "experiments").iterdir())
    assert [r.name.split("_", 1)[1] for r in recs] == ["same", "same_2"]
    for rec, name in zip(recs, "ab"):
        assert json.loads((rec / "config.json").read_text())["args"]["output_dir"] == str(tmp_path / name)
    # the first run, resumed to more steps, keeps (and refreshes) its own record
    assert run_cli(cli_args(tiny, data, tmp_path / "a", "--max_steps", "2", "--eval_steps", "100",
                            "--experiment_name", "same")) == 0
    assert sorted((tmp_path / "experiments").iterdir()) == recs
    assert "resumed at step 1" in (recs[0] / "training_log.txt").read_text()


def test_second_process_on_a_live_run_is_refused(tiny, data, tmp_path, capsys):
    """A live holder of RUN_DIR/train.lock refuses the start (nothing written); one killed with kill -9
    does not (the OS releases its flock)."""
    run = tmp_path / "run"
    run.mkdir()
    args = cli_args(tiny, data, run, "--max_steps", "2", "--eval_steps", "100")
    fd = rundir.lock_run_dir(run)                   # another open file description: conflicts like a process
    try:
        rc = run_cli(args)
    finally:
        rundir.unlock_run_dir(fd)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith(f"error: {run} is in use by another training process (pid {os.getpid()} ")
    assert sorted(p.name for p in run.iterdir()) == ["train.lock"]
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from proteinmtp import rundir; "
                               "rundir.lock_run_dir(sys.argv[1]); print('locked', flush=True); time.sleep(600)",
                               str(run)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert rundir.lock_holder(run)["pid"] == holder.pid and rundir.lock_holder(run)["alive"] is True
        assert run_cli(args) == 2
    finally:
        holder.kill()                              # SIGKILL: no clean-up in the holder
        holder.wait()
    assert rundir.lock_holder(run)["alive"] is False
    assert run_cli(args) == 0
    assert (run / "training_complete.json").is_file() and rundir.lock_holder(run)["pid"] == os.getpid()


def test_help_lists_the_heads_and_says_what_max_eval_len_does(capsys):
    import train_distmat
    from proteinmtp.heads import REGISTRY as HEADS

    with pytest.raises(SystemExit):
        train_distmat.parse_args(["--help"])
    out = capsys.readouterr().out
    text = " ".join(out.split())
    assert "--head_type {" + ",".join(sorted(HEADS)) + "}" in text and "coords" in HEADS
    assert "infer_distmat.py refuses longer sequences" in text and "use a central crop" not in text


def test_nan_loss_stops_with_clear_message(tiny, data, tmp_path, capsys):
    run = tmp_path / "nan"
    rc = run_cli(cli_args(tiny, data, run, "--max_steps", "6", "--save_steps", "1", "--eval_steps", "100",
                          "--learning_rate", "1e30", "--head_learning_rate", "1e30", "--warmup_steps", "0",
                          "--max_grad_norm", "0"))
    err = capsys.readouterr().err
    assert rc == 1 and "training loss became" in err
    last = latest_complete_checkpoint(run)
    assert last is not None
    load_run(last)                                   # the last good checkpoint still loads


def test_use_4bit_on_cpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    p = subprocess.run([sys.executable, str(REPO / "train_distmat.py"), "--train_data", "x.json",
                        "--output_dir", str(tmp_path / "r"), "--use_4bit"], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: --use_4bit needs a CUDA GPU (bitsandbytes NF4); on CPU "
                                             "drop the flag"]


@pytest.mark.slow
def test_ddp_two_ranks_gloo(tiny, data, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           str(REPO / "train_distmat.py"), *cli_args(tiny, data, run, "--max_steps", "4")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = json.loads((run / "training_config.json").read_text())
    assert cfg["world_size"] == 2
    state = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    rows = read_jsonl(run / "train_log.jsonl")
    assert len([r for r in rows if "loss" in r]) == 4           # only rank 0 writes the log
    pred = load_run(run).predict(["MKTAYIAKQR"])[0]
    assert np.isfinite(pred.dist).all()


def test_stop_flags_are_all_reduced_on_the_trainer_device(monkeypatch):
    """The stop flags (signal, time limit) are all-reduced with MAX as a tensor on ``args.device`` (NCCL
    refuses CPU tensors): a rank that saw nothing stops when another rank saw a signal, with its code."""
    from types import SimpleNamespace

    from proteinmtp import callbacks as C

    seen = []

    def fake_all_reduce(t, op):
        seen.append((t.device, op))
        t[0] = 15.0                                      # another rank received SIGTERM

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", fake_all_reduce)
    assert C.agree([0.0, 0.0], torch.device("cpu")) == [15.0, 0.0]
    assert seen == [(torch.device("cpu"), torch.distributed.ReduceOp.MAX)]
    devices = []
    monkeypatch.setattr(C, "agree", lambda values, device: devices.append(device) or [15.0, 0.0])
    signals = C.SignalStop()
    cb = C.StopCallback(minutes=0.0, signals=signals)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    cb.on_step_end(SimpleNamespace(device="cuda:3"), None, control)
    assert devices == ["cuda:3"] and control.should_training_stop and control.should_save
    assert cb.reason == "SIGTERM" and signals.exit_code == 143
    # the time limit alone: the same stop, reason "time", no exit code
    monkeypatch.setattr(C, "agree", lambda values, device: values)
    cb = C.StopCallback(minutes=1e-9, signals=C.SignalStop())
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    cb.on_step_end(SimpleNamespace(device="cpu"), None, control)
    assert cb.reason == "time" and control.should_training_stop and cb.signals.exit_code is None


def test_run_from_before_long_range_weight_joined_the_head_config_resumes(tiny, data, tmp_path, capsys):
    """A run written when --long_range_weight was only a flag (no model.head.long_range_weight stored)
    resumes with the same flags, and a changed weight is still refused (the flags are compared)."""
    run = tmp_path / "run"
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "2", "--long_range_weight", "3")) == 0
    cfg_path = run / "training_config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["model"]["head"].pop("long_range_weight") == 3.0
    assert cfg.pop("config_version") == rundir.CONFIG_VERSION            # a config of that time
    cfg_path.write_text(json.dumps(cfg))
    capsys.readouterr()
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "3", "--long_range_weight", "3")) == 0
    assert "resuming from" in capsys.readouterr().err
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "4", "--long_range_weight", "2")) == 2
    assert "--long_range_weight" in capsys.readouterr().err


def test_run_from_before_residue_case_resumes(tiny, data, tmp_path, capsys):
    """A run written before model.residue_case existed (letters were looked up as written) used to be refused
    as a changed spec ('' -> 'upper'); migrate() fills the field and it resumes."""
    run = tmp_path / "run"
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "2", "--eval_steps", "100")) == 0
    cfg_path = run / "training_config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["model"].pop("residue_case") == "upper" and cfg.pop("config_version") == rundir.CONFIG_VERSION
    cfg_path.write_text(json.dumps(cfg))
    capsys.readouterr()
    assert run_cli(cli_args(tiny, data, run, "--max_steps", "3", "--eval_steps", "100")) == 0
    assert f"resuming from {run / 'checkpoint-2'}" in capsys.readouterr().err
    stored = json.loads(cfg_path.read_text())
    assert stored["model"]["residue_case"] == "upper" and stored["config_version"] == rundir.CONFIG_VERSION


def test_run_stores_absolute_data_paths(tiny, data, tmp_path, monkeypatch):
    """--train_data given relative to the working directory: the run stores where it is, absolute and relative
    to the run, so evaluating from elsewhere finds the neighbour baseline's training set."""
    import shutil

    work = tmp_path / "work"
    (work / "d").mkdir(parents=True)
    for name in ("train.json", "val.json"):
        shutil.copy(data / name, work / "d" / name)
    monkeypatch.chdir(work)
    args = cli_args(tiny, Path("d"), Path("runs/r"), "--max_steps", "1", "--eval_steps", "100")
    assert run_cli(args) == 0
    cfg = json.loads((work / "runs" / "r" / "training_config.json").read_text())
    assert cfg["train_data"] == str(work / "d" / "train.json") and cfg["val_data"] == str(work / "d" / "val.json")
    assert cfg["train_data_from_run"] == "../../d/train.json" and cfg["args"]["train_data"] == "d/train.json"
    monkeypatch.chdir(tmp_path)
    assert rundir.train_data_path(work / "runs" / "r") == work / "d" / "train.json"
