"""Secondary structure as an output and a training signal: held-out Q3/Q8, the ablation on the distance
errors, and the hand choice from the predicted helices.

    python benchmarks/bench_ss.py --data_dir build/full_ss --work_dir build/bench_ss         # train + evaluate
    python benchmarks/bench_ss.py --data_dir build/full_ss --work_dir build/bench_ss --no_train  # evaluate only

Arms (the reference recipe: all-MiniLM-L6-v2 text-pretrained, fully fine-tuned, direct layout, distance head
with the separation prior, crops 128/256, LR 5e-5 backbone / 1e-3 head, 1500-step schedule stopped after
``--minutes`` wall minutes of one torch thread; the dataset must carry DSSP ss8 labels):
  ss      ``--ss_weight`` (default 0.5): the 8-state SS head trained jointly
  no_ss   ``--ss_weight 0``: no SS head (the reference run's architecture)
each for ``--seeds`` (runs ``<work_dir>/<arm>_s<seed>``; an existing finished run is reused, a partial one
resumed by train_distmat.py).

Evaluation on a fixed seeded subset of ``--n_test`` test chains (≤ ``--max_eval_len`` residues): per protein
``proteinmtp.eval_scoring.score_prediction`` of the pipeline's structure (``predict.structure_from_distances``,
refinement; the ss arm picks its hand from its predicted helices, the no_ss arm by the all-residue rule),
Q3/Q8 pooled over residues with a DSSP state (``secondary.ss_block``; Cα-only chains have none), beside two
baselines of the test chains: the majority class, and the training split's most frequent state per amino
acid (a one-residue propensity rule). Hand study: each prediction is rebuilt without a hand choice, then TM
of it and of its mirror against the native; the old (all-residue) and the new (predicted-helix) rules are
scored by how often they pick the better hand. Paired differences ss − no_ss: mean per-protein difference
(arms averaged over their seeds first) with a bootstrap 95 % interval over proteins.

Output: ``--output`` JSON (default benchmarks/results/ss.json) and a Markdown table on stdout. Each run's
per-protein evaluation is cached beside it (``<run>.bench_ss_n<N>_seed<S>.json``) and reused, so runs can
be evaluated in parallel processes (``--runs`` one each) and aggregated by a last call with all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pretraining import minilm_dir, test_subset  # noqa: E402  (the same backbone and test chains)

METRICS = ("mae", "mae_long", "precision_L5_long", "tm_score", "lddt", "hand_correct")


def train_command(args: argparse.Namespace, ss_weight: float, seed: int, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "train_distmat.py"),
            "--train_data", str(Path(args.data_dir) / "train.json.gz"), "--model_name", minilm_dir(),
            "--residue_layout", "direct", "--head_type", "distance", "--finetune", "full",
            "--init_backbone", "pretrained", "--max_seq_len", "128", "--long_crop_len", "256",
            "--long_crop_fraction", "0.25", "--max_steps", "1500", "--learning_rate", "5e-05",
            "--head_learning_rate", "0.001", "--weight_decay", "0.01", "--warmup_steps", "100",
            "--max_grad_norm", "1.0", "--seed", str(seed), "--logging_steps", "25", "--save_steps", "300",
            "--save_total_limit", "1", "--max_train_minutes", str(args.minutes), "--templates", "0", "--no_tqdm",
            "--ss_weight", str(ss_weight), "--output_dir", str(out)]


def propensity_baseline(train_samples, test: list) -> dict:
    """Q3/Q8 of predicting, per amino acid, the training split's most frequent state for it."""
    from proteinmtp.secondary import NO_STATE, ss_block

    counts: dict[str, Counter] = {}
    for s in train_samples:
        if s.ss8 is None:
            continue
        for aa, c in zip(s.sequence, s.ss8):
            if c != NO_STATE:
                counts.setdefault(aa, Counter())[c] += 1
    overall = sum(counts.values(), Counter()).most_common(1)[0][0]
    best = {aa: c.most_common(1)[0][0] for aa, c in counts.items()}
    pairs = [(s.ss8, "".join(best.get(a, overall) for a in s.sequence)) for s in test if s.ss8 is not None]
    return ss_block(pairs) or {}


def evaluate(run_dir: Path, test: list, threads: int) -> dict:
    """Per-protein metrics, SS pairs and the hand study of one run on the test chains."""
    import torch

    from proteinmtp.eval_scoring import score_prediction
    from proteinmtp.geometry import choose_hand, mirror
    from proteinmtp.metrics import tm_score
    from proteinmtp.model import load_run
    from proteinmtp.predict import predicted_helix_mask, structure_from_distances
    from proteinmtp.secondary import eval_pairs

    torch.set_num_threads(threads)
    run = load_run(run_dir)
    rows, ss_pairs, hand = {}, [], {}
    t0 = time.time()
    for k, s in enumerate(test):
        dp = run.predict([s.sequence])[0]
        sp = structure_from_distances(dp, hand_rule="predicted_helices")   # the rule under study
        row = score_prediction(np.asarray(dp.dist, float), np.asarray(dp.contact_prob, float), sp.ca_xyz, s)
        row["hand_rule_helices"] = float(sp.info.get("hand_rule") == "predicted_helices")
        rows[s.id] = row
        ss_pairs += eval_pairs(s, dp)
        # hand study: the structure as built (undo the choice), both rules, TM of both hands
        built = mirror(sp.ca_xyz) if sp.info.get("mirrored") else sp.ca_xyz
        m = s.mask()
        ca = np.asarray(s.ca, float)[m]
        tm_built, tm_mirror = float(tm_score(built[m], ca)), float(tm_score(mirror(built)[m], ca))
        old = choose_hand(built)[1]
        helix = predicted_helix_mask(dp)
        new = choose_hand(built, helix=helix)[1] if helix is not None else old
        better_is_mirror = tm_mirror > tm_built
        hand[s.id] = {"tm_built": tm_built, "tm_mirror": tm_mirror,
                      "old_correct": float(old["mirrored"] == better_is_mirror or tm_mirror == tm_built),
                      "new_correct": float(new["mirrored"] == better_is_mirror or tm_mirror == tm_built),
                      "new_rule": new.get("rule", "all_residues"), "n_helix_quadruples": new.get("n_helix_quadruples", 0),
                      "tm_old": tm_mirror if old["mirrored"] else tm_built,
                      "tm_new": tm_mirror if new["mirrored"] else tm_built,
                      "tm_gap": abs(tm_mirror - tm_built)}
        if (k + 1) % 25 == 0:
            print(f"  {run_dir.name}: {k + 1}/{len(test)} chains, {time.time() - t0:.0f} s", flush=True)
    cfg = json.loads((run_dir / "training_config.json").read_text())
    log = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines() if x.strip()]
    steps = max((r.get("step", 0) for r in log), default=0)
    return {"rows": rows, "ss_pairs": ss_pairs, "hand": hand, "steps": int(steps),
            "ss_weight": float(cfg["model"]["head"].get("ss_weight", 0.0))}


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    from bench_pretraining import bootstrap_diff as bd  # one implementation of the paired interval

    return bd(a, b, n_boot=n_boot, seed=seed)


def mean_rows(rows: dict, ids: list[str], key: str) -> float | None:
    v = np.array([rows[i].get(key, np.nan) for i in ids], dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def aggregate(args, test, evals: dict[str, dict[int, dict]], baseline: dict) -> dict:
    from proteinmtp.secondary import ss_block

    ids = [s.id for s in test]
    out: dict = {"conditions": {"n_test": len(ids), "test_seed": args.test_seed, "max_eval_len": args.max_eval_len,
                                "minutes_per_run": args.minutes, "torch_threads": 1, "seeds": args.seeds,
                                "ss_weight": args.ss_weight, "data_dir": str(args.data_dir)},
                 "arms": {}, "baselines": baseline}
    per_protein: dict[str, dict[str, np.ndarray]] = {}
    for arm, by_seed in evals.items():
        seeds = {}
        for seed, ev in sorted(by_seed.items()):
            block = {k: mean_rows(ev["rows"], ids, k) for k in METRICS}
            block["ss"] = ss_block(ev["ss_pairs"])
            h = ev["hand"]
            gap = [i for i in ids if h[i]["tm_gap"] >= args.hand_gap]
            block["hand"] = {
                "old_rule_correct": mean_rows(h, ids, "old_correct"),
                "new_rule_correct": mean_rows(h, ids, "new_correct"),
                "n_new_rule_used_helices": int(sum(h[i]["new_rule"] == "predicted_helices" for i in ids)),
                f"old_rule_correct_gap{args.hand_gap}": mean_rows(h, gap, "old_correct"),
                f"new_rule_correct_gap{args.hand_gap}": mean_rows(h, gap, "new_correct"),
                f"n_gap{args.hand_gap}": len(gap),
                "tm_old_rule": mean_rows(h, ids, "tm_old"), "tm_new_rule": mean_rows(h, ids, "tm_new"),
                "tm_best_hand": float(np.mean([max(h[i]["tm_built"], h[i]["tm_mirror"]) for i in ids])),
            }
            block["steps"] = ev["steps"]
            seeds[str(seed)] = block
        arm_mean = {k: float(np.mean([b[k] for b in seeds.values() if b[k] is not None]))
                    for k in METRICS if any(b[k] is not None for b in seeds.values())}
        out["arms"][arm] = {"seeds": seeds, "mean": arm_mean}
        per_protein[arm] = {k: np.array([np.nanmean([by_seed[s]["rows"][i].get(k, np.nan) for s in by_seed])
                                         for i in ids]) for k in METRICS}
        hs = {k: np.array([np.mean([by_seed[s]["hand"][i][k] for s in by_seed]) for i in ids])
              for k in ("old_correct", "new_correct", "tm_old", "tm_new")}
        out["arms"][arm]["hand_new_minus_old"] = {
            "correct": bootstrap_diff(hs["new_correct"], hs["old_correct"]),
            "tm": bootstrap_diff(hs["tm_new"], hs["tm_old"])}
    if {"ss", "no_ss"} <= set(per_protein):
        out["paired_ss_minus_no_ss"] = {k: bootstrap_diff(per_protein["ss"][k], per_protein["no_ss"][k])
                                        for k in METRICS}
    return out


def table(res: dict) -> str:
    lines = ["| arm | seed | steps | Q3 | Q8 | MAE Å | MAE long Å | P@L/5 long | TM | hand old→new rule |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, a in res["arms"].items():
        for seed, b in a["seeds"].items():
            ss = b["ss"] or {}
            q3 = f"{ss['q3']:.3f}" if ss else "—"
            q8 = f"{ss['q8']:.3f}" if ss else "—"
            h = b["hand"]
            lines.append(f"| {arm} | {seed} | {b['steps']} | {q3} | {q8} | {b['mae']:.3f} | {b['mae_long']:.3f} | "
                         f"{b['precision_L5_long']:.3f} | {b['tm_score']:.3f} | "
                         f"{h['old_rule_correct']:.3f} → {h['new_rule_correct']:.3f} |")
    bl = res["baselines"]
    lines.append(f"\nbaselines (test chains with DSSP states): majority class Q3 {bl['majority']['q3_majority']:.3f} "
                 f"({bl['majority']['q3_majority_state']}), Q8 {bl['majority']['q8_majority']:.3f}; per-residue-type "
                 f"propensity Q3 {bl['propensity']['q3']:.3f}, Q8 {bl['propensity']['q8']:.3f}; single-sequence "
                 "PSIPRED Q3 ≈ 0.70 (literature anchor)")
    for k, d in (res.get("paired_ss_minus_no_ss") or {}).items():
        if d["mean"] is not None:
            lines.append(f"ss − no_ss {k}: {d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] (n={d['n']})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default="build/full_ss", help="dataset with ss8 labels (train/test.json.gz)")
    p.add_argument("--work_dir", default="build/bench_ss", help="where the runs go (<arm>_s<seed>)")
    p.add_argument("--output", default="benchmarks/results/ss.json", help="result JSON")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds per arm")
    p.add_argument("--ss_weight", type=float, default=0.5, help="SS loss weight of the ss arm")
    p.add_argument("--minutes", type=float, default=8.0, help="wall minutes of training per run (one thread)")
    p.add_argument("--n_test", type=int, default=150, help="test chains evaluated (seeded subset; 0 = all)")
    p.add_argument("--test_seed", type=int, default=0, help="seed of the test subset")
    p.add_argument("--max_eval_len", type=int, default=512, help="longest test chain evaluated, residues")
    p.add_argument("--hand_gap", type=float, default=0.02,
                   help="hand accuracy is also reported on chains whose two hands differ by at least this TM")
    p.add_argument("--no_train", action="store_true", help="evaluate existing runs only (missing ones skipped)")
    p.add_argument("--runs", nargs="*", default=None,
                   help="explicit ARM:SEED=RUN_DIR entries instead of <work_dir>/<arm>_s<seed>")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(args.work_dir)
    runs: dict[tuple[str, int], Path] = {}
    if args.runs:
        for spec in args.runs:
            key, _, path = spec.partition("=")
            arm, _, seed = key.partition(":")
            runs[(arm, int(seed))] = Path(path)
    else:
        for seed in args.seeds:
            for arm in ("ss", "no_ss"):
                runs[(arm, seed)] = work / f"{arm}_s{seed}"
    for (arm, seed), out in runs.items():
        if (out / "head.safetensors").exists() or args.no_train:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        w = args.ss_weight if arm == "ss" else 0.0
        print(f"training {arm} seed {seed} -> {out}", flush=True)
        with open(f"{out}.log", "a") as log:
            subprocess.run(train_command(args, w, seed, out), check=True, stdout=log, stderr=subprocess.STDOUT,
                           cwd=ROOT)
    from proteinmtp.dataio import open_dataset
    from proteinmtp.fileio import write_json
    from proteinmtp.secondary import ss_block

    test = test_subset(args)
    with_ss = [s for s in test if s.ss8 is not None and set(s.ss8) - {"?"}]
    maj = ss_block([(s.ss8, s.ss8) for s in with_ss]) or {}
    baseline = {"majority": maj, "propensity": propensity_baseline(
        open_dataset(Path(args.data_dir) / "train.json.gz").samples, with_ss),
        "n_test_with_ss": len(with_ss)}
    evals: dict[str, dict[int, dict]] = {}
    for (arm, seed), out in runs.items():
        if not (out / "head.safetensors").exists():
            print(f"skipping {arm} seed {seed}: no finished run at {out}", flush=True)
            continue
        cache = out.parent / f"{out.name}.bench_ss_n{len(test)}_seed{args.test_seed}.json"
        if cache.is_file():
            ev = json.loads(cache.read_text())
            ev["ss_pairs"] = [tuple(x) for x in ev["ss_pairs"]]
            print(f"reusing {cache}", flush=True)
        else:
            print(f"evaluating {arm} seed {seed} ({out}) on {len(test)} chains", flush=True)
            ev = evaluate(out, test, threads=1)
            write_json(cache, ev)
        evals.setdefault(arm, {})[seed] = ev
        res = aggregate(args, test, evals, baseline)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.output, res)
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
