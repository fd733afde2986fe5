#!/usr/bin/env bash
# The README's GPU recipes on one CUDA GPU (<= 10 minutes, random-initialised weights, no hub access):
# seconds per step and peak memory of 0.5B LoRA and 1.5B 4-bit QLoRA at L = 256 and 512 in bf16, and
# inference throughput. Writes benchmarks/results/gpu_check.json; record the table in DISCUSSION.md.
#   bash benchmarks/gpu_check.sh              # on a machine with a GPU and requirements-gpu.txt installed
#   bash benchmarks/gpu_check.sh --allow_cpu --tiny   # plumbing check on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 600 "$PY" benchmarks/gpu_check.py "$@"
