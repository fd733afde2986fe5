"""The README's GPU recipes measured on one CUDA GPU: seconds per step, peak memory, inference throughput.

Run it whenever a GPU is available (``bash benchmarks/gpu_check.sh``, ≤ 10 minutes on one card). It needs
no hub access: the backbones are the published Qwen2.5-0.5B and Qwen2.5-1.5B *architectures* written
locally with RANDOM weights (``bench_backbone.qwen25_config``; speed and memory do not depend on the
weights) and the character-level tokenizer of ``proteinmtp.tiny``; the data are synthetic chains (random
sequences, a 3.8 Å random-walk Cα trace). Each measurement runs the real scripts as a user would:

* ``train_distmat.py`` for ``--steps`` optimizer steps per configuration, bf16: 0.5B LoRA and 1.5B 4-bit
  QLoRA + gradient checkpointing, batch 1 at L = 256 and 512 (the README's per-sequence memory table),
  plus each README recipe as written (batch 4 at L = 256; batch 2 × accumulation 4 at L = 384). Seconds
  per step are the median over the logged intervals after the first (warm-up) one, from
  ``train_log.jsonl``; peak memory is ``torch.cuda.max_memory_allocated`` as the training log records it;
* ``infer_distmat.py`` on ``--infer_records`` sequences of L = 256 with the 0.5B run: records per second
  end to end (forward on the GPU, reconstruction on the CPU).

Prints a table and writes ``benchmarks/results/gpu_check.json`` (with the GPU's name, torch and CUDA
versions). ``--allow_cpu --tiny`` runs the same plumbing on a CPU with the tiny Qwen2 backbone at short
lengths (no 4-bit: bitsandbytes needs CUDA), which is how the script is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))     # bench_backbone (the architectures)

from proteinmtp.config import HelpFormatter  # noqa: E402
from proteinmtp.fileio import atomic_write, write_json  # noqa: E402

# (name, backbone, fine-tuning flags, batch, grad accumulation, lengths)
CONFIGS = (
    ("0.5B LoRA bf16", "0.5B", ["--finetune", "lora", "--lora_r", "16", "--lora_alpha", "32"], 1, 1, (256, 512)),
    ("0.5B LoRA bf16, README recipe", "0.5B", ["--finetune", "lora", "--lora_r", "16", "--lora_alpha", "32"],
     4, 1, (256,)),
    ("1.5B QLoRA 4-bit + ckpt", "1.5B", ["--finetune", "lora", "--use_4bit", "--gradient_checkpointing"],
     1, 1, (256, 512)),
    ("1.5B QLoRA 4-bit + ckpt, README recipe", "1.5B",
     ["--finetune", "lora", "--use_4bit", "--gradient_checkpointing"], 2, 4, (384,)),
)


def synthetic_dataset(path: Path, lengths: list[int], seed: int = 0) -> None:
    """Chains of the given lengths: random sequences, Cα random walk with 3.8 Å steps (a compact-ish coil)."""
    from proteinmtp.constants import ALLOWED_AA
    from proteinmtp.dataset import Sample, compute_global_stats, save_dataset

    rng = np.random.default_rng(seed)
    letters = sorted(ALLOWED_AA)
    samples = []
    for k, L in enumerate(lengths):
        steps = rng.normal(size=(L, 3))
        steps = 3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True)
        samples.append(Sample(id=f"syn{k}:A", sequence="".join(rng.choice(letters, L)), ca=np.cumsum(steps, 0),
                              residue_ids=[str(i + 1) for i in range(L)], source="synthetic", split="train"))
    save_dataset(path, samples, compute_global_stats(samples), {"synthetic": True, "seed": seed})


def write_backbone(out: Path, size: str, tiny: bool) -> None:
    if (out / "config.json").is_file():
        return
    if tiny:
        subprocess.run([sys.executable, "-m", "proteinmtp.tiny", str(out)], check=True, cwd=REPO)
        return
    import torch
    from bench_backbone import qwen25_config
    from transformers import Qwen2Model

    from proteinmtp.tiny import build_tokenizer

    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2Model._from_config(qwen25_config(size), dtype=torch.bfloat16)
    model.save_pretrained(str(out))
    build_tokenizer().save_pretrained(str(out))
    del model


def read_log(run: Path) -> list[dict]:
    path = run / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_once(args, work: Path, name: str, size: str, flags: list[str], batch: int, accum: int, L: int,
               tiny: bool) -> dict:
    backbone = work / f"backbone_{size}"
    write_backbone(backbone, size, tiny)
    data = work / f"train_L{L}.json"
    if not data.is_file():
        synthetic_dataset(data, [L] * max(8, batch * accum * (args.steps + 2)))
    run = work / f"run_{size}_b{batch}x{accum}_L{L}"
    cmd = [sys.executable, "train_distmat.py", "--train_data", str(data), "--model_name", str(backbone),
           "--init_backbone", "pretrained", *flags, "--output_dir", str(run), "--max_steps", str(args.steps),
           "--max_seq_len", str(L), "--max_eval_len", str(L), "--per_device_train_batch_size", str(batch),
           "--gradient_accumulation_steps", str(accum), "--logging_steps", "1", "--eval_steps", str(10 ** 9),
           "--save_steps", str(10 ** 9), "--warmup_steps", "1", "--no_tqdm",
           "--bf16", "no" if args.allow_cpu and tiny else "yes"]
    row = {"config": name, "L": L, "batch": batch, "grad_accum": accum, "steps": args.steps, "run": str(run)}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.run_timeout)
    row["wall_s"] = round(time.time() - t0, 1)
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        return row
    logs = [r for r in read_log(run) if "loss" in r and "time" in r]
    times = [r["time"] for r in logs]
    dts = [b - a for a, b in zip(times, times[1:])]
    row["s_per_step"] = round(statistics.median(dts[1:] or dts), 4) if dts else None
    peaks = [r["gpu_peak_gb"] for r in logs if "gpu_peak_gb" in r]
    row["peak_gb"] = max(peaks) if peaks else None
    return row


def infer_once(args, work: Path, run: Path, L: int) -> dict:
    rng = np.random.default_rng(1)
    from proteinmtp.constants import ALLOWED_AA

    letters = sorted(ALLOWED_AA)
    fasta = work / f"infer_L{L}.fasta"
    atomic_write(fasta, "".join(f">r{i}\n{''.join(rng.choice(letters, L))}\n" for i in range(args.infer_records)))
    out = work / f"infer_out_L{L}"
    cmd = [sys.executable, "infer_distmat.py", "--model_path", str(run), "--fasta", str(fasta),
           "--output", str(out), "--overwrite"]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.run_timeout)
    wall = time.time() - t0
    row = {"config": "inference, 0.5B LoRA run", "L": L, "records": args.infer_records, "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    else:
        row["records_per_s"] = round(args.infer_records / wall, 3)
    return row


def environment() -> dict:
    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
    return env


def table(rows: list[dict]) -> str:
    lines = ["| configuration | L | batch × accum | s/step | peak GPU GB | records/s | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ba = f"{r['batch']} × {r['grad_accum']}" if "batch" in r else "-"
        lines.append(f"| {r['config']} | {r['L']} | {ba} | {r.get('s_per_step', '-')} | {r.get('peak_gb', '-')} | "
                     f"{r.get('records_per_s', '-')} | {r.get('error', r.get('skipped', ''))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--work_dir", default="build/gpu_check", help="scratch directory (backbones, data, runs)")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per training configuration")
    p.add_argument("--infer_records", type=int, default=64, help="sequences of L = 256 predicted end to end")
    p.add_argument("--run_timeout", type=float, default=240, help="seconds allowed per script run")
    p.add_argument("--allow_cpu", action="store_true", help="run without CUDA (plumbing check only)")
    p.add_argument("--tiny", action="store_true", help="the tiny Qwen2 backbone at L / 8 instead of the 0.5B/1.5B architectures")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "gpu_check.json"),
                   help="where to write the JSON results")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("gpu_check: no CUDA device; this check measures GPU recipes (use --allow_cpu --tiny "
                         "to test the plumbing on a CPU)")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, size, flags, batch, accum, lengths in CONFIGS:
        for L in lengths:
            L_run = L // 8 if args.tiny else L
            if "--use_4bit" in flags and not torch.cuda.is_available():
                rows.append({"config": name, "L": L_run, "batch": batch, "grad_accum": accum,
                             "skipped": "4-bit needs CUDA + bitsandbytes"})
                continue
            rows.append(train_once(args, work, name, size, flags, batch, accum, L_run, args.tiny))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    first = next((r for r in rows if r.get("s_per_step") is not None and r["batch"] == 1), None)
    if first is not None:
        rows.append(infer_once(args, work, Path(first["run"]), first["L"]))
    print(table(rows))
    write_json(args.output, {"environment": environment(), "tiny": args.tiny, "rows": rows,
                             "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "omp_threads": os.environ.get("OMP_NUM_THREADS")})
    print(f"wrote {args.output}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
