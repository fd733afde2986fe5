"""The seed's v1 (coordinate head) against v2 (distance head): same data, same tiny backbone, same budget.

Both runs train the same tiny random-initialised Qwen2 (``python -m proteinmtp.tiny``, hidden 128, 4 layers,
full fine-tuning, echo layout) on the same training split with the same seed, optimiser, schedule, crops
and number of optimiser steps, CONCURRENTLY (one torch thread each, so a CPU shared with other jobs slows
both alike); only ``--head_type`` differs (``coords`` vs ``distance``). Each run is then scored by
``evaluate_distmat_model.py`` on the held-out split, unchanged (the coordinate head's distance matrix is
the exact distance matrix of its coordinates, reconstructed like any other prediction).

    python benchmarks/v1_vs_v2.py                      # ~15-25 min on 2 shared cores
    python benchmarks/v1_vs_v2.py --skip_train         # re-evaluate / re-tabulate existing runs

Writes experiments/<date>_v1_coords/ and experiments/<date>_v2_distance/ (config.json, training_log.txt,
eval_results.json, eval_per_protein.csv, visualizations/; the weights stay in their run/ subfolder, which is
not meant to be committed), prints a Markdown table and writes benchmarks/results/v1_vs_v2.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from proteinmtp.fileio import atomic_write

REPO = Path(__file__).resolve().parents[1]
NAMES = {"coords": "v1_coords", "distance": "v2_distance"}
ROWS = (("mae", "MAE all"), ("mae_local", "MAE local 1-5"), ("mae_short", "MAE short 6-11"),
        ("mae_medium", "MAE medium 12-23"), ("mae_long", "MAE long >=24"), ("pearson", "Pearson r"),
        ("precision_L5_long", "P@L/5 long"), ("precision_L_long", "P@L long"), ("rmsd", "RMSD Å"),
        ("tm_score", "TM-score"), ("gdt_ts", "GDT-TS"), ("lddt", "lDDT-Cα"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = Path("data") / "demo" / "dataset"          # relative paths: to the repository root
    p.add_argument("--train_data", default=str(d / "train.json.gz"),
                   help="training split (every relative path here is relative to the repository root)")
    p.add_argument("--val_data", default=str(d / "val.json.gz"), help="validation split (curve during training)")
    p.add_argument("--test_data", default=str(d / "test.json.gz"), help="held-out split scored at the end")
    p.add_argument("--max_steps", type=int, default=500, help="optimiser steps of each run (the shared budget)")
    p.add_argument("--max_minutes", type=float, default=20.0,
                   help="safety cap on each run's wall time (minutes); the step budget is the comparison")
    p.add_argument("--max_seq_len", type=int, default=128, help="training crop (residues)")
    p.add_argument("--eval_steps", type=int, default=100, help="validation every N steps (training curve)")
    p.add_argument("--max_eval_samples", type=int, default=16, help="validation chains per curve point")
    p.add_argument("--seed", type=int, default=0, help="seed of both runs")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (both runs run at once)")
    p.add_argument("--experiments_root", default="experiments", help="where the records go (relative: to the repo)")
    p.add_argument("--date", default=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
                   help="date prefix of the record directories (UTC today)")
    p.add_argument("--skip_train", action="store_true", help="reuse the existing runs; only evaluate + tabulate")
    p.add_argument("--skip_eval", action="store_true", help="reuse existing eval_results.json; only tabulate")
    p.add_argument("--output", default="benchmarks/results/v1_vs_v2.json",
                   help="JSON results (relative: to the repository root)")
    return p.parse_args(argv)


def run_parallel(cmds: dict[str, list[str]], env: dict, logs: dict[str, Path]) -> dict[str, dict]:
    """Start every command at once; wait; return {name: {"rc", "wall_s", "cpu_s"}} (cpu from the child's rusage)."""
    procs, t0, out = {}, time.time(), {}
    for name, cmd in cmds.items():
        logs[name].parent.mkdir(parents=True, exist_ok=True)
        fh = open(logs[name], "w")  # noqa: SIM115  (closed below)
        procs[name] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT), fh)
    pid_name = {p.pid: n for n, (p, _) in procs.items()}
    while pid_name:
        pid, status, ru = os.wait4(-1, 0)
        if pid not in pid_name:
            continue
        name = pid_name.pop(pid)
        proc, fh = procs[name]
        proc.returncode = os.waitstatus_to_exitcode(status)
        fh.close()
        out[name] = {"rc": proc.returncode, "wall_s": time.time() - t0, "cpu_s": ru.ru_utime + ru.ru_stime}
        print(f"  {name}: exit {proc.returncode} after {out[name]['wall_s']:.0f} s wall, "
              f"{out[name]['cpu_s']:.0f} s CPU (log {logs[name]})", file=sys.stderr)
    return out


def last_eval_curve(run_dir: Path) -> list[dict]:
    rows = []
    p = run_dir / "train_log.jsonl"
    if p.is_file():
        for line in p.read_text().splitlines():
            with_eval = json.loads(line)
            if "eval_mae" in with_eval:
                rows.append({k: with_eval[k] for k in with_eval if k == "step" or k.startswith("eval_")})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    for f in (args.train_data, args.val_data, args.test_data):
        if not (REPO / f).is_file():
            print(f"error: {f} not found (build the demo dataset first: see data/demo/README.md)", file=sys.stderr)
            return 2
    py = sys.executable

    def rel(p: str | Path) -> str:
        """Repo-relative path when inside the repo (the records then name no machine-specific path)."""
        p = Path(p) if Path(p).is_absolute() else REPO / p
        p = p.resolve()
        return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)

    args.train_data, args.val_data, args.test_data = rel(args.train_data), rel(args.val_data), rel(args.test_data)
    root = Path(rel(args.experiments_root))
    exp = {h: root / f"{args.date}_{n}" for h, n in NAMES.items()}
    runs = {h: exp[h] / "run" for h in NAMES}
    backbone = root / f"{args.date}_v2_distance" / "backbone"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    timing: dict = {}
    if not args.skip_train:
        if not (backbone / "config.json").is_file():
            (REPO / backbone).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([py, "-m", "proteinmtp.tiny", str(backbone), "--seed", str(args.seed)], cwd=REPO,
                           env=env, check=True)
        common = ["--train_data", args.train_data, "--val_data", args.val_data, "--model_name", str(backbone),
                  "--finetune", "full", "--residue_layout", "echo", "--max_steps", str(args.max_steps),
                  "--max_train_minutes", str(args.max_minutes), "--max_seq_len", str(args.max_seq_len),
                  "--learning_rate", "1e-3", "--head_learning_rate", "1e-3", "--warmup_steps", "50",
                  "--logging_steps", "25", "--eval_steps", str(args.eval_steps), "--save_steps",
                  str(args.max_steps), "--max_eval_samples", str(args.max_eval_samples), "--seed", str(args.seed),
                  "--templates", "0", "--no_tqdm"]
        cmds = {h: [py, "train_distmat.py", *common, "--head_type", h, "--output_dir", str(runs[h])] for h in NAMES}
        print(f"training both heads for {args.max_steps} steps, concurrently ...", file=sys.stderr)
        timing["train"] = run_parallel(cmds, env, {h: REPO / exp[h] / "train_console.log" for h in NAMES})
        if any(t["rc"] != 0 for t in timing["train"].values()):
            print("error: a training run failed; see its train_console.log", file=sys.stderr)
            return 1
        from proteinmtp.experiments import record_training  # config.json, training_log.txt, training curves

        for h in NAMES:
            record_training(REPO / runs[h], REPO / exp[h])
    if not args.skip_eval:
        cmds = {h: [py, "evaluate_distmat_model.py", "--model_path", str(runs[h]), "--test_data", args.test_data,
                    "--output_dir", str(exp[h]), "--quiet"] for h in NAMES}
        print("evaluating both runs on the held-out split ...", file=sys.stderr)
        timing["eval"] = run_parallel(cmds, env, {h: REPO / exp[h] / "eval_console.log" for h in NAMES})
        if any(t["rc"] != 0 for t in timing["eval"].values()):
            print("error: an evaluation failed; see its eval_console.log", file=sys.stderr)
            return 1

    exp = {h: REPO / e for h, e in exp.items()}
    runs = {h: REPO / r for h, r in runs.items()}
    res = {h: json.loads((exp[h] / "eval_results.json").read_text()) for h in NAMES}
    cfg = {h: json.loads((runs[h] / "training_config.json").read_text()) for h in NAMES}
    steps = {}
    for h in NAMES:
        log = [json.loads(x) for x in (runs[h] / "train_log.jsonl").read_text().splitlines() if x.strip()]
        steps[h] = max((r.get("step", 0) for r in log), default=0)
    cols = {"v1 coords": res["coords"]["model"], "v2 distance": res["distance"]["model"],
            "prior": res["distance"]["prior"], "oracle": res["distance"]["oracle"]}
    lines = ["| metric | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, label in ROWS:
        vals = [cols[c].get(key) for c in cols]
        lines.append(f"| {label} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in vals) + " |")
    n = res["distance"].get("n_proteins")
    table = "\n".join(lines)
    print(f"\n{n} held-out proteins ({args.test_data}); {args.max_steps} steps each\n{table}")
    out = {
        "test_data": args.test_data, "n_proteins": n, "max_steps": args.max_steps,
        "steps_done": steps, "seed": args.seed, "threads_per_run": args.threads,
        "parameters": {h: cfg[h].get("parameters") for h in NAMES},
        "timing": timing, "experiments": {h: os.path.relpath(exp[h], REPO) for h in NAMES},
        "model": {h: res[h]["model"] for h in NAMES}, "prior": res["distance"]["prior"],
        "oracle": res["distance"]["oracle"],
        "hand": {h: {k: v for k, v in res[h]["model"].items() if "mirror" in k or "hand" in k} for h in NAMES},
        "val_curve": {h: last_eval_curve(runs[h]) for h in NAMES}, "table_markdown": table,
    }
    output = REPO / args.output
    if output.is_file():   # keep the timing of steps skipped this time
        old = json.loads(output.read_text()).get("timing", {})
        out["timing"] = {**{k: v for k, v in old.items() if k not in timing}, **timing}
    atomic_write(output, json.dumps(out, indent=1, default=str))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
