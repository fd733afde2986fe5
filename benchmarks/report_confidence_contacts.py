"""Confidence and Cα-vs-Cβ contact numbers of one evaluation (an ``evaluate_distmat_model.py`` output
directory), with 95 % bootstrap intervals over proteins (seeded), as one table + JSON; copies the
evaluation's confidence and contact figures beside the JSON.

    python benchmarks/report_confidence_contacts.py --eval_dir eval/ref --out benchmarks/results/confidence_contacts.json
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _col(rows: list[dict], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])


def bootstrap(fn, cols: list[np.ndarray], n: int, seed: int) -> list[float]:
    """95 % percentile interval of ``fn(*cols)`` over proteins resampled with replacement."""
    rng = np.random.default_rng(seed)
    P = len(cols[0])
    vals = []
    for _ in range(n):
        idx = rng.integers(0, P, P)
        v = fn(*(c[idx] for c in cols))
        if np.isfinite(v):
            vals.append(v)
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if vals else [None, None]


def _pearson(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 else np.nan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--eval_dir", required=True, help="output directory of evaluate_distmat_model.py (model mode)")
    ap.add_argument("--out", default="benchmarks/results/confidence_contacts.json", help="JSON output path")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the proteins")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = ap.parse_args(argv)
    from proteinmtp.fileio import write_json

    ev = Path(args.eval_dir)
    res = json.loads((ev / "eval_results.json").read_text())
    with open(ev / "eval_per_protein.csv") as fh:
        rows = list(csv.DictReader(fh))
    conf = res["model"]["confidence"]
    out: dict = {"conditions": {"n_proteins": res["n_proteins"], "test_data": Path(res["config"]["test_data"]).name,
                                "num_samples": res["config"].get("num_samples"),
                                "model_name": "/".join(Path(str(res["config"].get("model_name"))).parts[-2:]), "mds_method": res["config"]["mds_method"],
                                "bootstrap": args.bootstrap, "seed": args.seed},
                 "confidence": {k: v for k, v in conf.items() if not k.endswith("reliability")}}
    ptm, tm = _col(rows, "model_ptm"), _col(rows, "model_tm_score")
    out["confidence"]["ptm_pearson_ci95"] = bootstrap(_pearson, [ptm, tm], args.bootstrap, args.seed)
    out["confidence"]["tm_mean"] = float(np.nanmean(tm))
    print(f"confidence ({res['n_proteins']} proteins): residue lDDT Pearson {conf['residue_lddt_pearson']:.3f}, "
          f"Spearman {conf['residue_lddt_spearman']:.3f}, pair ECE {conf['pair_ece']:.3f}, pTM mean "
          f"{conf['ptm_mean']:.3f} vs TM mean {np.nanmean(tm):.3f}, pTM-TM Pearson {conf['ptm_pearson']:.3f} "
          f"[{out['confidence']['ptm_pearson_ci95'][0]:.3f}, {out['confidence']['ptm_pearson_ci95'][1]:.3f}]")
    contacts = {}
    print("\n| method | metric | Cα truth | Cβ truth | Cβ − Cα (95 % CI, chains with Cβ) |")
    print("|---|---|---|---|---|")
    for m in ("model", "prior", "neighbour", "oracle"):
        if not res.get(m):
            continue
        for k in ("precision_L5_long", "precision_L_long", "precision_L5_all", "precision_L_all"):
            a, b = _col(rows, f"{m}_{k}"), _col(rows, f"{m}_{k}_cb")
            ok = np.isfinite(a) & np.isfinite(b)
            gap = float(np.mean(b[ok] - a[ok])) if ok.any() else None
            ci = bootstrap(lambda x, y: np.nanmean(y - x), [a[ok], b[ok]], args.bootstrap, args.seed)
            contacts[f"{m}_{k}"] = {"ca": res[m].get(k), "cb": res[m].get(f"{k}_cb"), "cb_minus_ca_paired": gap,
                                    "ci95": ci, "n_chains_with_cb": int(ok.sum())}
            f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            print(f"| {m} | {k} | {f(res[m].get(k))} | {f(res[m].get(f'{k}_cb'))} | {f(gap)} "
                  f"[{f(ci[0])}, {f(ci[1])}] (n={int(ok.sum())}) |")
    out["contacts"] = contacts
    outp = Path(args.out)
    for name in ("confidence.png", "contact_precision.png"):
        src = ev / "visualizations" / name
        if src.is_file():
            dst = outp.with_name(f"{outp.stem}_{name}")
            shutil.copyfile(src, dst)
            out.setdefault("figures", []).append(dst.name)
    write_json(outp, out)
    print(f"wrote {outp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
