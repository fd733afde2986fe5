"""Clashes before → after the final clash-resolving stage, with the accuracy it costs, on held-out chains.

    python benchmarks/bench_clashes.py                    # demo test split + 40 chains of ../shared/data
    python benchmarks/bench_clashes.py --quick            # 10 demo chains, one seed, no shared data

For every chain (native Cα trace, residues with a Cα; recorded chain breaks kept as breaks) and every method
of the registry (``proteinmtp.reconstruction.METHODS``), from four kinds of input distances:

* ``prior``: the length-aware separation prior (fitted on the demo training split) for the chain's length,
  what a weak model predicts (the issue's clashing case); its distogram: N(prior, 3 Å) in the model's bins;
* ``noise_1``, ``noise_2``: native distances + symmetric N(0, σ²) noise, σ = 1, 2 Å, clipped at 1 Å (one
  matrix per seed); distogram N(noisy, σ);
* ``oracle``: the exact native distances; distogram N(native, 0.5 Å).

"before" is the method's own output (``reconstruct(final=False)``, bit-identical to the code before the final
stage existed); "after" is that output through ``reconstruction.final_stage`` (what ``reconstruct`` does by
default). The hand is chosen without the native (``geometry.choose_hand``) for both. Reported per
(set, input, method): mean TM, lDDT, RMSD, clashes (non-bonded pairs < 3.5 Å per 100 residues), i, i+2 pairs
< 4.2 Å and bonds off 3.8 ± 0.1 Å per chain, the fraction of chains within every bound, the radius of
gyration over the native's (``rg_ratio``: how compressed a trace is), and the paired
difference after − before with a bootstrap 95 % interval over chains. Timing: one chain cropped to 300
residues (the longest available), one BLAS thread, median of ``--repeats``: each method's own time and the final stage's.
Writes benchmarks/results/clashes.json and prints the tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reconstruction_study as RS  # noqa: E402

from proteinmtp import geometry as G  # noqa: E402
from proteinmtp import metrics as M  # noqa: E402
from proteinmtp import reconstruction as R  # noqa: E402
from proteinmtp.dataio import open_dataset  # noqa: E402
from proteinmtp.fileio import write_json  # noqa: E402
from proteinmtp.folding import gaussian_distogram  # noqa: E402
from proteinmtp.prior import SeparationPrior  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRIOR_SD = 3.0     # Å, spread of the prior's synthetic distogram
ORACLE_SD = 0.5    # Å, spread of the oracle's synthetic distogram
METRICS = ("tm_score", "lddt", "rmsd", "clashes", "n_i2_short", "n_bond_outliers", "ok", "rg_ratio")


def demo_chains(path: Path, n: int | None) -> list[dict]:
    out = []
    for s in open_dataset(path).samples[:n]:
        ca = np.asarray(s.ca, dtype=np.float64)[s.mask()]
        out.append({"id": s.id, "ca": ca, "breaks": list(G.chain_breaks(ca))})
    return out


def inputs(chain: dict, prior: SeparationPrior, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{input name: (distances [L, L] Å, distogram [L, L, 42])} for one chain and noise seed."""
    d = G.distance_matrix(chain["ca"])
    rng = np.random.default_rng([seed, len(d)])
    out = {}
    if seed == 0:   # the deterministic inputs once
        p = prior.predict(len(d))
        out["prior"] = (p, gaussian_distogram(p, PRIOR_SD, RS.BIN_EDGES))
        out["oracle"] = (d, gaussian_distogram(d, ORACLE_SD, RS.BIN_EDGES))
    for sigma in (1.0, 2.0):
        dn = RS.noisy(d, sigma, "uniform", rng)
        out[f"noise_{sigma:g}"] = (dn, gaussian_distogram(dn, sigma, RS.BIN_EDGES))
    return out


def radius_of_gyration(x: np.ndarray) -> float:
    return float(np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean()))


def score(xyz: np.ndarray, chain: dict) -> dict:
    xh, _ = G.choose_hand(xyz, breaks=chain["breaks"])
    c = M.clash_check(xh, chain["breaks"])
    return {"tm_score": M.tm_score(xh, chain["ca"]), "lddt": M.lddt_ca(xh, chain["ca"]),
            "rmsd": M.rmsd(xh, chain["ca"]), "clashes": c["clashes"], "n_i2_short": c["n_i2_short"],
            "n_bond_outliers": c["n_bond_outliers"], "ok": float(c["ok"]),
            "min_nonbonded": c["min_nonbonded"], "min_i2": c["min_i2"],
            "rg_ratio": radius_of_gyration(xh) / radius_of_gyration(chain["ca"])}


def run_set(chains: list[dict], prior: SeparationPrior, seeds: list[int]) -> list[dict]:
    rows = []
    for k, chain in enumerate(chains):
        for seed in seeds:
            for name, (d, dg) in inputs(chain, prior, seed).items():
                for method in R.method_names():
                    t0 = time.perf_counter()
                    x0, info = R.reconstruct(d, method=method, breaks=chain["breaks"], hand=False, final=False,
                                             distogram=dg, bin_edges=RS.BIN_EDGES)
                    t1 = time.perf_counter()
                    x1, fin = R.final_stage(x0, chain["breaks"])
                    t2 = time.perf_counter()
                    rows.append({"id": chain["id"], "L": len(d), "input": name, "seed": seed, "method": method,
                                 "before": score(x0, chain), "after": score(x1, chain), "final_rounds":
                                 fin["final_rounds"], "seconds_method": t1 - t0, "seconds_final": t2 - t1})
        print(f"  {k + 1}/{len(chains)} {chain['id']} (L={len(chain['ca'])})", file=sys.stderr, flush=True)
    return rows


def compact(row: dict) -> dict:
    """A row as stored in the JSON: floats to 4 decimals (seconds to 3), no per-row minima."""
    out = dict(row)
    for side in ("before", "after"):
        out[side] = {k: round(v, 4) for k, v in row[side].items() if not k.startswith("min_")}
    out["seconds_method"], out["seconds_final"] = round(row["seconds_method"], 3), round(row["seconds_final"], 3)
    return out


def bootstrap_ci(diff: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(rows: list[dict], n_boot: int, seed: int) -> dict:
    """{input: {method: {before: means, after: means, diff: {metric: [mean, lo, hi]}, n, ...}}}; a chain's
    value is its mean over seeds, so the interval resamples chains."""
    table: dict = {}
    for name in dict.fromkeys(r["input"] for r in rows):
        for method in R.method_names():
            sub = [r for r in rows if r["input"] == name and r["method"] == method]
            ids = list(dict.fromkeys(r["id"] for r in sub))

            def per_chain(side: str, key: str, sub=sub, ids=ids) -> np.ndarray:
                return np.array([np.mean([r[side][key] for r in sub if r["id"] == i]) for i in ids])

            ent = {"n_chains": len(ids), "n_runs": len(sub), "before": {}, "after": {}, "diff": {},
                   "seconds_method": float(np.mean([r["seconds_method"] for r in sub])),
                   "seconds_final": float(np.mean([r["seconds_final"] for r in sub])),
                   "final_rounds_max": int(max(r["final_rounds"] for r in sub))}
            for key in METRICS:
                b, a = per_chain("before", key), per_chain("after", key)
                ent["before"][key], ent["after"][key] = float(b.mean()), float(a.mean())
                ent["diff"][key] = [float((a - b).mean()), *bootstrap_ci(a - b, n_boot, seed)]
            ent["after"]["min_nonbonded_min"] = float(np.nanmin([r["after"]["min_nonbonded"] for r in sub]))
            ent["after"]["min_i2_min"] = float(np.nanmin([r["after"]["min_i2"] for r in sub]))
            table.setdefault(name, {})[method] = ent
    return table


def timing(chain: dict, prior: SeparationPrior, repeats: int, L: int = 300) -> dict:
    """Seconds (median of ``repeats``, one BLAS thread) of each method alone and of the final stage, on the
    chain cropped to its first ``L`` residues, from the prior and from noise σ = 2 Å."""
    ca = chain["ca"][:L]
    breaks = [b for b in chain["breaks"] if b < len(ca) - 1]
    sub = {"id": chain["id"], "ca": ca, "breaks": breaks}
    out = {"id": chain["id"], "L": len(ca)}
    for name, (d, dg) in inputs(sub, prior, 0).items():
        if name not in ("prior", "noise_2"):
            continue
        for method in R.method_names():
            tm, tf = [], []
            for _ in range(repeats):
                with G.blas_threads(1):
                    t0 = time.perf_counter()
                    x0, _ = R.reconstruct(d, method=method, breaks=breaks, hand=False, final=False, distogram=dg,
                                          bin_edges=RS.BIN_EDGES)
                    t1 = time.perf_counter()
                    R.final_stage(x0, breaks)
                    tf.append(time.perf_counter() - t1)
                    tm.append(t1 - t0)
            out[f"{name}/{method}"] = {"before_s": float(np.median(tm)), "final_stage_s": float(np.median(tf)),
                                       "after_s": float(np.median(tm) + np.median(tf))}
    return out


def print_table(label: str, table: dict) -> None:
    print(f"\n{label}: mean per chain, before → after the final stage; diff after − before [95 % CI]")
    print(f"{'input':>9} {'method':>9} {'TM':>15} {'lDDT':>15} {'RMSD Å':>15} {'clash/100':>15} {'i,i+2<4.2':>13} "
          f"{'bond out':>13} {'ok':>11} {'Rg/native':>9} {'ΔTM [CI]':>26} {'ΔlDDT [CI]':>26} {'ΔRMSD Å [CI]':>26}")
    for name, t in table.items():
        for m, e in t.items():
            b, a, d = e["before"], e["after"], e["diff"]
            ci = lambda k, d=d: f"{d[k][0]:+.4f} [{d[k][1]:+.4f},{d[k][2]:+.4f}]"  # noqa: E731
            print(f"{name:>9} {m:>9} {b['tm_score']:6.4f}→{a['tm_score']:6.4f} {b['lddt']:6.4f}→{a['lddt']:6.4f} "
                  f"{b['rmsd']:6.2f}→{a['rmsd']:6.2f}  {b['clashes']:6.2f}→{a['clashes']:5.2f} "
                  f"{b['n_i2_short']:6.1f}→{a['n_i2_short']:4.1f} {b['n_bond_outliers']:6.1f}→{a['n_bond_outliers']:4.1f} "
                  f"{b['ok']:4.2f}→{a['ok']:4.2f} {b['rg_ratio']:4.2f}→{a['rg_ratio']:4.2f} {ci('tm_score'):>26} "
                  f"{ci('lddt'):>26} {ci('rmsd'):>26}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--demo", default=str(REPO / "data/demo/dataset"),
                    help="demo dataset folder (train.json.gz fits the prior, test.json.gz is scored)")
    ap.add_argument("--structures", default=str(REPO / "../shared/data/structures/pdownb"),
                    help="folder of extra structure files (one chain per entry); skipped when absent")
    ap.add_argument("--timing_structures", default=str(REPO / "../shared/data/structures/db5.5"),
                    help="folder searched for a chain of ≥ 300 residues to time (else the longest chain scored)")
    ap.add_argument("--n_demo", type=int, default=None, help="demo test chains (None = all 31)")
    ap.add_argument("--n_extra", type=int, default=40, help="chains from --structures (0 = none)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="noise seeds")
    ap.add_argument("--n_boot", type=int, default=2000, help="bootstrap resamples of the chains")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    ap.add_argument("--quick", action="store_true", help="10 demo chains, seed 0, no extra set, 1 timing repeat")
    ap.add_argument("--output", default=str(REPO / "benchmarks/results/clashes.json"), help="JSON output")
    a = ap.parse_args(argv)
    if a.quick:
        a.n_demo, a.n_extra, a.seeds, a.repeats = 10, 0, [0], 1
    t_start = time.perf_counter()
    demo = Path(a.demo)
    prior = SeparationPrior.fit(open_dataset(demo / "train.json.gz").samples)
    sets = {"demo_test": demo_chains(demo / "test.json.gz", a.n_demo)}
    extra = Path(a.structures)
    if a.n_extra > 0 and extra.is_dir():
        sets[extra.name] = RS.load_chains(extra, a.n_extra, 50, 300, seed=0)
    elif a.n_extra > 0:
        print(f"note: {extra} not found; extra set skipped", file=sys.stderr)
    result: dict = {"command": "python benchmarks/bench_clashes.py " + " ".join(sys.argv[1:] if argv is None else argv),
                    "config": {k: v for k, v in vars(a).items()   # paths are in the command, as given
                               if k not in ("output", "demo", "structures", "timing_structures")}, "sets": {}}
    for label, chains in sets.items():
        print(f"{label}: {len(chains)} chains, L {min(len(c['ca']) for c in chains)}–"
              f"{max(len(c['ca']) for c in chains)}", file=sys.stderr)
        rows = run_set(chains, prior, a.seeds)
        result["sets"][label] = {"n_chains": len(chains), "ids": [c["id"] for c in chains],
                                 "table": summarise(rows, a.n_boot, 0), "rows": [compact(r) for r in rows]}
        write_json(Path(a.output), result, indent=None)   # each finished set is kept, should a later one be interrupted
    pool = [c for chains in sets.values() for c in chains]
    timing_dir = Path(a.timing_structures)
    if timing_dir.is_dir():   # a chain of ≥ 300 residues for the timing
        pool += RS.load_chains(timing_dir, 1, 300, 2000, seed=0)
    longest = max(pool, key=lambda c: len(c["ca"]))
    result["timing"] = timing(longest, prior, a.repeats)
    result["total_seconds"] = time.perf_counter() - t_start
    write_json(Path(a.output), result, indent=None)
    for label, s in result["sets"].items():
        print_table(f"{label} ({s['n_chains']} chains, seeds {a.seeds})", s["table"])
    tm = result["timing"]
    print(f"\ntiming, {tm['id']} cropped to L = {tm['L']}, 1 BLAS thread, median of {a.repeats} (seconds)")
    print(f"{'input/method':>20} {'before':>8} {'final stage':>12} {'after':>8}")
    for k, v in tm.items():
        if isinstance(v, dict):
            print(f"{k:>20} {v['before_s']:8.3f} {v['final_stage_s']:12.3f} {v['after_s']:8.3f}")
    print(f"total {result['total_seconds']:.0f} s -> {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
