"""Does the LLM know contacts? The unsupervised attention probe of Rao et al. 2021, per model and init.

    python benchmarks/attention_probe.py --data_dir build/full                      # 3 models x 2 inits x 2 layouts
    python benchmarks/attention_probe.py --data_dir data/demo/dataset --quick       # smoke version

Rao, Meier, Sercu, Ovchinnikov, Rives (2021), "Transformer protein language models are unsupervised
structure learners" (ICLR; the ESM contact regression), applied unchanged to text LLMs:

1. Run the frozen backbone on a chain (no training of anything in it) and keep every layer × head attention
   map over the residue tokens only (special tokens' rows and columns dropped, as ESM's contact head does).
2. Symmetrise each map, F = A + Aᵀ, then apply the average product correction,
   APC(F)_ij = F_ij − F_i· F_·j / F_·· (row sum × column sum / total).
3. Features of a pair (i, j) = its n_layers × n_heads APC values, z-scored on the training pairs (our
   addition: attention values scale as ~1/L and differ between models, so one L1 strength would zero
   every weight of one model and not of another). An L1-regularised logistic regression (scikit-learn,
   liblinear, C = --C) is fitted on all pairs with |i − j| ≥ 6 of --n_train training chains (contact:
   Cα–Cα < 8 Å, the project's definition), and ranks the test chains' pairs (``degenerate`` in the JSON
   when no weight survives).
4. Report long-range (|i − j| ≥ 24) P@L and P@L/5 on the --n_test test chains of bench_pretraining (same
   seed, same ≤ --max_eval_len filter, so the same 100 chains), beside the separation prior's
   (proteinmtp.metrics.contact_metrics for both).

Causal decoders (Qwen2.5, SmolLM2): attention is lower-triangular (token i attends to j ≤ i), so
A + Aᵀ is the lower triangle mirrored: the symmetrised (i, j) entry is how much the LATER residue of the
pair attends to the EARLIER one; the earlier one never sees the later. The ``echo`` layout
([bos] r_1..r_L <sep> r_1..r_L) gives every residue a view of the whole chain: there A is the attention of
the second copy's residue i (query) to the first copy's residue j (key), a full L × L map, then symmetrised
the same way. <sep> is the model's own eos/sep token where it has one, else its bos (no learned vector:
nothing is trained here). BERT-style encoders (MiniLM) see the whole chain in the ``direct`` layout already.

Output: ``benchmarks/results/attention_probe.json``: model → init → layout → {precision_L_long,
precision_L5_long, n_test, layers, heads, ...}, plus the prior's, and per-chain values; resumable (one
entry per model × init × layout, computed ones skipped on a rerun).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_backbones import BACKBONES, autocast, backbone_path  # noqa: E402

from proteinmtp.fileio import write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MIN_SEP = 6            # pairs the regression is fitted on and ranks (Rao et al.: |i - j| >= 6)


def apc(f: np.ndarray) -> np.ndarray:
    """Average product correction of symmetric maps [..., L, L]: F − F_i· F_·j / F_··."""
    a1 = f.sum(-1, keepdims=True)
    a2 = f.sum(-2, keepdims=True)
    a12 = f.sum((-1, -2), keepdims=True)
    return f - a1 * a2 / np.where(a12 == 0, 1.0, a12)


def load_model(name: str, init: str, weights_dir: str | None):
    """(backbone with eager attention, tokenizer, is_encoder) in eval mode."""
    from proteinmtp.backbone import is_encoder_config, load_backbone, load_tokenizer

    path = backbone_path(name, weights_dir)
    bb = load_backbone(path, init=init, seed=0)
    if hasattr(bb, "set_attn_implementation"):
        bb.set_attn_implementation("eager")        # sdpa returns no attention weights
    else:
        bb.config._attn_implementation = "eager"
    tok = load_tokenizer(path)
    return bb.eval(), tok, is_encoder_config(bb.config)


def token_layout(tok, sequence: str, layout: str, is_encoder: bool) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(token ids, query positions [L], key positions [L]) of the residues in ``layout``."""
    from proteinmtp.layouts import ResidueEncoder

    enc = ResidueEncoder(tok, "direct", is_encoder=is_encoder)
    b = enc.collate([sequence])
    ids = b["input_ids"][0].tolist()
    pos = b["residue_pos"][0].numpy()
    if layout == "direct":
        return ids, pos, pos
    sep = next(t for t in (tok.eos_token_id, tok.sep_token_id, tok.bos_token_id, ids[0]) if t is not None)
    first = ids[: pos[-1] + 1]                                         # [bos] r_1..r_L
    res = [ids[p] for p in pos]
    out = first + [sep] + res
    second = np.arange(len(first) + 1, len(out))
    return out, second, pos


@torch.no_grad()
def pair_features(bb, ids: list[int], q: np.ndarray, k: np.ndarray, precision: str) -> tuple[np.ndarray, int, int]:
    """(APC-corrected symmetrised attention [n_layers * n_heads, L, L] float32, n_layers, n_heads)."""
    x = torch.tensor([ids])
    with autocast(precision):
        out = bb(input_ids=x, attention_mask=torch.ones_like(x), output_attentions=True)
    att = torch.stack([a[0].float() for a in out.attentions])            # [layers, heads, T, T]
    a = att[:, :, torch.as_tensor(q)][:, :, :, torch.as_tensor(k)].numpy()  # [layers, heads, L, L]
    f = a + np.swapaxes(a, -1, -2)
    return apc(f).reshape(-1, len(q), len(q)).astype(np.float32), att.shape[0], att.shape[1]


def train_pairs(feats: np.ndarray, true_dist: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    L = true_dist.shape[0]
    i, j = np.triu_indices(L, MIN_SEP)
    ok = mask[i] & mask[j] & np.isfinite(true_dist[i, j])
    i, j = i[ok], j[ok]
    return feats[:, i, j].T, (true_dist[i, j] < 8.0).astype(np.int8)


def probe_one(args, name: str, init: str, layout: str, train: list, test: list, prior) -> dict:
    from sklearn.linear_model import LogisticRegression

    from proteinmtp.metrics import contact_metrics

    t0, c0 = time.time(), time.process_time()
    bb, tok, is_encoder = load_model(name, init, args.weights_dir)
    if layout == "echo" and is_encoder:
        return {"skipped": "an encoder sees the whole chain in the direct layout"}
    xs, ys = [], []
    for s in train:
        ids, q, k = token_layout(tok, s.sequence, layout, is_encoder)
        f, n_layers, n_heads = pair_features(bb, ids, q, k, args.precision)
        x, y = train_pairs(f, s.distances(), s.mask())
        xs.append(x)
        ys.append(y)
    X, Y = np.concatenate(xs), np.concatenate(ys)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # z-scored features: APC'd attention values are ~1/L and differ in scale between models, so unscaled an
    # L1 penalty of one strength zeroes every weight of one model and not another's
    clf = make_pipeline(StandardScaler(),
                        LogisticRegression(l1_ratio=1.0, C=args.C, solver="liblinear", max_iter=1000))  # pure L1
    clf.fit(X, Y)
    n_nonzero = int((clf[-1].coef_ != 0).sum())
    fit_s = time.time() - t0
    per = {}
    for s in test:
        ids, q, k = token_layout(tok, s.sequence, layout, is_encoder)
        f, _, _ = pair_features(bb, ids, q, k, args.precision)
        L = len(s.sequence)
        p = clf.predict_proba(f.reshape(f.shape[0], -1).T)[:, 1].reshape(L, L)
        p = np.maximum(p, p.T)
        m = contact_metrics(p, s.distances(), s.mask())
        pm = contact_metrics(prior.predict(L), s.distances(), s.mask(), higher_is_contact=False)
        per[s.id] = {"precision_L_long": m["precision_L_long"], "precision_L5_long": m["precision_L5_long"],
                     "prior_precision_L_long": pm["precision_L_long"],
                     "prior_precision_L5_long": pm["precision_L5_long"]}

    def mean(key):
        v = np.array([r[key] for r in per.values()], dtype=float)
        return float(np.nanmean(v)) if np.isfinite(v).any() else None

    return {"precision_L_long": mean("precision_L_long"), "precision_L5_long": mean("precision_L5_long"),
            "prior_precision_L_long": mean("prior_precision_L_long"),
            "prior_precision_L5_long": mean("prior_precision_L5_long"),
            "n_test": len(per), "n_train": len(train), "train_pairs": int(len(Y)), "train_contacts": int(Y.sum()),
            "layers": int(n_layers), "heads": int(n_heads), "nonzero_weights": n_nonzero,
            "degenerate": n_nonzero == 0,          # every pair scored alike: the precision means nothing
            "C": args.C, "precision": args.precision, "threads": torch.get_num_threads(),
            "seconds": time.time() - t0, "cpu_seconds": time.process_time() - c0, "fit_seconds": fit_s,
            "per_chain": per}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default="build/full", help="dataset directory with {train,test}.json.gz")
    p.add_argument("--models", default="minilm,smollm2,qwen25", help=f"comma-separated from {', '.join(BACKBONES)}")
    p.add_argument("--inits", default="pretrained,random", help="backbone weights: pretrained and/or random (seed 0)")
    p.add_argument("--layouts", default="direct,echo", help="direct and/or echo (decoders only)")
    p.add_argument("--n_train", type=int, default=20, help="training chains of the regression (seeded subset)")
    p.add_argument("--train_seed", type=int, default=0, help="seed of the training chains")
    p.add_argument("--max_train_len", type=int, default=300, help="longest training chain (residues)")
    p.add_argument("--n_test", type=int, default=100, help="test chains (bench_pretraining's subset; 0 = all)")
    p.add_argument("--test_seed", type=int, default=0, help="seed of the test subset")
    p.add_argument("--max_eval_len", type=int, default=500, help="longest test chain (residues)")
    p.add_argument("--C", type=float, default=0.15, help="inverse L1 strength of the logistic regression")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="backbone compute precision")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--weights_dir", default=None, help="where the GGUF checkpoints are (fetched when missing)")
    p.add_argument("--output", default="benchmarks/results/attention_probe.json", help="JSON results")
    p.add_argument("--quick", action="store_true",
                   help="smoke version: demo data, 4 training and 4 test chains, output under build/")
    args = p.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if args.quick:
        for flag, v in {"--data_dir": "data/demo/dataset", "--n_train": 4, "--n_test": 4,
                        "--output": "build/attention_probe_quick.json"}.items():
            if flag not in given:
                setattr(args, flag[2:], v)
    for key in ("models", "inits", "layouts"):
        setattr(args, key, [x.strip() for x in getattr(args, key).split(",") if x.strip()])
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    torch.set_num_threads(args.threads)
    from bench_pretraining import test_subset

    from proteinmtp.dataio import open_dataset
    from proteinmtp.prior import prior_for_training

    test = test_subset(args)
    train_path = Path(args.data_dir) / "train.json.gz"
    train_all = open_dataset(train_path).samples
    prior, _ = prior_for_training(str(train_path), train_all)
    pool = [s for s in train_all if 30 <= len(s.sequence) <= args.max_train_len and int(s.mask().sum()) >= 30]
    rng = np.random.default_rng(args.train_seed)
    train = [pool[i] for i in sorted(rng.choice(len(pool), min(args.n_train, len(pool)), replace=False))]
    out_path = Path(args.output)
    res = json.loads(out_path.read_text()) if out_path.is_file() else {}
    res.update({"method": "Rao et al. 2021 contact regression: symmetrised (A + A^T) APC-corrected attention "
                          "of every layer x head, L1 logistic regression (liblinear) on all |i-j| >= 6 pairs of "
                          "the training chains; contact = Ca-Ca < 8 A",
                "causal_symmetrisation": "A + A^T of a lower-triangular map = the later residue's attention to "
                                         "the earlier one, mirrored; echo: second-copy queries x first-copy keys",
                "test_ids": [s.id for s in test], "train_ids": [s.id for s in train],
                "note": "qwen25/smollm2: GGUF checkpoints dequantised (4-bit quantisation noise); random = the "
                        "same config, the architecture's own initialiser, seed 0"})
    for name in args.models:
        for init in args.inits:
            for layout in args.layouts:
                done = res.get(name, {}).get(init, {}).get(layout)
                if done is not None and done.get("n_test") == len(test) and done.get("n_train") == len(train):
                    continue
                print(f"attention probe: {name} {init} {layout}", flush=True)
                r = probe_one(args, name, init, layout, train, test, prior)
                res.setdefault(name, {}).setdefault(init, {})[layout] = r
                write_json(out_path, res)
                if "skipped" not in r:
                    print(f"  P@L long {r['precision_L_long']:.3f}, P@L/5 long {r['precision_L5_long']:.3f} "
                          f"(prior {r['prior_precision_L_long']:.3f} / {r['prior_precision_L5_long']:.3f}); "
                          f"{r['layers']}x{r['heads']} maps, {r['seconds']:.0f} s", flush=True)
    write_json(out_path, res)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
