"""Learning benchmark: does a small model trained from scratch on the CPU beat the separation prior, per layout?

    python benchmarks/bench_learning.py --minutes 1                     # smoke test (~10 min for 3 layouts)
    python benchmarks/bench_learning.py --minutes 5 --layouts echo,placeholder,direct --split test

For each residue layout (``--layouts``) and seed (``--seeds``):
1. a tiny random-initialised Qwen2 backbone (``python -m proteinmtp.tiny``, same seed -> identical init for
   every layout) is written once under ``--work_dir``;
2. calibration: a few training steps with one validation evaluation measure this layout's steps/s and the
   seconds one evaluation costs *now* (the CPU may be shared), so that ``--max_steps`` is chosen for the
   cosine schedule to end near the ``--minutes`` budget (``--max_train_minutes`` stops it in any case);
3. ``train_distmat.py`` trains from scratch on the training split, evaluating ``--n_evals`` times on the
   first ``--max_eval_samples`` validation chains (the held-out curve, from ``train_log.jsonl`` eval rows);
4. ``evaluate_distmat_model.py`` scores the final model against the separation prior (and the oracle) on the
   held-out ``--split``.
The run directories (weights, checkpoints) stay under ``--work_dir`` (default ``build/``, ignored by git); the
experiment records (config, logs, eval_results.json, figures; no weights) go to
``experiments/<date>_layout_<layout>[_seed<k>]/``. Writes benchmarks/results/learning.json and
benchmarks/results/learning_curve.png and prints a table (model vs prior per layout).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from proteinmtp.experiments import experiment_dir, record_training
from proteinmtp.fileio import atomic_open, write_json

REPO = Path(__file__).resolve().parents[1]


LAYOUTS = ("placeholder", "echo", "direct")
# (key in eval_results.json, column title); MAE in Å, lower is better; the rest higher is better
TABLE_KEYS = (("mae", "MAE"), ("mae_local", "local"), ("mae_short", "short"), ("mae_medium", "medium"),
              ("mae_long", "long"), ("precision_L5_long", "P@L/5 long"), ("tm_score", "TM"), ("lddt", "lDDT"))
CURVE_KEYS = ("eval_mae", "eval_mae_local", "eval_mae_short", "eval_mae_medium", "eval_mae_long",
              "eval_precision_L5_long")


def run_cmd(cmd: list[str], log_path: Path, quiet: bool, threads: int = 0) -> float:
    """Run ``cmd`` (list args, no shell) from the repo root, tee its output to ``log_path``; return seconds.

    ``threads`` > 0 sets OMP_NUM_THREADS/MKL_NUM_THREADS of the child (torch's intra-op threads). Raises
    RuntimeError naming the command and the log when it fails.
    """
    t0 = time.time()
    env = dict(os.environ)
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if not quiet and "it/s]" not in line and "s/it]" not in line:
                sys.stdout.write("    " + line)
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"command failed with exit code {rc}: {' '.join(cmd)} (log: {log_path})")
    return time.time() - t0


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue   # a line cut short by a kill
    return rows


def train_cmd(args: argparse.Namespace, layout: str, seed: int, run_dir: Path, backbone: Path, *,
              max_steps: int, minutes: float, eval_steps: int, save_steps: int, logging_steps: int) -> list[str]:
    data = Path(args.data_dir)
    cmd = [sys.executable, "train_distmat.py",
           "--train_data", str(data / "train.json.gz"), "--val_data", str(data / "val.json.gz"),
           "--model_name", str(backbone), "--finetune", "full", "--residue_layout", layout,
           "--output_dir", str(run_dir), "--max_steps", str(max_steps),
           "--max_train_minutes", f"{minutes:g}", "--max_seq_len", str(args.max_seq_len),
           "--learning_rate", f"{args.learning_rate:g}", "--warmup_steps", str(min(args.warmup_steps,
                                                                                   max(1, max_steps // 10))),
           "--logging_steps", str(logging_steps), "--eval_steps", str(eval_steps),
           "--save_steps", str(save_steps), "--save_total_limit", "1",
           "--max_eval_samples", str(args.max_eval_samples), "--seed", str(seed), "--templates", "0", "--no_tqdm"]
    return cmd


def calibrate(args: argparse.Namespace, layout: str, seed: int, backbone: Path, work: Path) -> dict:
    """Train ``--calib_steps`` steps with one evaluation at the end: steps/s (after the first step) and eval s."""
    run_dir = work / f"calib_{layout}"
    shutil.rmtree(run_dir, ignore_errors=True)
    n = args.calib_steps
    cmd = train_cmd(args, layout, seed, run_dir, backbone, max_steps=n, minutes=0, eval_steps=n,
                    save_steps=10 ** 6, logging_steps=1)
    run_cmd(cmd, work / f"calib_{layout}.log", quiet=True, threads=args.threads)
    rows = read_jsonl(run_dir / "train_log.jsonl")
    steps = [r for r in rows if "loss" in r and "time" in r and "eval_mae" not in r]
    evals = [r for r in rows if "eval_mae" in r]
    if len(steps) < 3:
        raise RuntimeError(f"calibration of {layout} logged {len(steps)} steps; see {work / f'calib_{layout}.log'}")
    steps_per_s = (steps[-1]["step"] - steps[0]["step"]) / max(steps[-1]["time"] - steps[0]["time"], 1e-6)
    eval_s = float(evals[-1]["time"] - steps[-1]["time"]) if evals else 0.0
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"steps_per_s": steps_per_s, "eval_s": max(eval_s, 0.0), "calib_steps": n}


def prior_val_curve(args: argparse.Namespace, run_dir: Path) -> dict:
    """The separation prior's mean-over-chains metrics on the same validation chains the training evaluated."""
    from proteinmtp.dataio import open_dataset
    from proteinmtp.metrics import contact_metrics, distance_metrics
    from proteinmtp.prior import SeparationPrior

    prior = SeparationPrior.load(run_dir / "prior.json")
    val = open_dataset(Path(args.data_dir) / "val.json.gz").samples
    if args.max_eval_samples:
        val = val[: args.max_eval_samples]
    rows = []
    for s in val:
        true, mask = s.distances(), s.mask()
        pred = prior.predict(len(s.sequence))
        m = distance_metrics(pred, true, mask)
        m.update(contact_metrics(pred, true, mask, higher_is_contact=False))
        rows.append(m)
    return {"eval_" + k: float(np.nanmean([r[k] for r in rows])) for k in
            ("mae", "mae_local", "mae_short", "mae_medium", "mae_long", "precision_L5_long")}


def run_layout(args: argparse.Namespace, layout: str, seed: int, backbone: Path, work: Path) -> dict:
    tag = f"layout_{layout}" + (f"_seed{seed}" if seed != 0 else "") + args.tag_suffix
    print(f"\n== {tag}: calibrating ({args.calib_steps} steps + 1 evaluation)", flush=True)
    cal = calibrate(args, layout, seed, backbone, work)
    budget_s = args.minutes * 60.0
    # budget left for steps after n_evals evaluations (measured cost) and a 15 % margin (start-up, saves)
    step_s = max(budget_s * 0.85 - args.n_evals * cal["eval_s"], budget_s * 0.3)
    max_steps = args.max_steps or max(10, int(cal["steps_per_s"] * step_s))
    eval_steps = max(1, math.ceil(max_steps / args.n_evals))
    print(f"   {cal['steps_per_s']:.3f} steps/s, evaluation {cal['eval_s']:.0f} s -> --max_steps {max_steps}, "
          f"--eval_steps {eval_steps}, --max_train_minutes {args.minutes:g}", flush=True)

    run_dir = work / tag / "run"
    shutil.rmtree(run_dir, ignore_errors=True)          # from scratch (the trainer would resume otherwise)
    exp = experiment_dir(tag, args.experiments_root)
    cmd = train_cmd(args, layout, seed, run_dir, backbone, max_steps=max_steps, minutes=args.minutes,
                    eval_steps=eval_steps, save_steps=max_steps, logging_steps=max(1, max_steps // 20))
    print(f"== {tag}: training -> {run_dir}", flush=True)
    train_s = run_cmd(cmd, work / tag / "train_stdout.log", quiet=args.quiet, threads=args.threads)
    record_training(run_dir, exp)       # config.json, training_log.txt, visualizations/training_curves.png
    rows = read_jsonl(run_dir / "train_log.jsonl")
    start = next((r["time"] for r in rows if r.get("event") == "started"), rows[0]["time"] if rows else 0.0)
    curve = [{"step": r["step"], "minutes": (r["time"] - start) / 60.0, **{k: r.get(k) for k in CURVE_KEYS}}
             for r in rows if "eval_mae" in r]
    steps_done = max((r["step"] for r in rows if "step" in r), default=0)   # incl. the "done" event

    print(f"== {tag}: evaluating on {args.split} -> {exp}", flush=True)
    ecmd = [sys.executable, "evaluate_distmat_model.py", "--model_path", str(run_dir),
            "--test_data", str(Path(args.data_dir) / f"{args.split}.json.gz"), "--output_dir", str(exp),
            "--experiment_name", tag, "--experiments_root", str(args.experiments_root), "--quiet"]
    if args.num_samples:
        ecmd += ["--num_samples", str(args.num_samples)]
    eval_s = run_cmd(ecmd, work / tag / "eval_stdout.log", quiet=args.quiet, threads=args.threads)
    res = json.loads((exp / "eval_results.json").read_text())
    bench_cmd = " ".join(["python", "benchmarks/bench_learning.py"] + sys.argv[1:])
    (exp / "command.txt").write_text(f"{bench_cmd}\n\n# training\n{' '.join(cmd[1:])}\n\n# evaluation\n"
                                     f"{' '.join(ecmd[1:])}\n")
    return {"layout": layout, "seed": seed, "tag": tag, "record": str(exp), "calibration": cal,
            "max_steps": max_steps, "steps_done": steps_done, "train_seconds": train_s, "eval_seconds": eval_s,
            "val_curve": curve, "val_prior": prior_val_curve(args, run_dir),
            "heldout": {"split": args.split, "n_proteins": res.get("n_proteins"),
                        "model": {k: res["model"].get(k) for k, _ in TABLE_KEYS},
                        "prior": {k: res["prior"].get(k) for k, _ in TABLE_KEYS},
                        "oracle": {k: res.get("oracle", {}).get(k) for k, _ in TABLE_KEYS}}}


def plot_curves(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("eval_mae", "MAE all pairs (Å)"), ("eval_mae_short", "MAE short 6-11 (Å)"),
              ("eval_mae_medium", "MAE medium 12-23 (Å)"), ("eval_precision_L5_long", "long-range P@L/5"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes, panels):
        for i, r in enumerate(results):
            xs = [c["minutes"] for c in r["val_curve"]]
            ys = [c[key] for c in r["val_curve"]]
            ax.plot(xs, ys, "o-", color=colors[i % len(colors)], label=r["tag"].removeprefix("layout_"))
            ax.axhline(r["val_prior"][key], color=colors[i % len(colors)], ls=":", lw=1)
        ax.set_title(title)
        ax.set_xlabel("training wall time (min)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="model (prior dotted)", title_fontsize=8)
    fig.suptitle("held-out (validation) curve during training", fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def print_table(results: list[dict]) -> None:
    if not results:
        return
    h = results[0]["heldout"]
    print(f"\nheld-out split '{h['split']}' ({h['n_proteins']} chains); MAE in Å (lower better), "
          "P@L/5/TM/lDDT higher better")
    head = f"{'layout':<22} {'what':<6} {'steps':>6}" + "".join(f" {t:>10}" for _, t in TABLE_KEYS)
    print(head)
    print("-" * len(head))
    for r in results:
        for who in ("model", "prior"):
            vals = r["heldout"][who]
            steps = str(r["steps_done"]) if who == "model" else ""
            print(f"{r['tag'].removeprefix('layout_'):<22} {who:<6} {steps:>6}"
                  + "".join(f" {vals[k]:>10.3f}" if vals.get(k) is not None else f" {'-':>10}"
                            for k, _ in TABLE_KEYS))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layouts", default="echo,placeholder,direct", help="comma-separated residue layouts to compare")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (backbone init, head init, crops); "
                   "each layout runs once per seed")
    p.add_argument("--minutes", type=float, default=5.0, help="training wall-clock budget per run (minutes)")
    p.add_argument("--quick", action="store_true", help="smoke test: --minutes 1 and --num_samples 8 unless given")
    p.add_argument("--max_steps", type=int, default=0, help="optimizer steps per run (0 = from the calibration)")
    p.add_argument("--calib_steps", type=int, default=6, help="training steps of the calibration run")
    p.add_argument("--n_evals", type=int, default=4, help="validation evaluations during each training run")
    p.add_argument("--max_eval_samples", type=int, default=8, help="validation chains per evaluation during training")
    p.add_argument("--split", default="test", choices=("val", "test"), help="held-out split of the final evaluation")
    p.add_argument("--num_samples", type=int, default=0, help="final evaluation on the first N chains (0 = all)")
    p.add_argument("--data_dir", default="data/demo/dataset", help="dataset directory with {train,val,test}.json.gz")
    p.add_argument("--max_seq_len", type=int, default=128, help="training crop length (residues)")
    p.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate of backbone and head")
    p.add_argument("--warmup_steps", type=int, default=100, help="warm-up steps (at most a tenth of the run)")
    p.add_argument("--hidden_size", type=int, default=128, help="tiny backbone width")
    p.add_argument("--num_layers", type=int, default=4, help="tiny backbone layers")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per training/evaluation process (OMP_NUM_THREADS; 0 = torch's default). "
                   "1 was 3.4x faster than 2 on a 2-core CPU shared with other jobs")
    p.add_argument("--tag_suffix", default="", help="appended to the record names experiments/<date>_layout_<layout>"
                   "[_seed<k>]<SUFFIX>, e.g. _12min for a longer run beside the default one")
    p.add_argument("--work_dir", default="build/bench_learning", help="run directories (weights; not committed)")
    p.add_argument("--experiments_root", default="experiments", help="root of the experiment records")
    p.add_argument("--output", default="benchmarks/results/learning.json", help="JSON results")
    p.add_argument("--figure", default="benchmarks/results/learning_curve.png", help="held-out curve figure")
    p.add_argument("--quiet", action="store_true", help="do not echo the training/evaluation output")
    args = p.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if args.quick and "--minutes" not in given:
        args.minutes = 1.0
    if args.quick and "--num_samples" not in given:
        args.num_samples = 8
    args.layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    bad = [x for x in args.layouts if x not in LAYOUTS]
    if bad or not args.layouts:
        p.error(f"unknown layout(s) {bad}; choose from {', '.join(LAYOUTS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds:
        p.error("--seeds is empty")
    if args.minutes <= 0:
        p.error("--minutes must be > 0")
    for s in ("train", "val", args.split):
        if not (Path(args.data_dir) / f"{s}.json.gz").is_file():
            p.error(f"{Path(args.data_dir) / f'{s}.json.gz'} not found; build the dataset (create_distmat_data.py) "
                    "or pass --data_dir")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    work = Path(args.work_dir)
    results = []
    t0 = time.time()
    try:
        for seed in args.seeds:
            backbone = work / f"backbone_seed{seed}"
            if not (backbone / "config.json").is_file():
                run_cmd([sys.executable, "-m", "proteinmtp.tiny", str(backbone), "--seed", str(seed),
                         "--hidden_size", str(args.hidden_size), "--num_layers", str(args.num_layers)],
                        work / f"backbone_seed{seed}.log", quiet=True)
            for layout in args.layouts:
                results.append(run_layout(args, layout, seed, backbone, work))
                out = {"config": {k: v for k, v in vars(args).items()},
                       "command": " ".join(["python", "benchmarks/bench_learning.py"] + sys.argv[1:]),
                       "load_average_1_5_15": list(os.getloadavg()), "cpu_count": os.cpu_count(),
                       "wall_seconds": time.time() - t0, "runs": results}
                write_json(Path(args.output), out)      # partial results survive an interruption
                plot_curves(results, Path(args.figure))
    except RuntimeError as e:
        print(f"bench_learning: {e}", file=sys.stderr)
        return 1
    print_table(results)
    print(f"\nwrote {args.output} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
