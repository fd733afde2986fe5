"""What a person looks at: experiment records and the status of a training run.

Every training and evaluation run may leave ``experiments/<YYYY-MM-DD>_<name>/`` (the record a run's files
are copied into, kept in git while weights stay local). The run directory itself, its lock and its resume
rules are ``proteinmtp.rundir``; this module only reads them.

Layout of an experiment directory::

    record.json          the run directory this record belongs to (relative to the record)
    config.json          copy of RUN_DIR/training_config.json
    training_log.txt     copy of RUN_DIR/train.log
    eval_results.json    written by evaluate_distmat_model.py (model, prior, oracle)
    eval_per_protein.csv per-protein metrics
    visualizations/      training_curves.png, heatmaps, error plots, HTML 3D views (.written.json lists the
                         files the last evaluation wrote, so a re-evaluation leaves none of the old ones)

The same name twice on one day never overwrites a record of another run: ``<date>_<name>_2``, ``_3``, …
are used (see :func:`experiment_dir`).

Also the status summary that ``monitor_training.sh`` prints::

    python -m proteinmtp.experiments status RUN_DIR
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from proteinmtp.config import HelpFormatter
from proteinmtp.fileio import copy_atomic, write_json
from proteinmtp.rundir import CONFIG_NAME as TRAIN_CONFIG
from proteinmtp.rundir import TRAIN_FINISHED, TRAIN_JSONL, TRAIN_TEXT_LOG, lock_holder, read_json_or_none

VIS_DIR = "visualizations"
RECORD_FILE = "record.json"        # in an experiment record: {"run_dir": the recorded run, relative to the record}
WRITTEN_FILE = ".written.json"     # in a figure directory: the files the last evaluation wrote there

_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_name(name: str) -> str:
    """A file-name-safe version of ``name`` (letters, digits, ``._-``; others become ``_``)."""
    out = _NAME_RE.sub("_", str(name)).strip("._")
    return out or "run"


def recorded_run(exp_dir: str | Path) -> Path | None:
    """The (resolved) run directory an experiment record belongs to, or None when it records no run yet.

    From ``record.json``; a record written before that file existed is read from its config.json
    (``args.output_dir``, taken relative to the current directory).
    """
    exp_dir = Path(exp_dir)
    rec = _read_json(exp_dir / RECORD_FILE)
    if isinstance(rec.get("run_dir"), str):
        return (exp_dir / rec["run_dir"]).resolve()
    out = (_read_json(exp_dir / "config.json").get("args") or {}).get("output_dir")
    return Path(out).resolve() if isinstance(out, str) else None


def _claim(exp_dir: Path, run_dir: str | Path) -> None:
    rel = os.path.relpath(Path(run_dir).resolve(), exp_dir.resolve())
    if _read_json(exp_dir / RECORD_FILE).get("run_dir") != rel:
        write_json(exp_dir / RECORD_FILE, {"run_dir": rel})


def experiment_dir(name: str, root: str | Path = "experiments", date: str | _dt.date | None = None,
                   run_dir: str | Path | None = None) -> Path:
    """``root/<YYYY-MM-DD>_<name>/`` (created, with ``visualizations/``); date defaults to today (UTC).

    With ``run_dir`` the record belongs to that run and a record of another run is never reused: the first
    of ``<date>_<name>``, ``<date>_<name>_2``, ``_3``, … that is new, records no run yet, or records this
    same run (a resumed run, or its evaluation, keeps its record) is taken and marked (record.json).
    Without ``run_dir`` the plain name is used as it is.
    """
    if date is None:
        date = _dt.datetime.now(_dt.timezone.utc).date()
    date_s = date.isoformat() if isinstance(date, _dt.date) else str(date)
    base = Path(root) / f"{date_s}_{sanitize_name(name)}"
    if run_dir is None:
        (base / VIS_DIR).mkdir(parents=True, exist_ok=True)
        return base
    want = Path(run_dir).resolve()
    k = 1
    while True:
        path = base if k == 1 else base.with_name(f"{base.name}_{k}")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir()          # exclusive: two starts never take the same new record
            except FileExistsError:
                continue
        if path.is_dir() and recorded_run(path) in (None, want):
            (path / VIS_DIR).mkdir(exist_ok=True)
            _claim(path, want)
            return path
        k += 1


def record_training(run_dir: str | Path, exp_dir: str | Path) -> Path:
    """Copy a training run's config and text log into ``exp_dir`` and draw its training curves.

    RUN_DIR/training_config.json → config.json, RUN_DIR/train.log → training_log.txt,
    RUN_DIR/train_log.jsonl → visualizations/training_curves.png, and record.json names the run. Files the
    run does not have yet are skipped; calling it again refreshes the copies (idempotent). Returns ``exp_dir``.
    """
    run_dir, exp_dir = Path(run_dir), Path(exp_dir)
    (exp_dir / VIS_DIR).mkdir(parents=True, exist_ok=True)
    _claim(exp_dir, run_dir)
    if (run_dir / TRAIN_CONFIG).is_file():
        copy_atomic(run_dir / TRAIN_CONFIG, exp_dir / "config.json")
    if (run_dir / TRAIN_TEXT_LOG).is_file():
        copy_atomic(run_dir / TRAIN_TEXT_LOG, exp_dir / "training_log.txt")
    jsonl = run_dir / TRAIN_JSONL
    if jsonl.is_file():
        from proteinmtp import plots  # matplotlib only when needed

        rows = plots.read_train_log(jsonl)
        if rows:
            plots.training_curves(rows, exp_dir / VIS_DIR / "training_curves.png")
    return exp_dir


def record_evaluation(exp_dir: str | Path, output_dir: str | Path,
                      files: Iterable[str] = ("eval_results.json", "eval_per_protein.csv")) -> Path:
    """Copy an evaluation's results and figures from ``output_dir`` into ``exp_dir`` (no-op when they are the same).

    Figures an earlier evaluation copied there and this one does not have are removed (see :func:`replace_written`).
    """
    exp_dir, output_dir = Path(exp_dir), Path(output_dir)
    if exp_dir.resolve() == output_dir.resolve():
        return exp_dir
    for name in files:
        if (output_dir / name).is_file():
            copy_atomic(output_dir / name, exp_dir / name)
    vis = output_dir / VIS_DIR
    copied = []
    if vis.is_dir():
        for f in sorted(vis.iterdir()):
            if f.is_file() and f.name != WRITTEN_FILE:
                copy_atomic(f, exp_dir / VIS_DIR / f.name)
                copied.append(f.name)
    replace_written(exp_dir / VIS_DIR, copied)
    return exp_dir


def replace_written(directory: str | Path, names: Iterable[str]) -> None:
    """Record that ``names`` are the files this tool just wrote into ``directory`` (DIRECTORY/.written.json),
    removing those an earlier call listed that are not written again: a re-evaluation leaves no figure or
    viewer page of the previous one behind, and files anything else put there are never touched."""
    d = Path(directory)
    names = sorted({Path(n).name for n in names})
    before = _read_json(d / WRITTEN_FILE).get("files")
    before = [n for n in before if isinstance(n, str)] if isinstance(before, list) else []
    for n in before:
        if n not in names and Path(n).name == n and n not in ("", ".", "..", WRITTEN_FILE):
            (d / n).unlink(missing_ok=True)
    if names or before:
        write_json(d / WRITTEN_FILE, {"files": names})


# ---------------------------------------------------------------------------------------------------------
# Training status (monitor_training.sh)

_TIME_KEYS = ("time", "timestamp", "wall_time", "unix_time")
_TOTAL_KEYS = ("max_steps", "total_steps", "num_training_steps")


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; {} when it is missing or unreadable (status output never fails on a file)."""
    return read_json_or_none(path) or {}


def _find_total(config: dict, rows: list[dict]) -> int | None:
    for r in reversed(rows):
        for k in _TOTAL_KEYS:
            if isinstance(r.get(k), (int, float)) and r[k] > 0:
                return int(r[k])
    stack = [config]
    while stack:
        d = stack.pop()
        for k in _TOTAL_KEYS:
            if isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool) and d[k] > 0:
                return int(d[k])
        stack.extend(v for v in d.values() if isinstance(v, dict))
    return None


def training_status(run_dir: str | Path, now: float | None = None) -> dict:
    """Progress of a training run from RUN_DIR/train_log.jsonl and training_config.json.

    Returns {"step", "total", "loss", "learning_rate", "eta_s", "last_eval" (dict or None), "finished",
    "running", "pid", "log_age_s"}; missing values are None. ETA uses the log's time stamps when rows carry one
    (time/timestamp), otherwise the file times of training_config.json (start) and train_log.jsonl (last row).
    Step, loss and ETA come from the current session (rows since the last "started"/"resumed" event).
    ``finished``: RUN_DIR/training_complete.json exists or the step reached the total (a run stopped by
    --max_train_minutes is not finished). ``running``: whether the process holding RUN_DIR/train.lock is
    alive (None without a lock file, or when it runs on another host).
    """
    from proteinmtp.plots import read_train_log

    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    jsonl = run_dir / TRAIN_JSONL
    rows = read_train_log(jsonl) if jsonl.is_file() else []
    config = _read_json(run_dir / TRAIN_CONFIG)
    # The current session: rows after the last "started"/"resumed" event (a resumed run appends to the log).
    starts = [i for i, r in enumerate(rows) if r.get("event") in ("started", "resumed")]
    session = rows[starts[-1]:] if starts else rows
    steps = [r for r in session if isinstance(r.get("step"), (int, float)) and "loss" in r]
    evals = [r for r in rows if "eval_mae" in r]
    last = steps[-1] if steps else {}
    all_steps = [int(r["step"]) for r in session if isinstance(r.get("step"), (int, float))]
    step = max(all_steps) if all_steps else None
    total = _find_total(config, rows)
    finished = (run_dir / TRAIN_FINISHED).is_file() or bool(total and step is not None and step >= total)
    holder = lock_holder(run_dir)
    eta = None
    if step and total and step < total and not finished:
        timed = [r for r in session if isinstance(r.get("step"), (int, float)) and ("loss" in r or "event" in r)
                 and any(isinstance(r.get(k), (int, float)) for k in _TIME_KEYS)][-20:]

        def _t(r: dict) -> float:
            return float(next(r[k] for k in _TIME_KEYS if isinstance(r.get(k), (int, float))))

        if len(timed) >= 2 and timed[-1]["step"] > timed[0]["step"]:
            rate = (_t(timed[-1]) - _t(timed[0])) / (timed[-1]["step"] - timed[0]["step"])
            eta = rate * (total - step)
        elif not timed and not any("time" in r for r in rows) and (run_dir / TRAIN_CONFIG).is_file() \
                and jsonl.is_file():
            elapsed = jsonl.stat().st_mtime - (run_dir / TRAIN_CONFIG).stat().st_mtime
            first = int(steps[0]["step"]) - 1 if steps else 0
            if elapsed > 0 and step > first:
                eta = elapsed / (step - first) * (total - step)
    return {
        "step": step,
        "total": total,
        "loss": last.get("loss"),
        "learning_rate": last.get("learning_rate"),
        "eta_s": eta,
        "last_eval": evals[-1] if evals else None,
        "finished": finished,
        "running": holder["alive"] if holder else None,
        "pid": holder.get("pid") if holder else None,
        "log_age_s": (now - jsonl.stat().st_mtime) if jsonl.is_file() else None,
        "n_rows": len(rows),
    }


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def format_status(run_dir: str | Path, status: dict | None = None) -> str:
    """Human-readable multi-line status of a training run (what monitor_training.sh prints)."""
    st = training_status(run_dir) if status is None else status
    if not st["n_rows"]:
        return f"run {run_dir}: no {TRAIN_JSONL} rows yet (training not started, or the path is wrong)"
    total = st["total"] if st["total"] is not None else "?"
    pct = f" ({100.0 * st['step'] / st['total']:.1f}%)" if st["total"] and st["step"] is not None else ""
    lines = [
        f"run            {run_dir}",
        f"step           {st['step']}/{total}{pct}" + ("  [finished]" if st["finished"] else ""),
        "loss           " + (f"{st['loss']:.4f}" if isinstance(st["loss"], (int, float)) else "n/a"),
        "learning rate  " + (f"{st['learning_rate']:.3g}" if isinstance(st["learning_rate"], (int, float)) else "n/a"),
        f"ETA            {_fmt_seconds(st['eta_s'])}",
        f"log updated    {_fmt_seconds(st['log_age_s'])} ago",
        "process        " + {True: f"running (pid {st.get('pid')})", False: f"not running (pid {st.get('pid')} ended)",
                             None: "unknown"}[st.get("running")],
    ]
    ev = st["last_eval"]
    if ev:
        parts = [f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in ev.items()
                 if k.startswith("eval_") and isinstance(v, (int, float))]
        lines.append(f"last eval      step {ev.get('step')}: " + " ".join(parts[:8]))
    else:
        lines.append("last eval      none yet")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Experiment-record helpers.",
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("status", help="print a training run's progress")
    p.add_argument("run_dir", help="run directory written by train_distmat.py")
    p.add_argument("--exit_code", action="store_true",
                   help="exit 3 when the run has finished, 4 when it has not but its training process has ended "
                        "(used by monitor_training.sh to stop refreshing)")
    args = parser.parse_args(argv)
    if not Path(args.run_dir).is_dir():
        print(f"error: run directory {args.run_dir} does not exist", file=sys.stderr)
        return 2
    st = training_status(args.run_dir)
    print(format_status(args.run_dir, st))
    if args.exit_code and st["finished"]:
        return 3
    return 4 if (args.exit_code and st["running"] is False) else 0


if __name__ == "__main__":
    sys.exit(main())
