"""TM-score superposition search: today's implementation (kept here, verbatim, as the reference) vs
``proteinmtp.metrics.tm_score`` vs tmtools' TM-align, on real chains and decoys built from them.

For each length L (default 100, 300, 600) the chain of the split closest in length is taken (its
residues with a Cα), and decoys are built from it: Gaussian noise (σ 1, 3, 6 Å), a hinge motion, the
mirror image, an MDS reconstruction of noisy distances, and a random coil. Every decoy is scored by the
reference and by the package; the largest |difference| over all of them is reported (must be ≤ 1e-6),
beside each one's seconds per call (best of --repeat) and TM-align's (which also searches the alignment).
Run on one thread (OMP/MKL/OpenBLAS limited to 1 before NumPy is imported).

    python benchmarks/bench_tm_search.py --data build/full/test.json.gz [--quick] [--out benchmarks/results/tm_search.json]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proteinmtp import geometry as G  # noqa: E402
from proteinmtp import metrics as M  # noqa: E402
from proteinmtp.fileio import write_json  # noqa: E402

# ----------------------------------------------------------------------------- reference: today's search
# Verbatim copy of proteinmtp.metrics' search before the deduplicating rewrite (commit 504a01a).

def _ref_batched_transform(x, y, sel):
    r, t = G.kabsch_batched(x, y, sel)
    return np.matmul(x[None], r.transpose(0, 2, 1)) + t[:, None, :]


def _ref_search(x, y, score_fn, d_init, d_iter, n_iter=20, max_seeds=None, chunk=512):
    n = len(x)
    seeds = M._seeds(n, max_seeds=max_seeds)
    best = -np.inf
    for c0 in range(0, len(seeds), chunk):
        sel = seeds[c0:c0 + chunk]
        d_cut = d_init
        for it in range(n_iter + 1):
            moved = _ref_batched_transform(x, y, sel)
            diff = moved - y[None]
            dist = np.sqrt(np.einsum("snk,snk->sn", diff, diff))
            best = np.maximum(best, score_fn(dist).max(axis=0))
            if it == n_iter:
                break
            new = dist < d_cut
            thr = np.full(len(sel), d_cut)
            few = new.sum(axis=1) < 3
            while few.any() and n > 3:
                thr[few] += 0.5
                new[few] = dist[few] < thr[few, None]
                few = new.sum(axis=1) < 3
            active = (new != sel).any(axis=1) if it > 0 else np.ones(len(sel), dtype=bool)
            if not active.any():
                break
            sel = new[active]
            d_cut = d_iter
    return best if np.ndim(best) else float(best)


def reference_tm_score(pred, true):
    """Today's tm_score for two complete [L, 3] traces (no missing residues)."""
    a, b = np.asarray(pred, float), np.asarray(true, float)
    L = len(b)
    d0 = M.tm_d0(L)
    d0_search = min(max(d0, 4.5), 8.0)

    def score(dist):
        return (1.0 / (1.0 + (dist / d0) ** 2)).sum(axis=1) / L

    return _ref_search(a, b, score, d_init=d0_search - 1.0, d_iter=d0_search + 1.0)


# ----------------------------------------------------------------------------- decoys

def decoys(ca: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Perturbed copies of a native trace [L, 3] (names say how)."""
    rng = np.random.default_rng(seed)
    L = len(ca)
    out = {"native": ca.copy()}
    for s in (1.0, 3.0, 6.0):
        out[f"noise_{s:g}A"] = ca + rng.normal(scale=s, size=ca.shape)
    h = L // 2
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    ang = np.radians(60)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * k @ k
    hinge = ca.copy()
    hinge[h:] = (ca[h:] - ca[h]) @ rot.T + ca[h]
    out["hinge_60deg"] = hinge + rng.normal(scale=0.7, size=ca.shape)
    out["mirror"] = G.mirror(ca)
    d = G.distance_matrix(ca)
    n = np.triu(rng.normal(scale=4.0, size=d.shape), 1)
    out["mds_noisy_4A"] = G.classical_mds(np.maximum(d + n + n.T, 1.0) * (1 - np.eye(L))) + 30.0
    steps = rng.normal(size=(L, 3))
    out["random_coil"] = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
    return out


def timed(fn, repeat: int) -> tuple[float, object]:
    best, val = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        val = fn()
        best = min(best, time.perf_counter() - t0)
    return best, val


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="build/full/test.json.gz",
                    help="dataset split (JSON or .json.gz) the native chains are taken from")
    ap.add_argument("--lengths", default="100,300,600", help="target chain lengths (residues), comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats per call (the best is kept)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the decoys' perturbations")
    ap.add_argument("--quick", action="store_true", help="lengths 100,300 and one repeat (smoke run)")
    ap.add_argument("--out", default="benchmarks/results/tm_search.json", help="JSON output path")
    args = ap.parse_args(argv)
    import tmtools

    from proteinmtp.dataio import open_dataset

    lengths = [100, 300] if args.quick else [int(v) for v in args.lengths.split(",")]
    repeat = 1 if args.quick else args.repeat
    samples = list(open_dataset(args.data).samples)
    rows, per_decoy = [], []
    for target in lengths:
        s = min(samples, key=lambda x: (abs(int(x.mask().sum()) - target), x.id))
        ca = np.asarray(s.ca, float)[s.mask()]
        seq = "".join(c for c, ok in zip(s.sequence, s.mask()) if ok)
        t_ref = t_new = t_tma = 0.0
        max_diff = 0.0
        for name, dec in decoys(ca, args.seed).items():
            tr, vr = timed(lambda d=dec, c=ca: reference_tm_score(d, c), repeat)
            tn, vn = timed(lambda d=dec, c=ca: M.tm_score(d, c), repeat)
            tt, res = timed(lambda d=dec, c=ca, q=seq: tmtools.tm_align(d, c, q, q), repeat)
            diff = abs(vr - vn)
            max_diff = max(max_diff, diff)
            t_ref, t_new, t_tma = t_ref + tr, t_new + tn, t_tma + tt
            per_decoy.append({"id": s.id, "length": len(ca), "decoy": name, "tm_reference": vr, "tm_new": vn,
                              "abs_diff": diff, "tm_align_tm_norm_native": float(res.tm_norm_chain2),
                              "s_reference": tr, "s_new": tn, "s_tmalign": tt})
        k = len(decoys(ca, args.seed))
        rows.append({"target_length": target, "id": s.id, "length": len(ca), "n_decoys": k,
                     "s_reference": t_ref / k, "s_new": t_new / k, "s_tmalign": t_tma / k,
                     "speedup_vs_reference": t_ref / t_new, "speedup_vs_tmalign": t_tma / t_new,
                     "max_abs_diff": max_diff})
    print("| L | chain | s/call today | s/call new | s/call TM-align | new vs today | new vs TM-align | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['length']} | {r['id']} | {r['s_reference']:.4f} | {r['s_new']:.4f} | {r['s_tmalign']:.4f} | "
              f"{r['speedup_vs_reference']:.1f}x | {r['speedup_vs_tmalign']:.1f}x | {r['max_abs_diff']:.1e} |")
    worst = max(r["max_abs_diff"] for r in rows)
    print(f"threads: 1; seconds per call = mean over {rows[0]['n_decoys']} decoys of the best of {repeat}; "
          f"largest |new - today| = {worst:.1e}")
    write_json(Path(args.out), {"conditions": {"threads": 1, "repeat": repeat, "seed": args.seed, "data": Path(args.data).name,
                                               "numpy": np.__version__, "tmtools": getattr(tmtools, "__version__", "?")},
                                "rows": rows, "per_decoy": per_decoy, "max_abs_diff": worst})
    print(f"wrote {args.out}")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    raise SystemExit(main())
