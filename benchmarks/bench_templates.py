"""How strong templates are before any model reads them, and what the template search and features cost.

Everything here uses ``proteinmtp.templates`` (search through MMseqs2, selection, features) on one thread.

1. **Copying templates on the test split** (demo by default: ``--train`` as the template database,
   ``--test`` as the queries). Methods, each filled with the training split's length-aware separation prior
   where it has no distance, rebuilt with the default reconstruction and scored with
   ``evaluation.score_prediction`` (distances in Å):

   * ``prior``           the separation prior alone;
   * ``neighbour``       ``proteinmtp.neighbour`` (the evaluation's baseline: best hit by bit score);
   * ``template_top1``   the best template after the default selection (identity <= 0.95): the same
                         chain as the neighbour for held-out queries, copied through the feature path
                         (``template_features``), so the two rows must agree (their largest distance
                         difference is reported);
   * ``template_mean``   the mean of the K templates' distances where any covers a pair (a naive merge);
   * ``template_oracle`` of the K templates, the one whose filled matrix has the lowest distance MAE
                         against the native: an upper bound on choosing one template, it looks at the answer.

   Means over chains, plus a breakdown by the best template's identity (no hit, < 20 %, 20-30 %, >= 30 %).
2. **Identities a chain sees.** The best template's identity for the test chains and for the training
   chains searched against their own split under each selection rule (none beyond the identical-sequence
   exclusion; ``template_max_identity`` 0.95; own cluster dropped; both): what the training-distribution
   rule of issue 21 §2 has to close.
3. **Cost** on one thread: the search (cold, then from the cache) of the test split and of the training
   split against the training split; with ``--db`` (a ~5k-chain dataset) the search of ``--n_queries``
   chains of the demo splits and of one 256-residue chain against it, its fingerprint and loading; the
   features of a 256-residue chain with K = 4 (best of 5); the template embedding's forward + backward
   beside the default distance head's at 128 residues.

Prints tables and writes ``benchmarks/results/templates.json``.

    python benchmarks/bench_templates.py                                  # demo split, ~2 min
    python benchmarks/bench_templates.py --db build/db5k/train.json.gz    # + a 5k-chain database
    python benchmarks/bench_templates.py --quick                          # no reconstruction, fewer repeats
    python benchmarks/bench_templates.py --model_arms                     # trained arms (template_arms.py)
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from template_arms import BINS, KEYS, identity_bin  # noqa: E402  (one definition of the bins and metrics)

from proteinmtp import templates as T  # noqa: E402
from proteinmtp.dataio import open_dataset  # noqa: E402
from proteinmtp.fileio import write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo" / "dataset"


def label(path: str | Path) -> str:
    """A path as the results record it: relative to the repository, else only its last two parts."""
    p = Path(path).resolve()
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return "<outside the repository>/" + "/".join(p.parts[-2:])


def filled(f: dict, slot: int, fallback: np.ndarray) -> np.ndarray:
    return np.where(f["pair_mask"][slot], f["dist_A"][slot], fallback)


def copy_baselines(train, test, db, found, k: int, reconstruct_structures: bool) -> dict:
    from proteinmtp.eval_scoring import score_prediction
    from proteinmtp.metrics import distance_metrics
    from proteinmtp.neighbour import find_neighbours
    from proteinmtp.prior import SeparationPrior
    from proteinmtp.reconstruction import reconstruct

    prior = SeparationPrior.fit(train)
    nbs = find_neighbours(train, test)
    rows, max_diff = [], 0.0
    for s in test:
        L = len(s.sequence)
        pd = np.asarray(prior.predict(L), dtype=np.float64)
        hits = T.select_templates(found[s.id], k)
        f = T.template_features(s.sequence, hits, db, k=k)
        true = s.distances()
        mats = {"prior": pd, "neighbour": nbs.for_sample(s).filled(pd)}
        if hits:
            mats["template_top1"] = filled(f, 0, pd)
            w = f["pair_mask"].sum(0)
            mean = np.where(w > 0, (f["dist_A"] * f["pair_mask"]).sum(0) / np.maximum(w, 1), pd)
            mats["template_mean"] = mean
            cands = [filled(f, j, pd) for j in range(len(hits))]
            maes = [distance_metrics(c, true, s.mask())["mae"] for c in cands]
            mats["template_oracle"] = cands[int(np.argmin(maes))]
            max_diff = max(max_diff, float(np.abs(mats["template_top1"] - mats["neighbour"]).max()))
        else:
            for name in ("template_top1", "template_mean", "template_oracle"):
                mats[name] = pd
        row = {"id": s.id, "length": L, "identity": hits[0].identity if hits else None,
               "coverage": hits[0].coverage if hits else 0.0, "n_templates": len(hits)}
        for name, d in mats.items():
            if reconstruct_structures:
                xyz, _ = reconstruct(d)
            else:
                xyz = np.nan_to_num(np.asarray(s.ca, dtype=np.float64))     # structure metrics not computed
            sc = score_prediction(d, d, xyz, s, higher_is_contact=False, true_dist=true)
            row[name] = {k2: sc.get(k2) for k2 in KEYS if reconstruct_structures or k2 not in ("tm_score", "lddt")}
        rows.append(row)
    methods = ("prior", "neighbour", "template_top1", "template_mean", "template_oracle")

    def means(sel):
        return {m: {k2: float(np.nanmean([r[m][k2] for r in sel])) for k2 in rows[0][m]} for m in methods} \
            if sel else None

    by_bin = {}
    for name, _, _ in BINS:
        sel = [r for r in rows if identity_bin(r["identity"]) == name]
        by_bin[name] = {"n_chains": len(sel), "means": means(sel)}
    return {"n_chains": len(rows), "k": k, "means": means(rows), "by_identity": by_bin,
            "max_abs_diff_neighbour_vs_top1_A": max_diff, "neighbour_info": nbs.info, "rows": rows}


def identities_seen(train, test_found, train_found, k: int) -> dict:
    rng = np.random.default_rng(0)
    rules = {"test chains (default selection)": (test_found, {}),
             "train: identical excluded only": (train_found, {"max_identity": 1.0}),
             "train: max_identity 0.95": (train_found, {"max_identity": 0.95}),
             "train: own cluster dropped": (train_found, {"max_identity": 1.0, "drop_own_cluster": 1.0}),
             "train: 0.95 + own cluster dropped": (train_found, {"max_identity": 0.95, "drop_own_cluster": 1.0})}
    out = {}
    for name, (found, kw) in rules.items():
        tops = []
        for r in found.values():
            hits = T.select_templates(r, k, rng=rng, **kw)
            tops.append(hits[0].identity if hits else None)
        counts = {b: sum(identity_bin(t) == b for t in tops) for b, _, _ in BINS}
        have = [t for t in tops if t is not None]
        out[name] = {"n_chains": len(tops), "bins": counts, "mean_top_identity": float(np.mean(have)) if have else None,
                     "frac_top_identity_ge_0.9": float(np.mean([t >= 0.9 for t in have])) if have else None}
    return out


def timed_search(queries, db) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        st = {}
        t0 = time.perf_counter()
        found = T.search_templates(queries, db, cache_dir=cache, stats=st)
        cold = time.perf_counter() - t0
        st2 = {}
        t0 = time.perf_counter()
        T.search_templates(queries, db, cache_dir=cache, stats=st2)
        warm = time.perf_counter() - t0
    return {"n_queries": len(queries), "n_database": len(db), "threads": 1, "cold_seconds": round(cold, 3),
            "mmseqs_seconds": st["search_seconds"], "cached_seconds": round(warm, 4),
            "cold_seconds_per_query": round(cold / max(len(queries), 1), 4), "n_with_hit": st["n_with_hit"],
            "n_cached_second_call": st2["n_cached"],
            "best_template_identity": {b: sum(identity_bin(hits[0].identity if hits else None) == b
                                              for hits in (T.select_templates(r, T.DEFAULT_K) for r in found.values()))
                                       for b, _, _ in BINS}}


def feature_cost(query, db, found, k: int, repeats: int) -> dict:
    hits = T.select_templates(found, k)
    L = min(256, len(query.sequence))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        T.template_features(query.sequence, hits, db, k=k, crop=(0, L))
        best = min(best, time.perf_counter() - t0)
    aligned = sum(int((h.alignment()[0] < L).sum()) for h in hits)
    return {"query": query.id, "residues": L, "k": k, "n_templates": len(hits),
            "aligned_residues_all_templates": aligned, "seconds": round(best, 5), "threads": 1}


def embedding_cost(L: int, k: int, repeats: int) -> dict:
    """Median forward + backward seconds of the default distance head and of the template embedding at a
    few widths / depths, on the same random inputs (every pair covered by all K templates)."""
    import torch

    from proteinmtp.heads import HeadConfig
    from proteinmtp.heads.distance import DistanceHead
    from proteinmtp.heads.templates import TemplateEmbedConfig, TemplatePairEmbedding, template_tensors

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = HeadConfig(prior_input=False, ss_weight=0.0)
    head = DistanceHead(64, cfg)
    feats = torch.randn(1, L, 64)
    rmask = torch.ones(1, L, dtype=torch.bool)
    f = T.empty_features(L, k)
    f["pair_mask"][:] = True
    f["template_mask"][:] = True
    f["dist_bin"][:] = np.random.default_rng(0).integers(0, 42, (k, L, L))
    tb = template_tensors(T.stack_features([f], L))
    arms = {"distance_head": lambda: head(feats, rmask)["dist_norm"].sum().backward()}
    for w, n in ((16, 2), (32, 1), (32, 2)):
        emb = TemplatePairEmbedding(TemplateEmbedConfig(templates=k, template_dim=w, template_layers=n), cfg.pair_dim)
        arms[f"template_embedding_w{w}_layers{n}"] = (lambda e: lambda: e(**tb).sum().backward())(emb)
    res = {}
    for name, fn in arms.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        res[name] = round(float(np.median(times)), 4)
    ratios = {name: round(v / res["distance_head"], 3) for name, v in res.items() if name != "distance_head"}
    return {"residues": L, "k": k, "torch_threads": 1, "forward_backward_seconds": res,
            "ratio_to_distance_head": ratios}


def _demo_model(backbone: str, k: int, stats: dict):
    """The demo recipe's model (full fine-tuning of ``backbone``, direct layout, crops 128 / 256) with K slots."""
    from dataclasses import asdict

    from proteinmtp.heads import HeadConfig
    from proteinmtp.model import ModelSpec, build_model

    spec = ModelSpec(base_model=backbone, layout="direct", finetune="full", global_stats=dict(stats),
                     head=asdict(HeadConfig(max_rel_sep=255, templates=k)))
    return build_model(spec)


def step_cost(train_path: str, backbone: str, k: int, steps: int, db_path: str | None = None) -> dict:
    """Seconds of a demo-recipe training step (crops of 128, a quarter 256; batch 1; AdamW) split into the
    collator (template features included, search cached) and forward + backward + optimizer step, with K
    templates and without (K = 0, same crops); torch on 1 thread. ``feature_share``: the template features'
    part of a step with templates; ``embedding_share``: the template embedding's (the rest of the extra)."""
    import torch

    from proteinmtp.prior import SeparationPrior, prior_for_training
    from proteinmtp.template_inputs import provider_for
    from proteinmtp.training import CropDataset, DistanceCollator

    torch.set_num_threads(1)
    ds = open_dataset(train_path)
    db = T.TemplateDatabase.load(db_path or train_path)
    prov = provider_for(db, ds.samples, k, T.TemplateOptions())
    prior, _ = prior_for_training(train_path, ds.samples)
    prior = SeparationPrior.from_dict(prior.to_dict())
    out = {"k": k, "steps": steps, "torch_threads": 1, "database_chains": len(db)}
    for arm, kk in (("with_templates", k), ("without", 0)):
        torch.manual_seed(0)
        model = _demo_model(backbone, kk, ds.global_stats).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        crops = CropDataset(ds.samples, 128, random_crop=True, long_len=256, long_fraction=0.25)
        coll = DistanceCollator(model.encoder, prior=prior, templates=prov if kk else None)
        base = DistanceCollator(model.encoder, prior=prior)
        t_feat, t_coll, t_step = [], [], []
        torch.manual_seed(1)
        order = torch.randperm(len(crops))[:steps + 2].tolist()
        for n, i in enumerate(order):
            items = [crops[i]]
            t0 = time.perf_counter()
            batch = coll(items)
            t1 = time.perf_counter()
            base(items)
            t2 = time.perf_counter()
            opt.zero_grad()
            model(**batch)["loss"].backward()
            opt.step()
            t3 = time.perf_counter()
            if n >= 2:                                      # two warm-up steps
                t_coll.append(t1 - t0)
                t_feat.append(max(0.0, (t1 - t0) - (t2 - t1)))
                t_step.append(t3 - t2)
        out[arm] = {"collate_seconds": round(float(np.mean(t_coll)), 4),
                    "template_feature_seconds": round(float(np.mean(t_feat)), 4) if kk else 0.0,
                    "forward_backward_optimizer_seconds": round(float(np.mean(t_step)), 4),
                    "step_seconds": round(float(np.mean(t_coll) + np.mean(t_step)), 4)}
    w, wo = out["with_templates"], out["without"]
    out["feature_share"] = round(w["template_feature_seconds"] / w["step_seconds"], 4)
    out["embedding_share"] = round((w["forward_backward_optimizer_seconds"] - wo["forward_backward_optimizer_seconds"])
                                   / w["step_seconds"], 4)
    out["step_ratio_with_vs_without"] = round(w["step_seconds"] / wo["step_seconds"], 3)
    return out


def inference_cost(db_path: str, backbone: str, stats: dict, k: int, L: int = 256, repeats: int = 3) -> dict:
    """What templates add to predicting one ``L``-residue chain (a real demo chain cut to L) against the
    database at ``db_path``, 1 thread: the search (MMseqs2, cold: no cache), the features, and the model's
    forward with K templates minus without; beside the forward without templates."""
    import torch

    from proteinmtp.heads.templates import template_tensors
    from proteinmtp.template_inputs import RunTemplates

    torch.set_num_threads(1)
    pool = [s for split in ("test", "val", "train") for s in open_dataset(DEMO / f"{split}.json.gz").samples]
    one = min((s for s in pool if len(s.sequence) >= L), key=lambda s: len(s.sequence))
    seq = one.sequence[:L]
    t0 = time.perf_counter()
    db = T.TemplateDatabase.load(db_path)
    t_load = time.perf_counter() - t0
    search, feat = [], []
    for _ in range(repeats):
        rt = RunTemplates(db, k, k, T.TemplateOptions())            # a fresh one: no in-memory cache
        t0 = time.perf_counter()
        hits = rt.hits([seq])[0]
        t1 = time.perf_counter()
        f = T.template_features(seq, hits, db, k)
        t2 = time.perf_counter()
        search.append(t1 - t0)
        feat.append(t2 - t1)
    model = _demo_model(backbone, k, stats).eval()
    batch = model.encoder.collate([seq])
    batch["prior_dist"] = torch.full((1, L, L), 10.0)          # any prior: only the timing counts
    tb = template_tensors(T.stack_features([f], L))
    fw = {}
    with torch.no_grad():
        for arm, extra in (("with_templates", {"templates": tb}), ("without", {})):
            model(**batch, **extra)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(**batch, **extra)
                times.append(time.perf_counter() - t0)
            fw[arm] = float(np.median(times))
    added = float(np.median(search)) + float(np.median(feat)) + fw["with_templates"] - fw["without"]
    return {"query": one.id, "residues": L, "k": k, "n_templates": len(hits), "database_chains": len(db),
            "database_load_seconds": round(t_load, 3), "search_seconds": round(float(np.median(search)), 4),
            "feature_seconds": round(float(np.median(feat)), 4),
            "forward_seconds": {a: round(v, 4) for a, v in fw.items()},
            "added_seconds_per_chain": round(added, 4), "target_seconds": 1.0, "torch_threads": 1}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train", default=str(DEMO / "train.json.gz"), help="template database (a training split)")
    p.add_argument("--test", default=str(DEMO / "test.json.gz"), help="queries for the copy baselines")
    p.add_argument("--db", default=None, help="a ~5k-chain dataset to time the search against (optional)")
    p.add_argument("--db_note", default="", help="how --db was built (recorded with the results)")
    p.add_argument("--n_queries", type=int, default=100, help="queries (from the demo splits) searched against --db")
    p.add_argument("--k", type=int, default=T.DEFAULT_K, help="templates per chain K")
    p.add_argument("--quick", action="store_true", help="no structure reconstruction; fewer timing repeats")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "templates.json"),
                   help="result JSON")
    p.add_argument("--cost_only", action="store_true",
                   help="only the training-step and inference cost (merged into an existing --output)")
    p.add_argument("--backbone", default=None,
                   help="backbone directory for the step/inference cost (default: a fresh proteinmtp.tiny one)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per arm for the step cost")
    g = p.add_argument_group("trained arms with and without templates (--model_arms; benchmarks/template_arms.py)")
    g.add_argument("--model_arms", action="store_true",
                   help="train and evaluate the arms no_templates, templates, templates_lt30, templates_nocopy "
                        "(frozen MiniLM) "
                        "instead of the copy baselines and costs; results under model_arms in --output")
    g.add_argument("--data_dir", default="build/full",
                   help="dataset directory with {train,test}.json.gz (the five-times corpus of bench_pretraining)")
    g.add_argument("--arm_steps", type=int, default=1600, help="optimizer steps of every arm (equal for all)")
    g.add_argument("--arms", default="no_templates,templates,templates_lt30,templates_nocopy",
                   help="comma-separated arms to run (the others are still reported when finished)")
    g.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of no_templates and templates "
                   "(templates_lt30: the first)")
    g.add_argument("--n_test", type=int, default=100, help="test chains (seeded subset, as bench_pretraining)")
    g.add_argument("--test_seed", type=int, default=0, help="seed of the test subset")
    g.add_argument("--max_eval_len", type=int, default=500, help="longest test chain evaluated (residues)")
    g.add_argument("--max_seq_len", type=int, default=128, help="training crop length (residues)")
    g.add_argument("--long_crop_len", type=int, default=256, help="residues of the occasional longer crop")
    g.add_argument("--lr_head", type=float, default=1e-3, help="peak learning rate of the head")
    g.add_argument("--work_dir", default="build/bench_templates", help="runs and per-run results (not committed)")
    g.add_argument("--keep_runs", action="store_true", help="keep each run's weights after its evaluation")
    g.add_argument("--report_only", action="store_true",
                   help="train nothing: aggregate the finished arms under --work_dir, rewrite JSON and figure")
    args = p.parse_args(argv)
    if args.model_arms:
        import template_arms

        os.chdir(REPO)
        return template_arms.run(args)
    if args.cost_only:
        return cost_only(args)
    repeats = 2 if args.quick else 5
    db = T.TemplateDatabase.load(args.train)
    train = open_dataset(args.train).samples
    test = open_dataset(args.test).samples
    results: dict = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()], "train": label(args.train), "test": label(args.test), "k": args.k, "threads": 1}

    results["search_test_vs_train"] = timed_search(test, db)
    results["search_train_vs_train"] = timed_search(train, db)
    test_found = T.search_templates(test, db)
    train_found = T.search_templates(train, db)
    results["copy"] = copy_baselines(train, test, db, test_found, args.k, not args.quick)
    results["identities_seen"] = identities_seen(train, test_found, train_found, args.k)
    longest = max(test, key=lambda s: (min(len(s.sequence), 256), len(test_found[s.id].hits)))
    results["features"] = feature_cost(longest, db, test_found[longest.id], args.k, repeats)
    results["embedding"] = embedding_cost(128, args.k, repeats)
    if args.db:
        t0 = time.perf_counter()
        fp = T.database_fingerprint(args.db)
        t_fp = time.perf_counter() - t0
        t0 = time.perf_counter()
        big = T.TemplateDatabase.load(args.db)
        t_load = time.perf_counter() - t0
        pool = [s for split in ("test", "val", "train") for s in open_dataset(DEMO / f"{split}.json.gz").samples]
        queries = pool[:args.n_queries]
        one = min(pool, key=lambda s: abs(len(s.sequence) - 256))
        single = [timed_search([one], big) for _ in range(2 if args.quick else 3)]
        one_found = T.search_templates([one], big)[one.id]
        results["db"] = {"path": label(args.db), "note": args.db_note, "n_chains": len(big), "fingerprint": fp,
                         "fingerprint_seconds": round(t_fp, 3), "load_seconds_incl_fingerprint": round(t_load, 3),
                         "search_queries": timed_search(queries, big),
                         "search_one_chain": {"query": one.id, "residues": len(one.sequence),
                                              "cold_seconds": [r["cold_seconds"] for r in single],
                                              "n_hits": len(one_found.hits)},
                         "features_one_chain": feature_cost(one, big, one_found, args.k, repeats)}

    c = results["copy"]
    print(f"copying templates: {c['n_chains']} test chains, database {len(db)} training chains, K = {args.k}")
    cols = [k2 for k2 in KEYS if k2 in c["means"]["prior"]]
    print(f"{'method':<17}" + "".join(f"{k2:>19}" for k2 in cols))
    for m, v in c["means"].items():
        print(f"{m:<17}" + "".join(f"{v[k2]:>19.3f}" for k2 in cols))
    print("by the best template's identity (chains; MAE long and P@L/5 long: neighbour / top1 / oracle / prior):")
    for b, v in c["by_identity"].items():
        if v["means"]:
            mm = v["means"]
            print(f"  {b:<7} {v['n_chains']:>3}  " + " / ".join(
                f"{mm[m]['mae_long']:.2f}, {mm[m]['precision_L5_long']:.3f}"
                for m in ("neighbour", "template_top1", "template_oracle", "prior")))
    print(f"neighbour vs template_top1: largest |distance difference| {c['max_abs_diff_neighbour_vs_top1_A']:.2e} Å")
    print("best template's identity a chain sees (chains per bin; mean identity):")
    for name, v in results["identities_seen"].items():
        mean = "-" if v["mean_top_identity"] is None else f"{v['mean_top_identity']:.2f}"
        print(f"  {name:<36} " + "  ".join(f"{b} {n}" for b, n in v["bins"].items()) + f"   mean {mean}")
    print("cost, 1 thread:")
    for key in ("search_test_vs_train", "search_train_vs_train"):
        s = results[key]
        print(f"  {key:<24} {s['n_queries']} x {s['n_database']}: {s['cold_seconds']:.2f} s "
              f"(MMseqs2 {s['mmseqs_seconds']:.2f} s), cached {s['cached_seconds']:.3f} s")
    fe = results["features"]
    print(f"  features {fe['residues']} residues, K = {fe['k']} ({fe['n_templates']} templates): {fe['seconds']:.4f} s")
    em = results["embedding"]
    print(f"  forward+backward at {em['residues']} residues: distance head "
          f"{em['forward_backward_seconds']['distance_head']:.3f} s; template embedding, x head: "
          + ", ".join(f"{name.removeprefix('template_embedding_')} {r:.2f}" for name, r in em["ratio_to_distance_head"].items()))
    if "db" in results:
        d = results["db"]
        s = d["search_queries"]
        print(f"  database {d['n_chains']} chains: fingerprint {d['fingerprint_seconds']:.2f} s, load "
              f"{d['load_seconds_incl_fingerprint']:.2f} s; {s['n_queries']} queries {s['cold_seconds']:.2f} s "
              f"({s['cold_seconds_per_query']:.3f} s each, {s['n_with_hit']} with a hit); one "
              f"{d['search_one_chain']['residues']}-residue chain {d['search_one_chain']['cold_seconds']} s; its "
              f"features {d['features_one_chain']['seconds']:.4f} s")
        print("    the queries' best template identity: " + "  ".join(
            f"{b} {n}" for b, n in s["best_template_identity"].items()))
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average (1, 5, 15 min) at start {results['load_average_at_start']}, at end "
          f"{results['load_average_at_end']} (on a shared machine the timings vary with it)")
    write_json(args.output, results)
    print(f"wrote {args.output}")
    return 0


def cost_only(args) -> int:
    """Training-step share and inference cost (``step_cost``, ``inference_cost``) into ``args.output``."""
    import json

    backbone = args.backbone
    tmp = None
    if backbone is None:
        from proteinmtp.tiny import write_tiny

        tmp = tempfile.TemporaryDirectory()
        backbone = tmp.name
        write_tiny(backbone)
    results = json.loads(Path(args.output).read_text()) if Path(args.output).is_file() else {}
    la0 = [round(x, 2) for x in os.getloadavg()]
    sc = step_cost(args.train, backbone, args.k, args.steps)
    stats = open_dataset(args.train).global_stats
    ic = inference_cost(args.db, backbone, stats, args.k) if args.db else None
    results["training_step"] = {**sc, "train": label(args.train), "load_average": [la0, [round(x, 2) for x in os.getloadavg()]]}
    print(f"training step (demo recipe, batch 1, 1 thread, K = {sc['k']}, {sc['steps']} steps per arm): with "
          f"templates {sc['with_templates']['step_seconds']:.3f} s, without {sc['without']['step_seconds']:.3f} s "
          f"(x{sc['step_ratio_with_vs_without']}); template features {sc['feature_share']:.1%} of a step, the "
          f"template embedding {sc['embedding_share']:.1%} (target: features <= 20 %)")
    if ic is not None:
        results["inference"] = {**ic, "db": label(args.db)}
        print(f"inference, one {ic['residues']}-residue chain, K = {ic['k']}, {ic['database_chains']}-chain "
              f"database, 1 thread: search {ic['search_seconds']:.3f} s + features {ic['feature_seconds']:.3f} s "
              f"+ embedding {ic['forward_seconds']['with_templates'] - ic['forward_seconds']['without']:.3f} s = "
              f"{ic['added_seconds_per_chain']:.3f} s added (target <= 1 s; forward without templates "
              f"{ic['forward_seconds']['without']:.3f} s; database load {ic['database_load_seconds']:.2f} s once)")
    write_json(args.output, results)
    print(f"wrote {args.output}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
