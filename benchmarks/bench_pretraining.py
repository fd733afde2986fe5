"""Does a text-pretrained model's hidden state carry protein structure? Five arms, same CPU budget, 3 seeds.

    python benchmarks/bench_pretraining.py --data_dir build/full          # the experiment (~1 h on 2 cores)
    python benchmarks/bench_pretraining.py --quick                        # smoke version on the demo data

Layer probe of frozen LLMs (issue 22; ``--steps`` > 0: every run exactly that many optimizer steps):

    python -m proteinmtp.weights fetch qwen2.5-coder-0.5b && python -m proteinmtp.weights fetch smollm2-135m
    python benchmarks/bench_pretraining.py --data_dir build/full --steps 1600 --long_steps 6400 --speed \
        --arms qwen25_text_frozen,qwen25_random_frozen,smollm2_text_frozen,smollm2_random_frozen,a_text_frozen,b_random_frozen

  qwen25_text_frozen / qwen25_random_frozen    Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, dequantised) / same
                                               config, the architecture's own init seeded by the run's seed
  smollm2_text_frozen / smollm2_random_frozen  SmolLM2-135M-Instruct (Q4_1 GGUF) / random, likewise
  a_text_frozen / b_random_frozen              MiniLM as below, at the same steps
  Per arm: (1) one backbone pass per training chain (bf16 autocast by default) caches every probed hidden
  state (every 4th and the last; ``--layers``) under each single-layer feature-cache key; (2) one run per
  layer, seed 0, evaluated on the test chains (the curve) and on ``--n_val`` validation chains, which pick
  the best layer (``--select_metric``); (3) the other ``--seeds`` at that layer (a random arm's backbone
  is re-drawn per seed, so its features are extracted again); then (4) ``--precision_check``: that arm
  at its best layer with fp32 features (the bf16 check, paired); (5) ``--long_steps``: one long run per
  arm at its best layer. Every run is its own directory under WORK/probe/ with result.json, skipped when
  present, and the JSON is rewritten after each run, so the experiment resumes where it stopped. The GGUF
  weights are the models' real weights up to 4-bit quantisation noise.

Arms (all with the default distance head, the ``direct`` layout and the separation prior as head input):
  a_text_frozen     all-MiniLM-L6-v2 (text-pretrained BERT, 22.7 M parameters), frozen; head only
  b_random_frozen   the same architecture at its own random initialisation, frozen; head only
  c_text_finetuned  MiniLM text-pretrained, fully fine-tuned (backbone LR --lr_finetune)
  d_random_trained  MiniLM random init, fully trained (backbone LR --lr_scratch)
  e_tiny_qwen       the demo's tiny Qwen2 (1.4 M parameters) from scratch (LR 1e-3, today's recipe)

Budget: every run gets the same CPU time, ``--minutes`` of one torch thread, as optimizer steps: two short
calibration runs per arm (seed 0) measure the CPU seconds of a step, and
max_steps = budget / CPU seconds per step, so each run ends its cosine schedule inside the budget. The
frozen arms fill their feature cache lazily (a chain's whole-chain features are computed the first time
it is drawn); a run of a few hundred steps draws almost only new chains, so the calibration steps (all
cache misses) price that in. Start-up (reading the data, fitting the prior) is the same for every arm and not charged. CPU
time, not wall time, so that a busy machine does not shorten one arm more than another. Runs go
``--jobs`` at a time (each one thread).

Evaluation: a fixed random subset of ``--n_test`` test chains (seeded by ``--test_seed``, chains of
≤ ``--max_eval_len`` residues so every backbone takes them whole), scored per protein exactly like
``evaluate_distmat_model.py`` (proteinmtp.eval_scoring.score_prediction, refinement reconstruction). The
baselines are scored once on the same chains: the training split's separation prior, the nearest
training neighbour (MMseqs2, proteinmtp.neighbour) and the oracle (MDS of the true distances).

Output: ``benchmarks/results/pretraining.json`` (``arms`` → name → ``seeds`` (per-seed mean metrics),
``mean``, ``sd``; ``baselines``; ``paired`` → contrast → metric → mean per-protein difference with a
bootstrap 95 % interval over test proteins, arms averaged over their seeds first), a figure
``benchmarks/results/pretraining.png`` and a table on stdout. Finished runs are kept under ``--work_dir``
and skipped on a rerun, so an interrupted experiment resumes; the JSON is rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from bench_learning import read_jsonl, run_cmd
from llm_backbones import minilm_dir  # noqa: F401  (bench_ss imports it from here)

from proteinmtp.fileio import atomic_open, write_json

REPO = Path(__file__).resolve().parents[1]


METRICS = ("mae", "mae_short", "mae_medium", "mae_long", "precision_L5_long", "precision_L_long",
           "tm_score", "lddt")
LOWER_IS_BETTER = {"mae", "mae_short", "mae_medium", "mae_long"}
ARMS = {
    "a_text_frozen": {"backbone": "minilm", "init": "pretrained", "finetune": "frozen"},
    "b_random_frozen": {"backbone": "minilm", "init": "random", "finetune": "frozen"},
    "c_text_finetuned": {"backbone": "minilm", "init": "pretrained", "finetune": "full", "lr": "lr_finetune"},
    "d_random_trained": {"backbone": "minilm", "init": "random", "finetune": "full", "lr": "lr_scratch"},
    "e_tiny_qwen": {"backbone": "tiny", "init": "pretrained", "finetune": "full", "lr": "lr_tiny"},
    "qwen25_text_frozen": {"backbone": "qwen25", "init": "pretrained", "finetune": "frozen"},
    "qwen25_random_frozen": {"backbone": "qwen25", "init": "random", "finetune": "frozen"},
    "smollm2_text_frozen": {"backbone": "smollm2", "init": "pretrained", "finetune": "frozen"},
    "smollm2_random_frozen": {"backbone": "smollm2", "init": "random", "finetune": "frozen"},
}
# the layer-probe arms (--steps): frozen backbones, head only, equal optimizer steps
PROBE_ARMS = ("a_text_frozen", "b_random_frozen", "qwen25_text_frozen", "qwen25_random_frozen",
              "smollm2_text_frozen", "smollm2_random_frozen")
CONTRASTS = (("a_text_frozen", "b_random_frozen"), ("c_text_finetuned", "d_random_trained"),
             ("qwen25_text_frozen", "qwen25_random_frozen"), ("smollm2_text_frozen", "smollm2_random_frozen"),
             ("qwen25_text_frozen", "a_text_frozen"), ("smollm2_text_frozen", "a_text_frozen"),
             ("qwen25_text_frozen", "smollm2_text_frozen"))
BASELINES = ("prior", "neighbour", "oracle")




# ----------------------------------------------------------------------------- test chains and baselines

def test_subset(args: argparse.Namespace, split: str = "test") -> list:
    """The fixed evaluation chains: ≤ max_eval_len residues, ≥ 2 Cα, a seeded random subset of n_test."""
    from proteinmtp.dataio import open_dataset

    test = [s for s in open_dataset(Path(args.data_dir) / f"{split}.json.gz").samples
            if len(s.sequence) <= args.max_eval_len and int(s.mask().sum()) >= 2]
    rng = np.random.default_rng(args.test_seed)
    if args.n_test and len(test) > args.n_test:
        pick = sorted(rng.choice(len(test), args.n_test, replace=False).tolist())
        test = [test[i] for i in pick]
    return test


def score_baselines(args: argparse.Namespace, test: list, work: Path) -> dict:
    """{baseline: {protein id: metrics}} for the prior, the nearest neighbour and the oracle (cached)."""
    path = work / "baselines.json"
    ids = [s.id for s in test]
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("ids") == ids:
            return cached
    from proteinmtp.dataio import open_dataset
    from proteinmtp.eval_scoring import score_baselines
    from proteinmtp.neighbour import find_neighbours
    from proteinmtp.prior import SeparationPrior

    train = open_dataset(Path(args.data_dir) / "train.json.gz").samples
    t0 = time.time()
    prior = SeparationPrior.fit(train)
    prior_s = time.time() - t0
    t0 = time.time()
    neigh = find_neighbours(train, test).by_id
    neigh_s = time.time() - t0
    out: dict = {"ids": ids, "prior_fit_seconds": prior_s, "neighbour_seconds": neigh_s,
                 "prior": {}, "neighbour": {}, "oracle": {}, "neighbour_identity": {}, "neighbour_aligned": {}}
    for s in test:
        scores, _ = score_baselines(s, prior, neighbour=neigh[s.id], method="refine")
        for b in BASELINES:
            out[b][s.id] = scores[b]
        out["neighbour_identity"][s.id] = neigh[s.id].identity
        out["neighbour_aligned"][s.id] = neigh[s.id].aligned_fraction
    write_json(path, out)
    return out


# ----------------------------------------------------------------------------- one run

def train_argv(args: argparse.Namespace, arm: str, seed: int, run_dir: Path, max_steps: int,
               minutes: float) -> list[str]:
    spec = ARMS[arm]
    data = Path(args.data_dir)
    backbone = minilm_dir() if spec["backbone"] == "minilm" else str(Path(args.work_dir) / "tiny_backbone")
    lr = getattr(args, spec["lr"]) if "lr" in spec else args.lr_head
    return [sys.executable, "train_distmat.py",
            "--train_data", str(data / "train.json.gz"), "--model_name", backbone,
            "--init_backbone", spec["init"], "--finetune", spec["finetune"], "--residue_layout", "direct",
            "--output_dir", str(run_dir), "--max_steps", str(max_steps),
            "--max_train_minutes", f"{minutes:g}", "--max_seq_len", str(args.max_seq_len),
            "--long_crop_len", str(args.long_crop_len), "--learning_rate", f"{lr:g}",
            "--head_learning_rate", f"{args.lr_head:g}",
            "--warmup_steps", str(max(1, min(100, max_steps // 10))), "--logging_steps",
            str(max(1, max_steps // 50)), "--eval_steps", str(10 ** 9), "--save_steps", str(10 ** 9),
            "--save_total_limit", "1", "--seed", str(seed), "--templates", "0", "--no_tqdm"]


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cost_class(arm: str) -> str:
    """Arms that differ only in their initialisation cost the same per step and share one calibration."""
    return f"{ARMS[arm]['backbone']}_{ARMS[arm]['finetune']}"


def calibrate(args: argparse.Namespace, arm: str, work: Path) -> dict:
    """CPU seconds per optimizer step of ``arm``'s cost class (:func:`cost_class`).

    Two short runs of the arm (1 and 1 + ``calib_steps`` steps) are timed by their CPU time (user +
    system of the child process, one thread), which a busy machine inflates far less than wall time; the
    difference over ``calib_steps`` is the CPU cost of a step (start-up cancels).
    """
    path = work / "calibration" / f"{cost_class(arm)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    cpu = {}
    for n in (1, 1 + args.calib_steps):
        run_dir = work / "calibration" / f"{arm}_{n}"
        shutil.rmtree(run_dir, ignore_errors=True)
        c0 = _child_cpu()
        run_cmd(train_argv(args, arm, 0, run_dir, n, 0), work / "calibration" / f"{arm}_{n}.log", quiet=True,
                threads=1)
        cpu[n] = _child_cpu() - c0
        shutil.rmtree(run_dir, ignore_errors=True)
    n = 1 + args.calib_steps
    out = {"cpu_seconds_per_step": (cpu[n] - cpu[1]) / args.calib_steps, "startup_cpu_seconds": cpu[1],
           "calib_steps": args.calib_steps, "measured_with": arm}
    write_json(path, out)
    return out


def budget_steps(args: argparse.Namespace, cal: dict) -> int:
    """Optimizer steps that fill the CPU budget (at least 10)."""
    return max(10, int(args.minutes * 60.0 / max(cal["cpu_seconds_per_step"], 1e-6)))


def evaluate(run_dir: Path, test: list, precision: str = "fp32") -> dict:
    """{protein id: metrics} of the run's model on the test chains (score_prediction, refinement).

    ``precision`` bf16: the backbone's forward runs under CPU bf16 autocast, as the features the head was
    trained on were computed (the head itself stays float32)."""
    from llm_backbones import autocast

    from proteinmtp.eval_scoring import score_prediction
    from proteinmtp.model import load_run
    from proteinmtp.predict import predict_structures

    run = load_run(run_dir)
    if precision == "bf16":
        bb = run.model.backbone
        forward = bb.forward

        def bf16_forward(*a, **k):
            # LoadedRun.predict turns oneDNN off on CPU (its per-shape caches grow over many lengths); bf16
            # matmuls without it fall back to a path ~5-10x slower, so the backbone gets it back here
            import torch

            with torch.backends.mkldnn.flags(enabled=True), autocast("bf16"):
                return forward(*a, **k)

        bb.forward = bf16_forward
    out = {}

    def on_result(i: int, sp) -> None:
        s = test[i]
        dp = sp.distances
        out[s.id] = score_prediction(np.asarray(dp.dist, float), np.asarray(dp.contact_prob, float), sp.ca_xyz,
                                     s, true_dist=s.distances())

    predict_structures(run, [s.sequence for s in test], method="refine", on_result=on_result)
    return out


def one_run(args: argparse.Namespace, arm: str, seed: int) -> None:
    """Train (unless finished) and evaluate one arm × seed; writes WORK/<arm>_s<seed>/result.json."""
    work = Path(args.work_dir)
    out_dir = work / f"{arm}_s{seed}"
    result = out_dir / "result.json"
    if result.is_file():
        return
    max_steps = budget_steps(args, json.loads((work / "calibration" / f"{cost_class(arm)}.json").read_text()))
    run_dir = out_dir / "run"
    # the wall-clock limit only guards against a runaway run: a busy machine must not cut a run short
    # (twice the budget did once, seed 1 of b_random_frozen: 371 of 405 steps, with 3-4 jobs on 2 cores)
    cmd = train_argv(args, arm, seed, run_dir, max_steps, 6 * args.minutes)
    t0, c0 = time.time(), _child_cpu()
    run_cmd(cmd, out_dir / "train_stdout.log", quiet=True, threads=1)
    train_s, train_cpu = time.time() - t0, _child_cpu() - c0
    test = test_subset(args)
    t0 = time.time()
    per_protein = evaluate(run_dir, test)
    rows = read_jsonl(run_dir / "train_log.jsonl")
    write_json(result, {"arm": arm, "seed": seed, "max_steps": max_steps,
                        "steps_done": max((r["step"] for r in rows if "step" in r), default=0),
                        "train_seconds": train_s, "train_cpu_seconds": train_cpu,
                        "eval_seconds": time.time() - t0,
                        "command": " ".join(cmd[1:]), "per_protein": per_protein})
    if not args.keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- the layer probe (--steps)

def val_subset(args: argparse.Namespace) -> list:
    """Validation chains that choose each arm's layer (seeded subset of --n_val; never the test chains)."""
    ns = argparse.Namespace(**{**vars(args), "n_test": args.n_val})
    return test_subset(ns, split="val")


def train_file(args: argparse.Namespace) -> Path:
    """The training split every probe run reads: all of it (--train_chains 0) or a seeded random subset of
    --train_chains chains (--train_seed), written once under --work_dir with the full split's global_stats."""
    full = Path(args.data_dir) / "train.json.gz"
    if not args.train_chains:
        return full
    out = Path(args.work_dir) / f"train_subset_{args.train_chains}_s{args.train_seed}.json.gz"
    if out.is_file():
        return out
    from proteinmtp.dataio import open_dataset
    from proteinmtp.dataset import save_dataset

    ds = open_dataset(full)
    rng = np.random.default_rng(args.train_seed)
    n = min(args.train_chains, len(ds.samples))
    pick = sorted(rng.choice(len(ds.samples), n, replace=False).tolist())
    save_dataset(out, [ds.samples[i] for i in pick], ds.global_stats,
                 {**(ds.config or {}), "subset_of": str(full), "subset_chains": n, "subset_seed": args.train_seed})
    return out


def feature_dir(args: argparse.Namespace, precision: str) -> Path:
    """One shared feature cache per compute precision (the cache key does not name the precision)."""
    return Path(args.work_dir) / f"features_{precision}"


def ensure_features(args: argparse.Namespace, arm: str, seed: int, layers: list[int], precision: str) -> dict:
    """Cache the training chains' features of ``layers`` for ``arm`` (one backbone pass per chain, resumable);
    returns the extraction's timing (also kept under WORK/features_log/)."""
    import torch
    from llm_backbones import backbone_context, backbone_path, extract, frozen_model, layer_caches

    from proteinmtp.dataio import open_dataset

    spec = ARMS[arm]
    seed = seed if spec["init"] == "random" else 0          # pretrained weights do not depend on the seed
    logs = Path(args.work_dir) / "features_log"
    log = logs / f"{arm}_s{seed}_{precision}_L{'-'.join(map(str, layers))}.json"
    for f in sorted(logs.glob(f"{arm}_s{seed}_{precision}_L*.json")):    # an earlier pass covered these layers
        done = json.loads(f.read_text())
        if set(layers) <= set(done["layers"]):
            return done
    torch.set_num_threads(args.feature_threads)
    path = backbone_path(spec["backbone"], args.weights_dir)
    model = frozen_model(path, spec["init"], seed, ",".join(map(str, layers)))
    caches = layer_caches(model, layers, feature_dir(args, precision))
    fit = model.encoder.max_len
    seqs = [backbone_context(s.sequence, fit) for s in open_dataset(train_file(args)).samples]
    print(f"  features {arm} seed {seed} {precision}: layers {layers}, {len(seqs)} chains", flush=True)
    stats = extract(model, caches, seqs, precision, log=lambda m: print(m, flush=True))
    stats.update({"arm": arm, "seed": seed, "layers": layers, "backbone": path,
                  "bytes_per_layer": {str(k): c.size_bytes() for k, c in caches.items()}})
    write_json(log, stats)
    return stats


def probe_dir(args: argparse.Namespace, arm: str, layer: int, seed: int, precision: str, steps: int) -> Path:
    return Path(args.work_dir) / "probe" / f"{arm}_L{layer}_s{seed}_{precision}_{steps}steps"


def probe_run(args: argparse.Namespace, arm: str, layer: int, seed: int, precision: str,
              steps: int | None = None) -> dict:
    """Train one frozen arm on one layer's cached features for exactly ``steps`` steps, evaluate it on the
    test and validation chains; WORK/probe/<arm>_L<layer>_s<seed>_<precision>_<steps>steps/result.json."""
    steps = steps or args.steps
    out_dir = probe_dir(args, arm, layer, seed, precision, steps)
    result = out_dir / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    ensure_features(args, arm, seed, [layer], precision)       # nothing to do after the layer sweep
    spec = ARMS[arm]
    from llm_backbones import backbone_path

    run_dir = out_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    cache = feature_dir(args, precision)
    n_before = sum(1 for _ in cache.glob("*/*.safetensors"))
    cmd = [sys.executable, "train_distmat.py", "--train_data", str(train_file(args)),
           "--model_name", backbone_path(spec["backbone"], args.weights_dir), "--init_backbone", spec["init"],
           "--finetune", "frozen", "--residue_layout", "direct", "--feature_layers", str(layer),
           "--feature_cache_dir", str(cache), "--output_dir", str(run_dir), "--max_steps", str(steps),
           "--max_seq_len", str(args.max_seq_len), "--long_crop_len", str(args.long_crop_len),
           "--learning_rate", f"{args.lr_head:g}", "--head_learning_rate", f"{args.lr_head:g}",
           "--warmup_steps", str(max(1, min(100, steps // 10))), "--logging_steps", str(max(1, steps // 50)),
           "--eval_steps", str(10 ** 9), "--save_steps", str(10 ** 9), "--save_total_limit", "1",
           "--seed", str(seed), "--templates", "0", "--no_tqdm"]    # the backbone alone: no templates
    t0, c0 = time.time(), _child_cpu()
    run_cmd(cmd, out_dir / "train_stdout.log", quiet=True, threads=1)
    train_s, train_cpu = time.time() - t0, _child_cpu() - c0
    misses = sum(1 for _ in cache.glob("*/*.safetensors")) - n_before
    t0 = time.time()
    test, val = test_subset(args), val_subset(args)
    both = evaluate(run_dir, test + val, precision)          # one model load (test and val ids are disjoint)
    per_protein = {s.id: both[s.id] for s in test}
    per_val = {s.id: both[s.id] for s in val}
    rows = read_jsonl(run_dir / "train_log.jsonl")
    res = {"arm": arm, "layer": layer, "seed": seed, "precision": precision, "max_steps": steps,
           "steps_done": max((r["step"] for r in rows if "step" in r), default=0),
           "train_seconds": train_s, "train_cpu_seconds": train_cpu, "eval_seconds": time.time() - t0,
           "feature_cache_misses_in_training": misses,
           "command": " ".join(cmd[1:]), "per_protein": per_protein, "per_protein_val": per_val}
    write_json(result, res)
    if not args.keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
    return res


def best_layer(args: argparse.Namespace, arm: str, layers: list[int]) -> int | None:
    """The probed layer with the best mean validation --select_metric (seed 0), None until all are done."""
    vals = {}
    for k in layers:
        f = probe_dir(args, arm, k, args.seeds[0], args.precision, args.steps) / "result.json"
        if not f.is_file():
            return None
        r = json.loads(f.read_text())["per_protein_val"]
        vals[k] = _mean(r, list(r), args.select_metric)
    sign = -1 if args.select_metric in LOWER_IS_BETTER else 1
    return max(vals, key=lambda k: sign * (vals[k] if vals[k] is not None else -sign * np.inf))


def arm_layers(args: argparse.Namespace, arm: str) -> list[int]:
    """The hidden states probed for ``arm``: --layers (those within the backbone), else every 4th and the last."""
    from llm_backbones import BACKBONES, probe_layers

    n = BACKBONES[ARMS[arm]["backbone"]]["n_layers"]
    if args.layers:
        return sorted({int(x) for x in args.layers.split(",") if x.strip() and 0 <= int(x) <= n})
    return probe_layers(n)


def sweep_order(layers: list[int]) -> list[int]:
    """The layer sweep's order: the last hidden state, then outward from the middle, so that a run stopped
    part way has already probed the layers that bracket the curve."""
    mid = layers[-1] / 2
    return [layers[-1]] + sorted(layers[:-1], key=lambda k: (abs(k - mid), k))


def probe_tasks(args: argparse.Namespace) -> None:
    """The whole probe, in an order that puts paired results on disk early. Per backbone (text and random
    init side by side, layer by layer): the layer sweep (seed 0), then the other seeds at each arm's best
    layer; then the fp32 check, then the long runs. Finished runs are skipped."""
    s0 = args.seeds[0]
    groups: dict[str, list[str]] = {}
    for arm in args.arms:
        groups.setdefault(ARMS[arm]["backbone"], []).append(arm)
    for arms in groups.values():
        for arm in arms:
            ensure_features(args, arm, s0, arm_layers(args, arm), args.precision)
        for k in sweep_order(arm_layers(args, arms[0])):
            for arm in arms:
                probe_run(args, arm, k, s0, args.precision)
                args.on_result()
        for seed in args.seeds[1:]:
            for arm in arms:
                probe_run(args, arm, best_layer(args, arm, arm_layers(args, arm)), seed, args.precision)
                args.on_result()
    if args.precision_check in args.arms:
        arm = args.precision_check
        probe_run(args, arm, best_layer(args, arm, arm_layers(args, arm)), s0, "fp32")
        args.on_result()
    if args.long_steps:
        for arm in args.arms:
            probe_run(args, arm, best_layer(args, arm, arm_layers(args, arm)), s0, args.precision, args.long_steps)
            args.on_result()


def probe_speed(args: argparse.Namespace) -> dict:
    """Seconds per residue of each probed backbone (text init), fp32 and bf16, on 1 and 2 threads, over
    --speed_chains test chains (WORK/speed.json; rerun to refresh by deleting it)."""
    path = Path(args.work_dir) / "speed.json"
    if path.is_file():
        return json.loads(path.read_text())
    from llm_backbones import backbone_path, forward_speed, frozen_model

    seqs = [s.sequence for s in test_subset(args)[: args.speed_chains]]
    out: dict = {"chains": len(seqs), "residues": sum(map(len, seqs)),
                 "load_average_1_5_15": list(os.getloadavg()), "rows": {}}
    for b in dict.fromkeys(ARMS[a]["backbone"] for a in args.arms):
        model = frozen_model(backbone_path(b, args.weights_dir), "pretrained", 0, "last")
        out["rows"][b] = [forward_speed(model, seqs, t, p) for t in (1, 2) for p in ("fp32", "bf16")]
        for r in out["rows"][b]:
            print(f"  speed {b}: {r['threads']} thread(s) {r['precision']}: "
                  f"{r['seconds_per_residue'] * 1e3:.2f} ms/residue", flush=True)
    write_json(path, out)
    return out


def probe_results(args: argparse.Namespace, base: dict) -> dict:
    """Per arm: the layer curve (seed 0: test metrics and the validation selection metric), the seeds at the
    best layer, fp32-vs-bf16 and the long run; per-protein test values for the paired contrasts."""
    ids = base["ids"]
    arms, prot, extra = {}, {}, {}
    for arm in args.arms:
        layers = arm_layers(args, arm)
        curve = {}
        for k in layers:
            f = probe_dir(args, arm, k, args.seeds[0], args.precision, args.steps) / "result.json"
            if f.is_file():
                r = json.loads(f.read_text())
                v = r["per_protein_val"]
                curve[str(k)] = {m: _mean(r["per_protein"], ids, m) for m in METRICS} | {
                    f"val_{args.select_metric}": _mean(v, list(v), args.select_metric), "steps": r["steps_done"]}
        best = best_layer(args, arm, layers)
        block: dict = {"backbone": ARMS[arm]["backbone"], "init": ARMS[arm]["init"], "precision": args.precision,
                       "layers": curve, "layer": best, "selected_by": f"validation {args.select_metric} "
                       f"({args.n_val} val chains, seed {args.seeds[0]})", "steps": args.steps}
        seeds, rows = {}, []
        for seed in args.seeds if best is not None else []:
            f = probe_dir(args, arm, best, seed, args.precision, args.steps) / "result.json"
            if f.is_file():
                r = json.loads(f.read_text())
                seeds[str(seed)] = {m: _mean(r["per_protein"], ids, m) for m in METRICS} | {
                    "steps": r["steps_done"], "train_cpu_seconds": r["train_cpu_seconds"],
                    "feature_cache_misses_in_training": r["feature_cache_misses_in_training"]}
                rows.append(r["per_protein"])
        if seeds:
            block["seeds"] = seeds
            for stat, fn in (("mean", np.mean), ("sd", lambda x: np.std(x, ddof=1) if len(x) > 1 else 0.0)):
                block[stat] = {m: float(fn([s[m] for s in seeds.values() if s[m] is not None]))
                               for m in METRICS if any(s[m] is not None for s in seeds.values())}
            prot[arm] = {m: np.nanmean(np.array([[r.get(i, {}).get(m, np.nan) for i in ids] for r in rows],
                                                dtype=float), axis=0) for m in METRICS}
        for tag, prec, steps in (("fp32_check", "fp32", args.steps), ("long", args.precision, args.long_steps)):
            f = probe_dir(args, arm, best, args.seeds[0], prec, steps) / "result.json" if best is not None else None
            if steps and f is not None and f.is_file():
                r = json.loads(f.read_text())
                block[tag] = {m: _mean(r["per_protein"], ids, m) for m in METRICS} | {
                    "steps": r["steps_done"], "precision": prec, "layer": best}
                extra[f"{arm}@{tag}"] = {m: np.array([r["per_protein"].get(i, {}).get(m, np.nan) for i in ids],
                                                     dtype=float) for m in METRICS}
        arms[arm] = block
    s0 = f"{args.precision_check}@fp32_check"
    if s0 in extra:
        a0 = probe_dir(args, args.precision_check, arms[args.precision_check]["layer"], args.seeds[0],
                       args.precision, args.steps) / "result.json"
        r = json.loads(a0.read_text())["per_protein"]
        bf = {m: np.array([r.get(i, {}).get(m, np.nan) for i in ids], dtype=float) for m in METRICS}
        arms[args.precision_check]["fp32_check"]["paired_bf16_minus_fp32"] = {
            m: bootstrap_diff(bf[m], extra[s0][m]) for m in METRICS}
    return {"arms": arms, "per_protein": prot}


# ----------------------------------------------------------------------------- aggregation

def _mean(rows: dict, ids: list[str], key: str) -> float | None:
    v = np.array([rows[i].get(key, np.nan) for i in ids], dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean per-protein difference a − b with a percentile bootstrap 95 % interval over proteins."""
    ok = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[ok]
    if not d.size:
        return {"mean": None, "ci95": [None, None], "n": 0}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    return {"mean": float(d.mean()), "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "n": int(d.size)}


def aggregate(args: argparse.Namespace, base: dict, work: Path) -> dict:
    ids = base["ids"]
    arms: dict = {}
    per_arm_protein: dict[str, dict[str, np.ndarray]] = {}
    if args.steps:
        pr = probe_results(args, base)
        arms = {a: b for a, b in pr["arms"].items() if b.get("seeds") or b.get("layers")}
    for arm in args.arms if not args.steps else ():
        seeds = {}
        for seed in args.seeds:
            f = work / f"{arm}_s{seed}" / "result.json"
            if f.is_file():
                r = json.loads(f.read_text())
                seeds[str(seed)] = {k: _mean(r["per_protein"], ids, k) for k in METRICS} | {
                    "steps": r["steps_done"], "train_seconds": r["train_seconds"],
                    "train_cpu_seconds": r.get("train_cpu_seconds")}
                for k in METRICS:
                    per_arm_protein.setdefault(arm, {}).setdefault(k, []).append(
                        [r["per_protein"].get(i, {}).get(k, np.nan) for i in ids])
        if not seeds:
            continue
        block = {"seeds": seeds}
        for stat, fn in (("mean", np.mean), ("sd", lambda x: np.std(x, ddof=1) if len(x) > 1 else 0.0)):
            block[stat] = {k: float(fn([s[k] for s in seeds.values() if s[k] is not None]))
                           for k in METRICS if any(s[k] is not None for s in seeds.values())}
        arms[arm] = block
    # arms: per-protein values averaged over seeds; baselines: per-protein values
    prot = {a: {k: np.nanmean(np.array(v, dtype=float), axis=0) for k, v in d.items()}
            for a, d in per_arm_protein.items()}
    if args.steps:
        prot = dict(pr["per_protein"])
    for b in BASELINES:
        prot[b] = {k: np.array([base[b][i].get(k, np.nan) for i in ids], dtype=float) for k in METRICS}
    paired: dict = {}
    pairs = [c for c in CONTRASTS if c[0] in prot and c[1] in prot]
    pairs += [(a, b) for a in arms if a in prot for b in ("prior", "neighbour")]
    for a, b in pairs:
        paired[f"{a} - {b}"] = {k: bootstrap_diff(prot[a][k], prot[b][k]) for k in METRICS}
    baselines = {b: {k: _mean(base[b], ids, k) for k in METRICS} for b in BASELINES}
    idents = np.array([np.nan if base["neighbour_identity"][i] is None else base["neighbour_identity"][i]
                       for i in ids], dtype=float)
    baselines["neighbour"]["identity_mean"] = float(np.nanmean(idents)) if np.isfinite(idents).any() else None
    baselines["neighbour"]["no_hit"] = int((~np.isfinite(idents)).sum())
    baselines["neighbour"]["aligned_fraction_mean"] = float(np.mean([base["neighbour_aligned"][i] for i in ids]))
    return {"arms": arms, "baselines": baselines, "paired": paired}


def merge_previous(path: Path, res: dict) -> dict:
    """Keep what an earlier invocation wrote for arms this one does not run (and their contrasts); an arm
    rerun with other steps keeps its earlier block under ``superseded``."""
    if not path.is_file():
        return res
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return res
    out = dict(res)
    out["arms"] = {**{a: b for a, b in old.get("arms", {}).items() if a not in res["arms"]}, **res["arms"]}
    out["paired"] = {**{c: d for c, d in old.get("paired", {}).items() if c not in res["paired"]}, **res["paired"]}
    sup = dict(old.get("superseded", {}))
    for a, b in old.get("arms", {}).items():
        new = res["arms"].get(a)
        if new is not None and "seeds" in b and "seeds" in new and \
                {s.get("steps") for s in b["seeds"].values()} != {s.get("steps") for s in new["seeds"].values()}:
            sup[a] = {**b, "config": old.get("config")}
    if sup:
        out["superseded"] = sup
    for k in ("speed", "features", "calibration"):
        if out.get(k) in (None, {}, []) and old.get(k):
            out[k] = old[k]
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("mae_long", "MAE long |i−j|≥24 (Å)"), ("precision_L5_long", "long-range P@L/5"),
              ("tm_score", "TM-score"), ("lddt", "lDDT-Cα"))
    arms = list(res["arms"])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.8))
    colors = {"prior": "0.4", "neighbour": "tab:purple", "oracle": "tab:green"}
    for ax, (k, title) in zip(axes, panels):
        for x, arm in enumerate(arms):
            vals = [s[k] for s in res["arms"][arm].get("seeds", {}).values() if s.get(k) is not None]
            ax.scatter([x] * len(vals), vals, color="tab:blue", s=18, zorder=3)
            if vals:
                ax.hlines(np.mean(vals), x - 0.3, x + 0.3, color="tab:blue", lw=2)
        for b in ("prior", "neighbour"):
            v = res["baselines"][b].get(k)
            if v is not None:
                ax.axhline(v, color=colors[b], ls="--", lw=1, label=b)
        ax.set_xticks(range(len(arms)), [label(a) for a in arms], rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle("arms: a MiniLM text frozen, b MiniLM random frozen, c text fine-tuned, d random trained, "
                 "e tiny Qwen2; qwen25/smollm2 at their best layer (dots: seeds; bar: mean)", fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    curves = {a: b["layers"] for a, b in res["arms"].items() if b.get("layers")}
    if not curves:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.8))
    for ax, (k, title) in zip(axes, panels):
        for arm, curve in curves.items():
            xs = sorted(curve, key=int)
            ax.plot([int(x) for x in xs], [curve[x].get(k) for x in xs], marker="o",
                    ls="-" if ARMS[arm]["init"] == "pretrained" else "--", label=label(arm))
        v = res["baselines"]["prior"].get(k)
        if v is not None:
            ax.axhline(v, color="0.4", ls=":", lw=1, label="prior")
        ax.set_xlabel("hidden state (layer)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("layer probe: frozen features of one hidden state, seed 0, test chains "
                 "(solid: text-pretrained, dashed: random init)", fontsize=9)
    fig.tight_layout()
    with atomic_open(path.with_name(path.stem + "_layers.png"), "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def label(arm: str) -> str:
    """Short axis label of an arm."""
    if arm in PROBE_ARMS:
        b = {"a": "minilm", "b": "minilm"}.get(arm[0], ARMS[arm]["backbone"])
        return f"{b} {'text' if ARMS[arm]['init'] == 'pretrained' else 'rand'}"
    return arm.split("_", 1)[0]


def markdown(res: dict) -> str:
    """The result table and the paired contrasts as Markdown (what DISCUSSION.md shows)."""
    keys = (("mae", "MAE Å"), ("mae_short", "short"), ("mae_medium", "medium"), ("mae_long", "long"),
            ("precision_L5_long", "P@L/5 long"), ("precision_L_long", "P@L long"), ("tm_score", "TM"),
            ("lddt", "lDDT"))
    lines = ["| arm | seeds | steps | " + " | ".join(t for _, t in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for arm, b in res["arms"].items():
        if "mean" not in b:
            continue
        steps = sorted({s["steps"] for s in b["seeds"].values()})
        lines.append(f"| {arm} | {len(b['seeds'])} | {'/'.join(map(str, steps))} | " + " | ".join(
            f"{b['mean'][k]:.3f} ± {b['sd'][k]:.3f}" if k in b["mean"] else "–" for k, _ in keys) + " |")
    for name, b in res["baselines"].items():
        lines.append(f"| {name} | – | – | " + " | ".join(
            f"{b[k]:.3f}" if b.get(k) is not None else "–" for k, _ in keys) + " |")
    lines += ["", "| contrast (per protein, arms averaged over seeds) | " + " | ".join(t for _, t in keys) + " |",
              "|---|" + "---|" * len(keys)]
    for name, d in res["paired"].items():
        lines.append(f"| {name} | " + " | ".join(
            f"{d[k]['mean']:+.3f} [{d[k]['ci95'][0]:+.3f}, {d[k]['ci95'][1]:+.3f}]" if d[k]["mean"] is not None
            else "–" for k, _ in keys) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default="build/full",
                   help="dataset directory with {train,test}.json.gz (build it with create_distmat_data.py)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated arms from {', '.join(ARMS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (backbone init, head init, crops)")
    p.add_argument("--minutes", type=float, default=5.0,
                   help="CPU budget per run in minutes of one torch thread (optimizer steps from the calibration)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each one thread)")
    p.add_argument("--n_test", type=int, default=100, help="test chains evaluated (seeded random subset; 0 = all)")
    p.add_argument("--test_seed", type=int, default=0, help="seed of the test subset")
    p.add_argument("--max_eval_len", type=int, default=500,
                   help="longest test chain evaluated (residues); MiniLM takes at most 510 with [CLS]/[SEP]")
    p.add_argument("--max_seq_len", type=int, default=128, help="training crop length (residues)")
    p.add_argument("--long_crop_len", type=int, default=256, help="residues of the occasional longer crop")
    p.add_argument("--calib_steps", type=int, default=20, help="optimizer steps of each arm's calibration run")
    p.add_argument("--lr_head", type=float, default=1e-3, help="peak learning rate of the head (every arm)")
    p.add_argument("--lr_finetune", type=float, default=5e-5, help="backbone LR of arm c (text-pretrained)")
    p.add_argument("--lr_scratch", type=float, default=5e-4, help="backbone LR of arm d (random init)")
    p.add_argument("--lr_tiny", type=float, default=1e-3, help="backbone LR of arm e (the demo's recipe)")
    p.add_argument("--work_dir", default="build/bench_pretraining", help="runs and per-run results (not committed)")
    p.add_argument("--keep_runs", action="store_true", help="keep each run's weights after its evaluation")
    p.add_argument("--output", default="benchmarks/results/pretraining.json", help="JSON results")
    p.add_argument("--figure", default="benchmarks/results/pretraining.png", help="figure")
    p.add_argument("--quick", action="store_true",
                   help="smoke version: demo data, seeds 0, 0.5 min, 8 test chains, arms a,b,e (unless given)")
    p.add_argument("--report_only", action="store_true",
                   help="train nothing: aggregate the finished runs under --work_dir, rewrite the JSON and figure")
    g = p.add_argument_group("layer probe of frozen backbones (--steps > 0; arms " + ", ".join(PROBE_ARMS) + ")")
    g.add_argument("--steps", type=int, default=0,
                   help="optimizer steps of every probe run (equal for every arm; >= 1600 for the experiment); "
                        "0 = the CPU-budget mode (--minutes) of the five original arms")
    g.add_argument("--long_steps", type=int, default=0,
                   help="after the probe: one run per arm of this many steps at its best layer, seed 0 (0 = none)")
    g.add_argument("--train_chains", type=int, default=0,
                   help="training chains of every probe run: a seeded random subset of the training split (0 = all)")
    g.add_argument("--train_seed", type=int, default=0, help="seed of the --train_chains subset")
    g.add_argument("--n_val", type=int, default=50,
                   help="validation chains (seeded subset of val.json.gz, <= --max_eval_len) that choose each arm's "
                        "layer; the test chains never do")
    g.add_argument("--layers", default="",
                   help="probe only these hidden-state indices (comma-separated, each backbone; '' = every 4th and "
                        "the last)")
    g.add_argument("--select_metric", default="lddt", choices=METRICS, help="what chooses the best layer")
    g.add_argument("--precision", default="bf16", choices=("bf16", "fp32"),
                   help="compute precision of the backbone for the cached features and at evaluation")
    g.add_argument("--precision_check", default="smollm2_text_frozen",
                   help="arm rerun with fp32 features at its best layer, seed 0 (the bf16 check; '' = none)")
    g.add_argument("--feature_threads", type=int, default=1,
                   help="torch threads of the feature extraction (2 only on an idle machine: on busy cores the second "
                        "thread spin-waits)")
    g.add_argument("--weights_dir", default=None,
                   help="where the GGUF checkpoints are (fetched there when missing; default: proteinmtp.weights' "
                        "cache directory)")
    g.add_argument("--speed", action="store_true",
                   help="also time each backbone's forward pass (fp32/bf16, 1 and 2 threads) -> speed in the JSON")
    g.add_argument("--speed_chains", type=int, default=8, help="test chains the speed measurement runs")
    p.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if args.quick:
        defaults = {"--data_dir": "data/demo/dataset", "--seeds": "0", "--minutes": 0.5, "--n_test": 8,
                    "--arms": "a_text_frozen,b_random_frozen,e_tiny_qwen", "--calib_steps": 6,
                    "--work_dir": "build/bench_pretraining_quick",
                    "--output": "benchmarks/results/pretraining_quick.json",
                    "--figure": "benchmarks/results/pretraining_quick.png"}
        for flag, v in defaults.items():
            if flag not in given:
                setattr(args, flag[2:], v)
    args.arms = [a.strip() for a in str(args.arms).split(",") if a.strip()]
    bad = [a for a in args.arms if a not in ARMS]
    if bad or not args.arms:
        p.error(f"unknown arm(s) {bad}; choose from {', '.join(ARMS)}")
    try:
        args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.minutes <= 0 or args.jobs < 1:
        p.error("--minutes must be > 0 and --jobs >= 1")
    if args.steps and [a for a in args.arms if a not in PROBE_ARMS]:
        p.error(f"--steps runs the frozen probe arms only ({', '.join(PROBE_ARMS)})")
    if not args.steps and [a for a in args.arms if a not in ARMS or a in PROBE_ARMS[2:]]:
        p.error("the qwen25/smollm2 arms run with --steps (equal optimizer steps, layer probe)")
    for s in ("train", "test") + (("val",) if args.steps else ()):
        if not (Path(args.data_dir) / f"{s}.json.gz").is_file():
            p.error(f"{Path(args.data_dir) / f'{s}.json.gz'} not found; build the dataset with "
                    "create_distmat_data.py (see DISCUSSION.md) or pass --data_dir")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(args.work_dir)
    if args.one:
        one_run(args, args.one[0], int(args.one[1]))
        return 0
    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    if "e_tiny_qwen" in args.arms and not (work / "tiny_backbone" / "config.json").is_file():
        run_cmd([sys.executable, "-m", "proteinmtp.tiny", str(work / "tiny_backbone")], work / "tiny.log", quiet=True)
    test = test_subset(args)
    print(f"bench_pretraining: {len(test)} test chains; baselines (prior, neighbour, oracle)", flush=True)
    base = score_baselines(args, test, work)
    cal = {}
    for arm in args.arms if not args.steps else ():
        if args.report_only and not (work / "calibration" / f"{cost_class(arm)}.json").is_file():
            continue
        cal[arm] = calibrate(args, arm, work)
        c = cal[arm]
        print(f"  calibrated {arm}: {c['cpu_seconds_per_step']:.3f} CPU s/step -> {budget_steps(args, c)} steps",
              flush=True)

    def write() -> dict:
        res = aggregate(args, base, work)
        res.update({"config": {k: v for k, v in vars(args).items() if k not in ("one", "on_result")},
                    "command": " ".join(["python", "benchmarks/bench_pretraining.py"] + sys.argv[1:]),
                    "test_ids": base["ids"], "calibration": cal, "threads_per_run": 1,
                    "prior_fit_seconds": base["prior_fit_seconds"], "neighbour_seconds": base["neighbour_seconds"],
                    "load_average_1_5_15": list(os.getloadavg()), "wall_seconds": time.time() - t0})
        if args.steps:
            speed = work / "speed.json"
            res["speed"] = json.loads(speed.read_text()) if speed.is_file() else None
            res["features"] = [json.loads(f.read_text()) for f in sorted((work / "features_log").glob("*.json"))]
            res["training_split"] = {"file": str(train_file(args)), "chains": args.train_chains or "all",
                                     "seed": args.train_seed}
            res["note"] = ("qwen25/smollm2: GGUF checkpoints dequantised to float32 (proteinmtp.weights): the real "
                           "weights up to 4-bit quantisation noise (Q4_K_M, Q4_1)")
        res = merge_previous(Path(args.output), res)
        write_json(Path(args.output), res)
        if res["arms"]:
            plot(res, Path(args.figure))
        return res

    if args.steps:
        args.on_result = write
        if not args.report_only:
            if args.speed:
                probe_speed(args)
            probe_tasks(args)
        res = write()
        print(markdown(res))
        print(f"\nwrote {args.output} and {args.figure}")
        return 0
    tasks = [] if args.report_only else [(arm, seed) for seed in args.seeds for arm in args.arms]
    failures = []
    lock = threading.Lock()

    def launch(task: tuple[str, int]) -> None:
        arm, seed = task
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", arm, str(seed)] + [
            a for a in (sys.argv[1:] if argv is None else argv)]
        try:
            s = run_cmd(cmd, work / f"{arm}_s{seed}.log", quiet=True, threads=1)
            print(f"  done {arm} seed {seed} ({s / 60:.1f} min)", flush=True)
        except RuntimeError as e:
            failures.append(str(e))
            print(f"  FAILED {arm} seed {seed}: {e}", file=sys.stderr, flush=True)
        with lock:
            write()

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(launch, tasks))
    res = write()
    print(markdown(res))
    print(f"\nwrote {args.output} and {args.figure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
