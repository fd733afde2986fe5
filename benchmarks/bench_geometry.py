"""Speed of the geometry and metrics code against scikit-learn and tmtools on the same inputs.

    python benchmarks/bench_geometry.py                      # reads ../shared/data/structures/dips-test
    python benchmarks/bench_geometry.py --structures DIR --lengths 100 300 1000 --repeats 3

* classical MDS (top-3 eigsh) vs ``sklearn.manifold.ClassicalMDS`` (full eigendecomposition);
* refinement (``geometry.refine``) vs ``sklearn.manifold.MDS(init="classical_mds")`` (SMACOF), both on
  the same noisy (σ = 2 Å) distance matrix of a real chain cropped to L (the RMSD to the native is
  printed beside the time so speed is not bought with accuracy);
* the refinement energy + gradient (one L-BFGS step's L×L work) in NumPy and torch, float32/float64,
  1 and 2 threads — the measurement behind the NumPy-float32-one-thread choice;
* metric time at L = 300: TM-score, GDT, lDDT vs ``tmtools.tm_align`` (identity alignment) and
  ``biotite.structure.lddt``;
* agreement of TM / RMSD / lDDT with those references over decoys of real chains (noise, hinge
  motions, noisy-MDS reconstructions).
Writes benchmarks/results/geometry.json and prints a table. Median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from proteinmtp import geometry as G
from proteinmtp import metrics as M
from proteinmtp.fileio import write_json
from proteinmtp.structure import read_structure

REPO = Path(__file__).resolve().parents[1]


def timeit(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def find_chains(folder: Path, lengths: list[int]) -> dict[int, tuple[str, np.ndarray, str]]:
    """For each L, the first chain (sorted files) with ≥ L Cα, cropped to its first L present residues."""
    need = sorted(lengths)
    found: dict[int, tuple[str, np.ndarray, str]] = {}
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for f in files:
        try:
            chains = read_structure(f)
        except ValueError:
            continue
        for ch in chains:
            ok = np.isfinite(ch.ca).all(axis=1)
            for L in need:
                if L not in found and ok.sum() >= L:
                    seq = "".join(c for c, m in zip(ch.sequence, ok) if m)[:L]
                    found[L] = (ch.id, ch.ca[ok][:L], seq)
        if len(found) == len(need):
            break
    missing = [L for L in need if L not in found]
    if missing:
        raise SystemExit(f"error: no chain with ≥ {missing} residues in {folder}")
    return found


def energy_microbench(L: int, repeats: int = 50) -> dict:
    """Energy + gradient of the stress at size L: NumPy/torch × float32/float64 × 1/2 threads (ms)."""
    import torch
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.normal(scale=10, size=(L, 3))
    d = np.abs(rng.normal(15, 5, size=(L, L)))
    d = 0.5 * (d + d.T)
    w = np.ones((L, L))
    out = {}

    def np_step(x, d, w):
        sq = (x * x).sum(1)
        dd = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * (x @ x.T), 1e-8))
        r = dd - d
        c = w * r / dd
        return (w * r * r).sum(), x * c.sum(1)[:, None] - c @ x

    def torch_step(x, d, w):
        sq = (x * x).sum(1)
        dd = torch.sqrt(torch.clamp(sq[:, None] + sq[None, :] - 2 * (x @ x.T), min=1e-8))
        r = dd - d
        c = w * r / dd
        return (w * r * r).sum(), x * c.sum(1)[:, None] - c @ x

    prev = torch.get_num_threads()
    try:
        for threads in (1, 2):
            for dtype in ("float32", "float64"):
                xs, ds, ws = (a.astype(dtype) for a in (x, d, w))
                with threadpool_limits(limits=threads):
                    t, _ = timeit(lambda xs=xs, ds=ds, ws=ws: [np_step(xs, ds, ws) for _ in range(10)], repeats // 10 + 1)
                out[f"numpy_{dtype}_{threads}thr_ms"] = t / 10 * 1e3
                torch.set_num_threads(threads)
                xt, dt, wt = (torch.from_numpy(a) for a in (xs, ds, ws))
                t, _ = timeit(lambda xt=xt, dt=dt, wt=wt: [torch_step(xt, dt, wt) for _ in range(10)], repeats // 10 + 1)
                out[f"torch_{dtype}_{threads}thr_ms"] = t / 10 * 1e3
    finally:
        torch.set_num_threads(prev)
    return out


def agreement(folder: Path, n_chains: int, seed: int = 0) -> dict:
    """Largest differences to reference programs over decoys of ``n_chains`` real chains.

    Decoys per chain: Gaussian coordinate noise (1 and 3 Å), rigid hinge motions of the C-terminal
    half (30°, 60°, 90° about the middle residue, + 0.5 Å noise), and a noisy-distance (σ = 3 Å)
    classical-MDS reconstruction. References: tmtools.tm_align with the identity alignment (TM
    normalised by the native), scipy Rotation.align_vectors (RMSD), biotite.structure.lddt.
    """
    import biotite.structure as bs
    import tmtools
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    rows = []
    for f in files:
        if len({r["chain"] for r in rows}) >= n_chains:
            break
        try:
            chains = read_structure(f)
        except ValueError:
            continue
        ch = chains[0]
        ok = np.isfinite(ch.ca).all(axis=1)
        if ok.sum() < 30 or ok.sum() > 600:
            continue
        ca = ch.ca[ok]
        seq = "".join(c for c, m in zip(ch.sequence, ok) if m)
        L = len(ca)
        arr = bs.AtomArray(L)
        arr.coord = ca
        arr.atom_name[:] = "CA"
        arr.element[:] = "C"
        arr.res_id = np.arange(1, L + 1)
        decoys = {"noise1": ca + rng.normal(scale=1.0, size=ca.shape),
                  "noise3": ca + rng.normal(scale=3.0, size=ca.shape)}
        for ang in (30, 60, 90):
            axis = rng.normal(size=3)
            rot = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(ang)).as_matrix()
            dec = ca.copy()
            h = L // 2
            dec[h:] = (ca[h:] - ca[h]) @ rot.T + ca[h]
            decoys[f"hinge{ang}"] = dec + rng.normal(scale=0.5, size=ca.shape)
        d = G.distance_matrix(ca)
        eps = np.triu(rng.normal(scale=3.0, size=d.shape), 1)
        dn = np.maximum(d + eps + eps.T, 1.0)
        np.fill_diagonal(dn, 0.0)
        decoys["mds3"] = G.choose_hand(G.classical_mds(dn))[0]
        for name, dec in decoys.items():
            tm = M.tm_score(dec, ca)
            ref = tmtools.tm_align(dec, ca, seq, seq, alignment=[seq, seq]).tm_norm_chain2
            _, rssd = Rotation.align_vectors(ca - ca.mean(0), dec - dec.mean(0))
            aligned, _ = G.superpose(dec, ca)
            single = float(np.mean(1 / (1 + (np.linalg.norm(aligned - ca, axis=1) / M.tm_d0(L)) ** 2)))
            rows.append({"chain": ch.id, "L": L, "decoy": name, "tm": tm, "tm_tmtools": ref,
                         "tm_single_kabsch": single, "rmsd": M.rmsd(dec, ca),
                         "rmsd_scipy": float(rssd / np.sqrt(L)), "lddt": M.lddt_ca(dec, ca),
                         "lddt_biotite": float(bs.lddt(arr, dec))})
    tm_diff = [abs(r["tm"] - r["tm_tmtools"]) for r in rows]
    hinge = [r for r in rows if r["decoy"].startswith("hinge")]
    return {
        "n_chains": len({r["chain"] for r in rows}), "n_decoys": len(rows),
        "tm_max_abs_diff": float(max(tm_diff)), "tm_mean_abs_diff": float(np.mean(tm_diff)),
        "rmsd_max_abs_diff": float(max(abs(r["rmsd"] - r["rmsd_scipy"]) for r in rows)),
        "lddt_max_abs_diff": float(max(abs(r["lddt"] - r["lddt_biotite"]) for r in rows)),
        "hinge_tm_mean": float(np.mean([r["tm"] for r in hinge])),
        "hinge_tm_single_kabsch_mean": float(np.mean([r["tm_single_kabsch"] for r in hinge])),
        "hinge_tm_max_gain_over_single_kabsch": float(max(r["tm"] - r["tm_single_kabsch"] for r in hinge)),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--structures", default=str(REPO / "../shared/data/structures/dips-test"),
                    help="folder of structure files to take chains from")
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 300, 1000], help="chain lengths L")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    ap.add_argument("--sigma", type=float, default=2.0, help="distance noise σ in Å for the refinement timing")
    ap.add_argument("--agreement_chains", type=int, default=30,
                    help="chains for the agreement check vs tmtools/scipy/biotite (0 = skip)")
    ap.add_argument("--output", default=str(REPO / "benchmarks/results/geometry.json"), help="JSON output")
    a = ap.parse_args()
    folder = Path(a.structures)
    if not folder.is_dir():
        sys.exit(f"error: {folder}: not a folder (pass --structures)")
    from sklearn.manifold import MDS, ClassicalMDS

    chains = find_chains(folder, a.lengths)
    rng = np.random.default_rng(0)
    rows = []
    for L in sorted(a.lengths):
        cid, ca, _ = chains[L]
        d = G.distance_matrix(ca)
        eps = np.triu(rng.normal(scale=a.sigma, size=d.shape), 1)
        dn = np.maximum(d + eps + eps.T, 1.0)
        np.fill_diagonal(dn, 0.0)
        t_mds, x0 = timeit(lambda dn=dn: G.classical_mds(dn), a.repeats)
        t_skc, xs0 = timeit(lambda dn=dn: ClassicalMDS(n_components=3, metric="precomputed").fit_transform(dn),
                            a.repeats)
        t_ref, x1 = timeit(lambda dn=dn, x0=x0: G.refine(x0, dn), a.repeats)

        def sk_smacof(dn=dn):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return MDS(n_components=3, metric="precomputed", init="classical_mds", n_init=1).fit_transform(dn)

        t_sks, xs1 = timeit(sk_smacof, max(1, a.repeats if L <= 300 else 1))

        def best(x, ca=ca):
            return min(M.rmsd(x, ca), M.rmsd(G.mirror(x), ca))

        rows.append({"L": L, "chain": cid,
                     "mds_s": t_mds, "sklearn_classical_mds_s": t_skc,
                     "refine_s": t_ref, "sklearn_smacof_s": t_sks,
                     "rmsd_mds": best(x0), "rmsd_sklearn_classical": best(xs0),
                     "rmsd_refine": best(x1), "rmsd_sklearn_smacof": best(xs1)})

    # metrics at L = 300 (or the closest length benchmarked)
    Lm = min(a.lengths, key=lambda L: abs(L - 300))
    cid, ca, seq = chains[Lm]
    dec = ca + rng.normal(scale=3.0, size=ca.shape)
    import biotite.structure as bs
    import tmtools

    arr = bs.AtomArray(Lm)
    arr.coord = ca
    arr.atom_name[:] = "CA"
    arr.element[:] = "C"
    arr.res_id = np.arange(1, Lm + 1)
    t_tm, tm = timeit(lambda: M.tm_score(dec, ca), a.repeats)
    t_tmt, ref = timeit(lambda: tmtools.tm_align(dec, ca, seq, seq, alignment=[seq, seq]).tm_norm_chain2, a.repeats)
    t_gdt, g = timeit(lambda: M.gdt(dec, ca), a.repeats)
    t_ld, ld = timeit(lambda: M.lddt_ca(dec, ca), a.repeats)
    t_bld, bld = timeit(lambda: float(bs.lddt(arr, dec)), a.repeats)
    t_all, _ = timeit(lambda: M.structure_metrics(dec, ca), a.repeats)
    metrics_row = {"L": Lm, "chain": cid, "tm_score_s": t_tm, "tmtools_tm_align_s": t_tmt, "tm_ours": tm,
                   "tm_tmtools": ref, "gdt_s": t_gdt, "gdt_ts": g["gdt_ts"], "lddt_s": t_ld,
                   "biotite_lddt_s": t_bld, "lddt_ours": ld, "lddt_biotite": bld, "structure_metrics_s": t_all}
    energy = energy_microbench(300)
    agree = agreement(folder, a.agreement_chains) if a.agreement_chains > 0 else None

    result = {"command": "python benchmarks/bench_geometry.py " + " ".join(sys.argv[1:]),
              "config": {"lengths": a.lengths, "repeats": a.repeats, "sigma": a.sigma},
              "reconstruction": rows, "metrics": metrics_row, "energy_eval_L300": energy,
              "agreement": agree}
    write_json(a.output, result, indent=1)

    print(f"{'L':>5} {'MDS s':>8} {'skl cMDS s':>10} {'refine s':>9} {'skl SMACOF s':>12} "
          f"{'RMSD mds':>9} {'refine':>7} {'SMACOF':>7}   (σ = {a.sigma:g} Å noise, best hand)")
    for r in rows:
        print(f"{r['L']:5d} {r['mds_s']:8.4f} {r['sklearn_classical_mds_s']:10.4f} {r['refine_s']:9.3f} "
              f"{r['sklearn_smacof_s']:12.3f} {r['rmsd_mds']:9.3f} {r['rmsd_refine']:7.3f} {r['rmsd_sklearn_smacof']:7.3f}")
    m = metrics_row
    print(f"metrics at L={m['L']}: TM {m['tm_score_s']:.3f} s (tmtools {m['tmtools_tm_align_s']:.3f} s; "
          f"TM {m['tm_ours']:.4f} vs {m['tm_tmtools']:.4f}), GDT {m['gdt_s']:.3f} s, lDDT {m['lddt_s']:.4f} s "
          f"(biotite {m['biotite_lddt_s']:.4f} s), all {m['structure_metrics_s']:.3f} s")
    print("energy+gradient at L=300 (ms): " + ", ".join(f"{k[:-3]} {v:.2f}" for k, v in energy.items()))
    if agree:
        print(f"agreement over {agree['n_decoys']} decoys of {agree['n_chains']} chains: max |ΔTM| vs tmtools "
              f"{agree['tm_max_abs_diff']:.2e}, max |ΔRMSD| vs scipy {agree['rmsd_max_abs_diff']:.2e} Å, "
              f"max |ΔlDDT| vs biotite {agree['lddt_max_abs_diff']:.2e}; hinge decoys: TM {agree['hinge_tm_mean']:.3f} "
              f"vs single Kabsch {agree['hinge_tm_single_kabsch_mean']:.3f} (max gain "
              f"{agree['hinge_tm_max_gain_over_single_kabsch']:.3f})")
    print(f"-> {a.output}")


if __name__ == "__main__":
    main()
