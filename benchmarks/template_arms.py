"""Trained arms with and without templates on the five-times corpus (issue 21 §6): ``bench_templates.py
--model_arms`` runs this.

Every arm is the best arm without templates of ``bench_pretraining.py`` (frozen text-pretrained MiniLM, its
last hidden state, the default distance head), with the same crops, learning rate and number of optimizer
steps; only the template options differ:

* ``no_templates``    ``--templates 0``;
* ``templates``       ``--templates K``, the run's own training split as the database, default selection
                      (identity <= 0.95, own split cluster dropped with probability 0.5, dropout 0.1);
* ``templates_lt30``  the same with ``--template_max_identity 0.299``: no template of 30 % identity or more,
                      in training and at evaluation (the held-out split's own condition); one seed;
* ``templates_nocopy`` the same as ``templates`` without the copy path (``--no-template_copy``): the
                      template embedding alone (every seed: it decides whether the copy path stays).

Each run is trained by ``train_distmat.py`` and evaluated by ``evaluate_distmat_model.py`` on the test
chains ``bench_pretraining.py`` uses (``test_subset``: a seeded subset of the test split, <= --max_eval_len
residues). A templates run's evaluation also scores ``model_no_templates``: the same weights on their
no-template path. The CSV gives per protein the best template's identity, which bins the breakdown (no hit,
< 20 %, 20-30 %, >= 30 %). Intervals: paired 95 % bootstrap over proteins of the per-protein mean over seeds
(``bench_pretraining.bootstrap_diff``); seed spread: sd of the per-seed means.

Resumable: a finished run leaves WORK/<arm>_s<seed>/result.json and is skipped; a killed one resumes its
training from its last checkpoint (every 400 steps) when the same command runs again.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from bench_learning import run_cmd
from bench_pretraining import _child_cpu, bootstrap_diff, test_subset
from llm_backbones import minilm_dir

from proteinmtp.fileio import atomic_open, write_json

REPO = Path(__file__).resolve().parents[1]
KEYS = ("mae", "mae_long", "precision_L5_long", "tm_score", "lddt")
LOWER_IS_BETTER = {"mae", "mae_long"}
BINS = (("no hit", None, None), ("<20%", 0.0, 0.2), ("20-30%", 0.2, 0.3), (">=30%", 0.3, 1.01))
ARMS = {"no_templates": ["--templates", "0"],
        "templates": ["--templates", "{k}"],
        "templates_lt30": ["--templates", "{k}", "--template_max_identity", "0.299"],
        "templates_nocopy": ["--templates", "{k}", "--no-template_copy"]}
BLOCKS = ("model", "model_no_templates", "prior", "neighbour", "oracle")


def identity_bin(ident: float | None) -> str:
    if ident is None or not math.isfinite(ident):
        return "no hit"
    return next(name for name, lo, hi in BINS[1:] if lo <= ident < hi)


def test_file(args, work: Path) -> Path:
    """The test chains as a dataset file (written once), so that the evaluation CLI scores exactly them."""
    from proteinmtp.dataio import open_dataset
    from proteinmtp.dataset import save_dataset

    out = work / f"test_subset_{args.n_test}_s{args.test_seed}_le{args.max_eval_len}.json.gz"
    if not out.is_file():
        full = open_dataset(Path(args.data_dir) / "test.json.gz")
        save_dataset(out, test_subset(args), full.global_stats,
                     {**(full.config or {}), "subset_of": str(Path(args.data_dir) / "test.json.gz"),
                      "subset_chains": args.n_test, "subset_seed": args.test_seed})
    return out


def _float(x: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def read_csv(path: Path) -> tuple[dict, dict]:
    """eval_per_protein.csv -> ({id: {block: {metric: value}}}, {id: {identity, coverage, n_templates}})."""
    scores, tmpl = {}, {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            scores[row["id"]] = {b: {k: _float(row.get(f"{b}_{k}")) for k in KEYS}
                                 for b in BLOCKS if f"{b}_mae" in row}
            tmpl[row["id"]] = {"identity": _float(row.get("template_identity")),
                               "coverage": _float(row.get("template_coverage")),
                               "n_templates": _float(row.get("n_templates"))}
    return scores, tmpl


def one_run(args, arm: str, seed: int, work: Path) -> dict:
    """Train and evaluate one arm x seed (skipped when its result exists); returns its result."""
    out_dir = work / f"{arm}_s{seed}"
    result = out_dir / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    run_dir, eval_dir = out_dir / "run", out_dir / "eval"
    data = Path(args.data_dir)
    lr = f"{args.lr_head:g}"
    cmd = [sys.executable, "train_distmat.py", "--train_data", str(data / "train.json.gz"),
           "--model_name", minilm_dir(), "--finetune", "frozen", "--residue_layout", "direct",
           "--feature_cache_dir", str(work / "feature_cache"), "--output_dir", str(run_dir),
           "--max_steps", str(args.arm_steps), "--max_seq_len", str(args.max_seq_len),
           "--long_crop_len", str(args.long_crop_len), "--learning_rate", lr, "--head_learning_rate", lr,
           "--warmup_steps", str(max(1, min(100, args.arm_steps // 10))),
           "--logging_steps", str(max(1, args.arm_steps // 50)), "--eval_steps", str(10 ** 9),
           "--save_steps", "400", "--save_total_limit", "1", "--seed", str(seed), "--no_tqdm"]
    cmd += [a.format(k=args.k) for a in ARMS[arm]]
    print(f"  {arm} seed {seed}: training {args.arm_steps} steps", flush=True)
    t0, c0 = time.time(), _child_cpu()
    run_cmd(cmd, out_dir / "train.log", quiet=True, threads=1)
    train_s, train_cpu = time.time() - t0, _child_cpu() - c0
    print(f"  {arm} seed {seed}: evaluating", flush=True)
    t0 = time.time()
    shutil.rmtree(eval_dir, ignore_errors=True)
    run_cmd([sys.executable, "evaluate_distmat_model.py", "--model_path", str(run_dir),
             "--test_data", str(test_file(args, work)), "--output_dir", str(eval_dir), "--no_figures",
             "--workers", "1"], out_dir / "eval.log", quiet=True, threads=1)
    ev = json.loads((eval_dir / "eval_results.json").read_text())
    head = json.loads((run_dir / "training_config.json").read_text())["model"]["head"]
    scores, tmpl = read_csv(eval_dir / "eval_per_protein.csv")
    rows = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines() if x.strip()]
    res = {"arm": arm, "seed": seed, "max_steps": args.arm_steps,
           "steps_done": max((r["step"] for r in rows if "step" in r), default=0),
           "train_seconds": train_s, "train_cpu_seconds": train_cpu, "eval_seconds": time.time() - t0,
           "command": " ".join(cmd[1:]), "templates": ev.get("templates"),
           "head_templates": {k: v for k, v in head.items() if k.startswith("template")},
           "residue_lddt_spearman": (ev["model"].get("confidence") or {}).get("residue_lddt_spearman"),
           "per_protein": scores, "best_template": tmpl}
    write_json(result, res)
    if not args.keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
    return res


def _vec(rows: dict, ids: list[str], block: str, key: str) -> np.ndarray:
    return np.array([rows.get(i, {}).get(block, {}).get(key, np.nan) for i in ids], dtype=float)


def _nanmean(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def aggregate(args, work: Path) -> dict:
    """Per arm: per-seed means, mean and sd over seeds; paired contrasts; the identity breakdown."""
    done = {}
    for f in sorted(work.glob("*_s*/result.json")):
        r = json.loads(f.read_text())
        done.setdefault(r["arm"], {})[r["seed"]] = r
    if not done:
        return {}
    first = next(iter(next(iter(done.values())).values()))
    ids = list(first["per_protein"])
    # per protein, the mean over an arm's seeds (block "model"; templates arms also their no-template path)
    methods: dict[str, np.ndarray] = {}
    arms_out = {}
    for arm, by_seed in done.items():
        seeds = sorted(by_seed)
        blocks = [("model", arm)] + ([("model_no_templates", f"{arm}:no_template_path")] if arm != "no_templates"
                                     else [])
        for block, name in blocks:
            per_seed = {s: {k: _nanmean(_vec(by_seed[s]["per_protein"], ids, block, k)) for k in KEYS}
                        for s in seeds}
            arms_out[name] = {"seeds": seeds, "per_seed": per_seed,
                              "steps_done": {s: by_seed[s]["steps_done"] for s in seeds},
                              "train_cpu_seconds": {s: round(by_seed[s]["train_cpu_seconds"], 1) for s in seeds},
                              "mean": {k: float(np.mean([per_seed[s][k] for s in seeds])) for k in KEYS},
                              "sd": {k: float(np.std([per_seed[s][k] for s in seeds], ddof=1)) if len(seeds) > 1
                                     else None for k in KEYS}}
            if block == "model":
                arms_out[name]["residue_lddt_spearman"] = {s: by_seed[s]["residue_lddt_spearman"] for s in seeds}
            methods[name] = {k: np.nanmean(np.stack([_vec(by_seed[s]["per_protein"], ids, block, k)
                                                     for s in seeds]), axis=0) for k in KEYS}
    for b in ("prior", "neighbour", "oracle"):
        methods[b] = {k: _vec(first["per_protein"], ids, b, k) for k in KEYS}
        arms_out[b] = {"mean": {k: _nanmean(methods[b][k]) for k in KEYS}}
    pairs = [("templates", "no_templates"), ("templates", "neighbour"), ("templates", "prior"),
             ("templates", "templates_nocopy"), ("templates_nocopy", "no_templates"),
             ("templates_nocopy", "neighbour"),
             ("templates", "templates:no_template_path"), ("no_templates", "neighbour"),
             ("templates_lt30", "no_templates"), ("templates_lt30", "neighbour"), ("templates_lt30", "prior")]
    contrasts = {f"{a} - {b}": {k: bootstrap_diff(methods[a][k], methods[b][k]) for k in KEYS}
                 for a, b in pairs if a in methods and b in methods}
    # the breakdown by the best template's identity (default selection; every seed and arm shares the search)
    ref = next((done[a] for a in ("templates", "templates_nocopy", "templates_lt30") if a in done), None)
    by_identity = {}
    if ref:
        tm = next(iter(ref.values()))["best_template"]
        bins = np.array([identity_bin(tm.get(i, {}).get("identity", float("nan"))) for i in ids])
        for name, _, _ in BINS:
            sel = bins == name
            entry = {"n_chains": int(sel.sum()),
                     "means": {m: {k: _nanmean(v[k][sel]) for k in KEYS} for m, v in methods.items()
                               if not m.startswith("templates_lt30")}}
            for arm in ("templates", "templates_nocopy"):
                if sel.sum() >= 2 and arm in methods and "no_templates" in methods:
                    for other in ("no_templates", "neighbour"):
                        entry[f"{arm} - {other}"] = {k: bootstrap_diff(methods[arm][k][sel], methods[other][k][sel])
                                                     for k in KEYS}
            by_identity[name] = entry
    return {"arms": arms_out, "contrasts": contrasts, "by_identity": by_identity, "n_test": len(ids),
            "test_ids": ids}


def _fmt(v, d: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def markdown(res: dict) -> str:
    lines = ["| arm | seeds | steps | " + " | ".join(KEYS) + " |", "|---" * (3 + len(KEYS)) + "|"]
    for name, a in res["arms"].items():
        sd = a.get("sd") or {}
        cells = [f"{_fmt(a['mean'][k])} ± {_fmt(sd[k])}" if sd.get(k) is not None else _fmt(a["mean"][k])
                 for k in KEYS]
        steps = ",".join(str(v) for v in (a.get("steps_done") or {}).values()) or "-"
        lines.append(f"| {name} | {len(a.get('seeds', [])) or '-'} | {steps} | " + " | ".join(cells) + " |")
    lines += ["", "paired differences over proteins (mean [95 % CI]; MAE: negative = better)", ""]
    for name, c in res["contrasts"].items():
        lines.append(f"- {name}: " + "; ".join(
            f"{k} {_fmt(c[k]['mean'])} [{_fmt(c[k]['ci95'][0])}, {_fmt(c[k]['ci95'][1])}]" for k in KEYS))
    shown = ("templates", "templates_nocopy", "no_templates", "neighbour", "prior")
    lines += ["", f"by the best template's identity (chains; P@L/5 long and TM: {' / '.join(shown)})", ""]
    for b, e in res["by_identity"].items():
        mm = e["means"]
        cells = [f"{_fmt(mm[m]['precision_L5_long'])}, {_fmt(mm[m]['tm_score'])}" if m in mm else "-"
                 for m in shown]
        lines.append(f"- {b} ({e['n_chains']}): " + " / ".join(cells))
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    """Top row: each metric's mean per method (error bar: sd over seeds). Bottom row: by identity bin."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [m for m in ("prior", "neighbour", "no_templates", "templates_nocopy", "templates",
                         "templates:no_template_path", "templates_lt30") if m in res["arms"]]
    colours = dict(zip(order, plt.cm.tab10.colors))
    fig, ax = plt.subplots(2, len(KEYS), figsize=(4 * len(KEYS), 7.5))
    for j, k in enumerate(KEYS):
        means = [res["arms"][m]["mean"][k] or 0 for m in order]
        errs = [(res["arms"][m].get("sd") or {}).get(k) or 0 for m in order]
        ax[0, j].bar(range(len(order)), means, yerr=errs, color=[colours[m] for m in order], capsize=3)
        ax[0, j].set_xticks(range(len(order)), [m.replace(":no_template_path", "\n(no-template path)")
                                                 for m in order], rotation=60, ha="right", fontsize=7)
        ax[0, j].set_title(k + (" (Å, lower better)" if k in LOWER_IS_BETTER else ""))
        bins = [b for b, e in res["by_identity"].items() if e["n_chains"]]
        for m in ("prior", "neighbour", "no_templates", "templates_nocopy", "templates"):
            if m in order:
                ys = [res["by_identity"][b]["means"].get(m, {}).get(k) for b in bins]
                ax[1, j].plot(range(len(bins)), [np.nan if y is None else y for y in ys], "o-", label=m,
                              color=colours[m])
        ax[1, j].set_xticks(range(len(bins)), [f"{b}\n({res['by_identity'][b]['n_chains']})" for b in bins],
                            fontsize=7)
        ax[1, j].set_xlabel("best template identity (chains)", fontsize=8)
    ax[1, 0].legend(fontsize=7)
    fig.suptitle(f"templates on held-out chains ({res['n_test']} test chains, frozen MiniLM, equal steps)")
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def run(args) -> int:
    """All arms (seed by seed, so that a stopped session has paired results; templates_lt30 after the first
    seed), results merged into
    ``args.output`` under ``model_arms``, the figure beside it."""
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    tasks = [(arm, s) for s in seeds for arm in ("no_templates", "templates", "templates_nocopy")]
    tasks.insert(3, ("templates_lt30", seeds[0]))
    tasks = [t for t in tasks if t[0] in args.arms.split(",")]

    def write() -> dict:
        res = aggregate(args, work)
        if not res:
            return res
        res["config"] = {k: v for k, v in vars(args).items() if k in (
            "data_dir", "arm_steps", "seeds", "k", "n_test", "test_seed", "max_eval_len", "max_seq_len",
            "long_crop_len", "lr_head")}
        res["note"] = ("frozen all-MiniLM-L6-v2 (fp32 features, last layer), default distance head; "
                       "threads: 1 per run; steps_done per seed are the optimizer steps of each run")
        out = Path(args.output)
        full = json.loads(out.read_text()) if out.is_file() else {}
        full["model_arms"] = res
        write_json(out, full)
        plot(res, out.with_name("templates_arms.png"))
        return res

    for arm, seed in tasks:
        if args.report_only and not (work / f"{arm}_s{seed}" / "result.json").is_file():
            continue
        one_run(args, arm, seed, work)
        write()
    res = write()
    if res:
        print(markdown(res))
        print(f"\nwrote {args.output} (model_arms) and {Path(args.output).with_name('templates_arms.png')}")
    return 0
