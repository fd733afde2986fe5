"""Cost of the real Qwen2.5-0.5B architecture with this project's pair head, bf16 on CPU.

The backbone is the Qwen2.5-0.5B configuration written locally (hidden 896, 24 layers, 14 query / 2 KV
heads, intermediate 4864, vocabulary 151936, tied embeddings, RoPE theta 1e6) with RANDOM weights (nothing
is downloaded), saved to a temporary directory and loaded back through ``proteinmtp.model.build_model``
(``AutoModel.from_pretrained``, LoRA via peft, echo layout, distance head): the code that trains.

For L = 64, 128, 256 residues it measures (medians of ``--repeats`` runs; one warm-up forward first):

* forward seconds (inference, no gradient), LoRA train-step seconds (forward + loss + backward + AdamW
  step) without and with gradient checkpointing, and the pair head's own forward+loss+backward seconds;
* memory two ways: (a) bytes of the tensors autograd saves for backward (``saved_tensors_hooks``, storages
  counted once; exact and noise-free, the activation memory that grows with L), split into backbone and
  pair head; (b) the process's peak RSS during the step minus its RSS just before (sampled every ms from
  /proc/self/statm after ``malloc_trim``; includes transient buffers, gradients and allocator slack).

From (a) it fits activation bytes = a·L + b·L² for backbone and head and CALCULATES the largest L that
trains on a 24 GB GPU (formula and assumptions printed and written to the JSON). Prints a table and writes
``benchmarks/results/backbone.json``.

    python benchmarks/bench_backbone.py                      # ~10-20 min on 2 busy cores
    python benchmarks/bench_backbone.py --lengths 32,64      # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from proteinmtp.fileio import atomic_write
from proteinmtp.heads.losses import LossTargets, head_loss
from proteinmtp.model import ModelSpec, build_model, count_parameters
from proteinmtp.tiny import build_tokenizer
from proteinmtp.training import DistanceCollator

REPO = Path(__file__).resolve().parents[1]


GIB = 1024 ** 3
GPU_BYTES = 24e9              # "24 GB" card (decimal GB, as sold): 22.35 GiB
CUDA_RESERVE = 1.5 * GIB      # CUDA context, cuBLAS/cuDNN workspaces, allocator fragmentation


# The published config.json values of the two README backbones (only the architecture; weights are random).
QWEN25 = {
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, max_position_embeddings=32768, max_window_layers=24),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, max_position_embeddings=131072, max_window_layers=28),
}


def qwen25_config(size: str = "0.5B"):
    """The Qwen2.5-0.5B or -1.5B architecture (values of the published config.json), written here."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=151936, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
        attention_dropout=0.0, use_sliding_window=False, sliding_window=32768, bos_token_id=151643,
        eos_token_id=151643, initializer_range=0.02, **QWEN25[size])


def write_backbone(out_dir: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    """Random-initialised Qwen2.5-0.5B-architecture base model + the character-level tokenizer."""
    from transformers import Qwen2Model

    torch.manual_seed(0)
    model = Qwen2Model._from_config(qwen25_config(), dtype=dtype)
    model.save_pretrained(str(out_dir))
    build_tokenizer().save_pretrained(str(out_dir))
    del model


# ----------------------------------------------------------------------------------------------------
# memory probes
# ----------------------------------------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Context manager: ``delta`` = peak RSS while inside minus RSS on entry (bytes), sampled every 1 ms."""

    def __enter__(self):
        _trim()
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())
        self.delta = self.peak - self.base


class SavedBytes:
    """Context manager counting the bytes of tensors saved for backward (each storage once), leaving out
    storages of ``exclude`` (the model's parameters: linear layers save their frozen weight, or a view of
    it, to compute input gradients, which costs no extra memory)."""

    def __init__(self, exclude: set[int] = frozenset()):
        self.exclude = exclude

    def __enter__(self):
        self.seen: set[tuple[int, int]] = set()
        self.bytes = 0

        def pack(t: torch.Tensor):
            s = t.untyped_storage()
            key = (s.data_ptr(), s.nbytes())
            if key not in self.seen and s.data_ptr() not in self.exclude and s.nbytes() > 0:
                self.seen.add(key)
                self.bytes += s.nbytes()
            return t

        self._ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


# ----------------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------------
def chain_batch(encoder, L: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random sequence of L residues with a random-walk Cα trace (3.8 Å steps) -> model batch."""
    rng = np.random.default_rng(seed)
    seq = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), L))
    steps = rng.normal(size=(L, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=1, keepdims=True)
    return DistanceCollator(encoder)([{"sequence": seq, "ca": np.cumsum(steps, 0)}])


def timed(fn, repeats: int, probe=None) -> tuple[float, list[float], object]:
    """Run ``fn`` ``repeats`` times; the first run happens inside ``probe`` (a context manager measuring
    memory). Returns (median seconds, every run's seconds, the probe)."""
    times = []
    for i in range(repeats):
        ctx = probe if (i == 0 and probe is not None) else contextlib.nullcontext()
        with ctx:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), times, probe


class Probes:
    """PeakRSS and (optionally) SavedBytes around the same call."""

    exclude: set[int] = set()          # parameter storages (set by main)

    def __init__(self, saved: bool):
        self.rss = PeakRSS()
        self.saved = SavedBytes(Probes.exclude) if saved else None

    def __enter__(self):
        self.rss.__enter__()
        if self.saved is not None:
            self.saved.__enter__()
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            self.saved.__exit__(*exc)
        self.rss.__exit__(*exc)


def measure_length(model, opt, L: int, repeats: int, train_steps: bool = True) -> dict:
    """Forward, train step without / with gradient checkpointing, and the head alone, at L residues.

    The first timed run of each is also the memory probe (RSS; saved-tensor bytes for the step without
    checkpointing), so a measurement costs ``repeats`` runs; the very first call of the benchmark is
    preceded by a warm-up forward at the smallest L (``main``).
    """
    batch = chain_batch(model.encoder, L)
    infer = {k: v for k, v in batch.items() if k != "dist"}
    bb = model.backbone.get_base_model() if hasattr(model.backbone, "get_base_model") else model.backbone
    r: dict = {"L": L, "tokens": int(batch["input_ids"].shape[1])}

    model.eval()

    def forward():
        with torch.no_grad():
            model(**infer)

    r["forward_s"], r["forward_runs_s"], pr = timed(forward, repeats, Probes(saved=False))
    r["forward_rss_delta_bytes"] = pr.rss.delta
    print(f"  L={L} forward {r['forward_s']:.1f} s", file=sys.stderr, flush=True)

    model.train()
    if not train_steps:
        # memory only: one forward with gradient recording (what a step saves for backward), no backward
        with Probes(saved=True) as pr:
            out = model(**batch)
        r["saved_total_bytes"] = pr.saved.bytes
        r["forward_grad_rss_delta_bytes"] = pr.rss.delta
        del out
        for tag in ("nogc", "gc"):
            r[f"train_step_{tag}_s"] = r[f"train_step_{tag}_rss_delta_bytes"] = None
        print(f"  L={L} saved bytes (no train step timed)", file=sys.stderr, flush=True)

    def step():
        opt.zero_grad(set_to_none=True)
        model(**batch)["loss"].backward()
        opt.step()

    for gc in ((False, True) if train_steps else ()):
        tag = "gc" if gc else "nogc"
        if gc:
            bb.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            bb.gradient_checkpointing_disable()
        r[f"train_step_{tag}_s"], r[f"train_step_{tag}_runs_s"], pr = timed(step, repeats, Probes(saved=not gc))
        r[f"train_step_{tag}_rss_delta_bytes"] = pr.rss.delta
        if not gc:
            r["saved_total_bytes"] = pr.saved.bytes
        print(f"  L={L} train step ({tag}) {r[f'train_step_{tag}_s']:.1f} s", file=sys.stderr, flush=True)
    bb.gradient_checkpointing_disable()
    opt.zero_grad(set_to_none=True)

    # the pair head alone: features [1, L, H] fp32 (what residue_features returns), forward + loss + backward
    head = model.head
    H = model.backbone.config.hidden_size
    feats = torch.randn(1, L, H, requires_grad=True)
    rmask = batch["residue_mask"]
    dist = batch["dist"]
    eye = torch.eye(L, dtype=torch.bool)
    valid = rmask[:, :, None] & rmask[:, None, :] & torch.isfinite(dist) & ~eye
    stats = (model.log_dist_mean, model.log_dist_std)

    def head_step():
        out = head(feats, rmask)
        head_loss(head, out, LossTargets(dist, valid, stats))["loss"].backward()

    head_step()                                  # warm-up (cheap)
    r["head_train_s"], r["head_train_runs_s"], pr = timed(head_step, max(repeats, 3), Probes(saved=True))
    r["saved_head_bytes"] = pr.saved.bytes
    r["head_train_rss_delta_bytes"] = pr.rss.delta
    head.zero_grad(set_to_none=True)
    r["saved_backbone_bytes"] = r["saved_total_bytes"] - r["saved_head_bytes"]
    r["head_share_time"] = r["head_train_s"] / r["train_step_nogc_s"] if train_steps else None
    r["head_share_saved_memory"] = r["saved_head_bytes"] / r["saved_total_bytes"]
    return r


def fit_ab(Ls: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares y = a·L + b·L² (no constant: zero residues save nothing)."""
    A = np.array([[L, L * L] for L in Ls], dtype=float)
    (a, b), *_ = np.linalg.lstsq(A, np.array(ys, dtype=float), rcond=None)
    return float(a), float(b)


def max_length(budget: float, a: float, b: float) -> int:
    """Largest L with a·L + b·L² <= budget."""
    if budget <= 0:
        return 0
    if b <= 0:
        return int(budget / a)
    return int((-a + np.sqrt(a * a + 4 * b * budget)) / (2 * b))


def capacity(results: list[dict], model, spec: ModelSpec) -> dict:
    """Largest L on a 24 GB GPU, with and without gradient checkpointing (formula in the returned dict)."""
    cfg = model.backbone.config
    n_layers, H = cfg.num_hidden_layers, cfg.hidden_size
    Ls = [r["L"] for r in results]
    a_bb, b_bb = fit_ab(Ls, [r["saved_backbone_bytes"] for r in results])
    a_hd, b_hd = fit_ab(Ls, [r["saved_head_bytes"] for r in results])
    n_trainable, n_total = count_parameters(model)
    n_frozen = n_total - n_trainable
    weights = 2 * n_frozen                      # bf16 frozen base weights (whatever dtype was measured)
    train_state = 16 * n_trainable              # fp32 param + grad + 2 AdamW moments (LoRA, head, vectors)
    fixed = weights + train_state + CUDA_RESERVE
    budget = GPU_BYTES - fixed
    tokens_per_residue = results[0]["tokens"] / results[0]["L"]   # echo: 2L + 1 tokens
    # gradient checkpointing keeps each layer's input (bf16 [T, H]) and recomputes one layer at a time
    a_ckpt = n_layers * tokens_per_residue * H * 2 + a_bb / n_layers
    b_ckpt = b_bb / n_layers
    no_gc = max_length(budget, a_bb + a_hd, b_bb + b_hd)
    gc = max_length(budget, a_ckpt + a_hd, b_ckpt + b_hd)
    # backbone alone (a head whose pair tensor is tiled/chunked would leave this), for context
    gc_bb_only = max_length(budget, a_ckpt, b_ckpt)
    return {
        "formula": ("max L s.t. W + S + R + (a_bb + a_head)·L + (b_bb + b_head)·L² <= 24e9 B; W = 2 B x frozen "
                    "params (bf16), S = 16 B x trainable params (fp32 weight, grad, 2 AdamW moments), R = 1.5 GiB "
                    "(CUDA context, workspaces, fragmentation); a, b fitted to the bytes autograd saves for "
                    "backward at the measured L. With gradient checkpointing the backbone keeps only each "
                    "layer's bf16 input (n_layers x tokens/residue x H x 2 B per residue) plus one layer's "
                    "saved activations during recomputation (a_bb/n_layers, b_bb/n_layers); the head is not "
                    "checkpointed."),
        "assumptions": ["batch size 1, echo layout (2L+1 tokens)", "bf16 backbone weights, LoRA r="
                        f"{spec.lora_r} on all linear layers, AdamW", "activation bytes as measured on CPU: "
                        "the head runs in fp32 (bf16 autocast on a GPU would roughly halve b_head)",
                        "GPU attention kernels (flash / memory-efficient SDPA) save no more than the CPU's",
                        "transient gradient buffers fit inside the 1.5 GiB reserve"],
        "params_total": n_total, "params_trainable": n_trainable,
        "weights_bytes": weights, "train_state_bytes": train_state, "reserve_bytes": CUDA_RESERVE,
        "backbone_a_bytes_per_residue": a_bb, "backbone_b_bytes_per_residue2": b_bb,
        "head_a_bytes_per_residue": a_hd, "head_b_bytes_per_residue2": b_hd,
        "ckpt_backbone_a_bytes_per_residue": a_ckpt, "ckpt_backbone_b_bytes_per_residue2": b_ckpt,
        "max_L_24GB_no_checkpointing": no_gc, "max_L_24GB_gradient_checkpointing": gc,
        "max_L_24GB_gradient_checkpointing_backbone_only": gc_bb_only,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--lengths", default="64,128,256", help="chain lengths L to measure (residues, comma-separated)")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed runs per measurement (median); the head alone gets at least 3")
    p.add_argument("--step_lengths", default=None,
                   help="lengths at which train steps are timed (default: all --lengths); at the others only "
                        "the forward is timed and the saved-for-backward bytes are measured")
    p.add_argument("--reuse", default=None,
                   help="JSON list of per-length results from an earlier run (e.g. the .partial.json); their "
                        "lengths are not measured again")
    p.add_argument("--reuse_timing", default=None,
                   help="JSON list of per-length results whose train-step timings (and RSS) fill in the lengths "
                        "not in --step_lengths (memory is measured again)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0 = torch's default; on a CPU shared with other jobs a second "
                        "thread spin-waits and can slow everything down many-fold, hence 1)")
    p.add_argument("--layout", default="echo", help="residue layout (placeholder | echo | direct)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                   help="backbone weight dtype (the head always runs in float32)")
    p.add_argument("--lora_r", type=int, default=16, help="LoRA rank (all linear layers)")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "backbone.json"),
                   help="where to write the JSON results")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        Ls = [int(x) for x in args.lengths.split(",")]
    except ValueError:
        print(f"error: --lengths must be comma-separated integers, got {args.lengths!r}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="qwen25_05b_random_") as tmp:
        t0 = time.perf_counter()
        print("writing the random Qwen2.5-0.5B-architecture backbone ...", file=sys.stderr, flush=True)
        dtype = getattr(torch, args.dtype)
        write_backbone(Path(tmp), dtype)
        write_s = time.perf_counter() - t0
        spec = ModelSpec(base_model=tmp, layout=args.layout, finetune="lora", lora_r=args.lora_r,
                         lora_alpha=2 * args.lora_r, lora_dropout=0.05, head={"head_type": "distance", "prior_input": False},
                         global_stats={"log_dist_mean": 2.6, "log_dist_std": 0.7})
        model = build_model(spec, dtype=dtype)
    Probes.exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
    Probes.exclude |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    head_params = sum(p.numel() for p in model.head.parameters())
    print("warm-up forward ...", file=sys.stderr, flush=True)
    with torch.no_grad():
        model.eval()(**{k: v for k, v in chain_batch(model.encoder, min(Ls)).items() if k != "dist"})
    step_Ls = set(Ls) if args.step_lengths is None else {int(x) for x in args.step_lengths.split(",") if x.strip()}
    results = json.loads(Path(args.reuse).read_text()) if args.reuse else []
    done = {r["L"] for r in results}
    timing_from = {r["L"]: r for r in json.loads(Path(args.reuse_timing).read_text())} if args.reuse_timing else {}
    partial = Path(args.output).with_suffix(".partial.json")
    for L in Ls:
        if L in done:
            continue
        print(f"measuring L={L} ...", file=sys.stderr, flush=True)
        r = measure_length(model, opt, L, args.repeats, train_steps=L in step_Ls)
        if L in timing_from and r["train_step_nogc_s"] is None:     # train-step timings of an earlier run
            old = timing_from[L]
            r.update({k: v for k, v in old.items() if k.startswith("train_step_")})
            r["head_share_time"] = r["head_train_s"] / r["train_step_nogc_s"]
            r["train_step_timing_from"] = "earlier run (--reuse_timing), same code and settings"
        results.append(r)
        results.sort(key=lambda r: r["L"])
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(results, indent=1))     # nothing lost if a later length is cut short
    cap = capacity(results, model, spec) if len(Ls) >= 2 else None
    load_after = os.getloadavg()

    # ---- table ----
    mb = 1024 ** 2
    print(f"\nQwen2.5-0.5B architecture (random weights), {args.dtype}, LoRA r={args.lora_r} all-linear, "
          f"layout {args.layout}, distance head; torch threads {torch.get_num_threads()}; "
          f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    hdr = (f"{'L':>5} {'tok':>5} {'fwd s':>7} {'step s':>7} {'step+GC s':>9} {'head s':>7} {'head %t':>7} "
           f"{'saved MiB':>9} {'head MiB':>8} {'head %m':>7} {'RSS step':>8} {'RSS GC':>7} {'RSS fwd':>7}")
    print(hdr)
    def f(v, scale=1.0, fmt=".2f", pct=False):
        if v is None:
            return "-"
        return f"{100 * v:.0f}%" if pct else format(v / scale, fmt)

    for r in results:
        print(f"{r['L']:>5} {r['tokens']:>5} {f(r['forward_s']):>7} {f(r['train_step_nogc_s']):>7} "
              f"{f(r['train_step_gc_s']):>9} {f(r['head_train_s']):>7} {f(r['head_share_time'], pct=True):>7} "
              f"{f(r['saved_total_bytes'], mb, '.0f'):>9} {f(r['saved_head_bytes'], mb, '.0f'):>8} "
              f"{f(r['head_share_saved_memory'], pct=True):>7} {f(r['train_step_nogc_rss_delta_bytes'], mb, '.0f'):>8} "
              f"{f(r['train_step_gc_rss_delta_bytes'], mb, '.0f'):>7} {f(r['forward_rss_delta_bytes'], mb, '.0f'):>7}")
    print("(s: medians; saved = bytes autograd keeps for backward; RSS = peak-minus-start process RSS, MiB)")
    if cap:
        print(f"24 GB GPU, by calculation: max L without checkpointing {cap['max_L_24GB_no_checkpointing']}, "
              f"with gradient checkpointing {cap['max_L_24GB_gradient_checkpointing']} "
              f"(backbone alone with checkpointing: {cap['max_L_24GB_gradient_checkpointing_backbone_only']})")
        print(f"  backbone {cap['backbone_a_bytes_per_residue'] / 1024:.0f} KiB/residue + "
              f"{cap['backbone_b_bytes_per_residue2']:.0f} B/residue²; head {cap['head_a_bytes_per_residue'] / 1024:.0f}"
              f" KiB/residue + {cap['head_b_bytes_per_residue2']:.0f} B/residue²")

    out = {
        "backbone": "Qwen2.5-0.5B architecture, random weights (config written locally)",
        "dtype": f"{args.dtype} backbone, float32 head", "device": "cpu", "torch_threads": torch.get_num_threads(),
        "layout": args.layout, "lora_r": args.lora_r, "repeats": args.repeats, "head_params": head_params,
        "memory_methods": {"saved_*_bytes": "bytes of tensors autograd saves for backward (saved_tensors_hooks, "
                                             "each storage once)",
                           "*_rss_delta_bytes": "peak process RSS during the call minus RSS before it, sampled every "
                                                "1 ms after malloc_trim"},
        "noise": {"load_average_before": load_before, "load_average_after": load_after,
                  "note": "CPU shared with other processes; every *_runs_s list holds the individual repeats"},
        "write_backbone_s": write_s, "wall_s": time.time() - t_start,
        "results": results, "capacity_24GB": cap,
    }
    atomic_write(args.output, json.dumps(out, indent=1))
    partial.unlink(missing_ok=True)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
