#!/usr/bin/env bash
# Follow a training run: step/total, loss, learning rate, ETA, last evaluation, GPU status (nvidia-smi).
#
#   ./monitor_training.sh RUN_DIR            # refresh every 30 s until training finishes or its process ends
#   ./monitor_training.sh -n 10 RUN_DIR      # refresh every 10 s
#   ./monitor_training.sh --once RUN_DIR     # print once and exit
#
# Refreshing ends with exit 0 when the run is finished, and with exit 1 when its training process (the
# pid in RUN_DIR/train.lock) has ended before the last step (stopped, killed or crashed: re-run it to resume).
# Reads RUN_DIR/train_log.jsonl, training_config.json and train.lock (written by train_distmat.py).
# Python: $PYTHON if set, else the repository's .venv/bin/python, else python3.
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

interval=30
once=0
run_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--interval) [ $# -ge 2 ] || { echo "error: $1 needs a number of seconds" >&2; exit 2; }
                   interval="$2"; shift 2 ;;
    --once) once=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$run_dir" ] || { echo "error: only one RUN_DIR is accepted" >&2; exit 2; }
       run_dir="$1"; shift ;;
  esac
done
[ -n "$run_dir" ] || { echo "error: missing RUN_DIR (see --help)" >&2; exit 2; }
[ -d "$run_dir" ] || { echo "error: run directory $run_dir does not exist" >&2; exit 2; }
case "$interval" in ''|*[!0-9]*) echo "error: -n needs a whole number of seconds, got '$interval'" >&2; exit 2 ;; esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -x "$repo/.venv/bin/python" ]; then py="$repo/.venv/bin/python"
else py="python3"; fi

show() {
  date -u +"%Y-%m-%d %H:%M:%S UTC"
  rc=0
  PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$py" -m proteinmtp.experiments status --exit_code "$run_dir" || rc=$?
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "GPU:"
    nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu \
      --format=csv,noheader 2>/dev/null | sed 's/^/  /' || echo "  nvidia-smi failed"
  else
    echo "GPU:           none (nvidia-smi not found)"
  fi
  return $rc
}

if [ "$once" = 1 ]; then
  rc=0; show || rc=$?
  case "$rc" in 3|4) exit 0 ;; esac
  exit "$rc"
fi
while true; do
  [ -t 1 ] && clear
  rc=0; show || rc=$?
  if [ "$rc" = 3 ]; then echo "training finished."; exit 0; fi
  if [ "$rc" = 4 ]; then
    echo "training is not running: its process ended before the last step; re-run the training command to resume" >&2
    exit 1
  fi
  [ "$rc" = 0 ] || exit "$rc"
  sleep "$interval"
done
