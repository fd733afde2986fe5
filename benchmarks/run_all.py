"""Run every benchmark in benchmarks/ one after the other, print each one's table, and write a summary.

    python benchmarks/run_all.py                          # everything (long: the learning benchmark trains)
    python benchmarks/run_all.py --quick                  # --quick passed to the scripts that accept it
    python benchmarks/run_all.py --only bench_geometry,reconstruction_study
    python benchmarks/run_all.py --skip bench_learning --args "bench_geometry=--repeats 1"
    python benchmarks/run_all.py --list                   # what would run, with the flags each accepts

Scripts are discovered, not listed: every ``benchmarks/*.py`` that has a ``__main__`` block, except this file
and names starting with ``_``, in alphabetical order. Each runs in its own process from the repository root
(list arguments, no shell); its output streams to the console and to ``--log_dir/<name>.log``. A failing
script does not stop the others; the exit code is non-zero if any failed. Writes
benchmarks/results/summary.json: per script the command, return code and seconds.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from proteinmtp.fileio import write_json

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent


def discover(bench_dir: Path = BENCH_DIR) -> list[Path]:
    """Runnable benchmark scripts in ``bench_dir`` (sorted): *.py with a ``__main__`` block, minus this file."""
    out = []
    for p in sorted(bench_dir.glob("*.py")):
        if p.name.startswith("_") or p.resolve() == Path(__file__).resolve():
            continue
        try:
            text = p.read_text(errors="replace")
        except OSError:
            continue
        if "__main__" in text:
            out.append(p)
    return out


def _matches(script: Path, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(script.stem, pat.removesuffix(".py")) for pat in patterns)


def _split(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def accepts_quick(script: Path, timeout: float = 120.0) -> bool:
    """Whether ``script --help`` lists a ``--quick`` flag (the script decides what quick means)."""
    try:
        proc = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return proc.returncode == 0 and "--quick" in proc.stdout


def run_one(cmd: list[str], log_path: Path, timeout: float | None) -> tuple[int, float]:
    """Run ``cmd`` from the repo root, streaming its output to the console and ``log_path``; (return code, s)."""
    t0 = time.time()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
                if timeout is not None and time.time() - t0 > timeout:
                    proc.kill()
                    log.write(f"\n[run_all] killed after {timeout:g} s (--timeout)\n")
                    print(f"[run_all] killed after {timeout:g} s (--timeout)")
                    break
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise
    return rc, time.time() - t0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated script names (stem, glob ok) to run; empty = all")
    p.add_argument("--skip", default="", help="comma-separated script names (stem, glob ok) to leave out")
    p.add_argument("--quick", action="store_true", help="pass --quick to every script whose --help lists it")
    p.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                   help="extra arguments for one script, e.g. 'bench_geometry=--repeats 1' (repeatable)")
    p.add_argument("--timeout", type=float, default=0.0, help="kill a script after this many seconds (0 = none)")
    p.add_argument("--log_dir", default="build/benchmark_logs", help="one <name>.log per script")
    p.add_argument("--output", default="benchmarks/results/summary.json", help="summary JSON")
    p.add_argument("--list", action="store_true", help="list the scripts that would run (and --quick support); "
                   "run nothing")
    args = p.parse_args(argv)
    extra: dict[str, list[str]] = {}
    for item in args.args:
        name, sep, rest = item.partition("=")
        if not sep or not name.strip():
            p.error(f"--args expects NAME=ARGS, got {item!r}")
        try:
            extra[name.strip().removesuffix(".py")] = shlex.split(rest)
        except ValueError as e:
            p.error(f"--args {item!r}: {e}")
    args.extra = extra
    args.only, args.skip = _split(args.only), _split(args.skip)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scripts = discover()
    if args.only:
        unknown = [pat for pat in args.only if not any(_matches(s, [pat]) for s in scripts)]
        if unknown:
            print(f"run_all: --only {','.join(unknown)} matches no script in benchmarks/ "
                  f"(have: {', '.join(s.stem for s in scripts)})", file=sys.stderr)
            return 2
        scripts = [s for s in scripts if _matches(s, args.only)]
    scripts = [s for s in scripts if not _matches(s, args.skip)]
    unknown = sorted(set(args.extra) - {s.stem for s in scripts})
    if unknown:
        print(f"run_all: --args for {', '.join(unknown)}, which is not selected", file=sys.stderr)
        return 2
    if not scripts:
        print("run_all: no benchmark selected", file=sys.stderr)
        return 2

    plan = []
    for s in scripts:
        quick = accepts_quick(s) if (args.quick or args.list) else False
        cmd = [sys.executable, str(s.relative_to(REPO))] + (["--quick"] if args.quick and quick else []) \
            + args.extra.get(s.stem, [])
        plan.append((s, quick, cmd))
    if args.list:
        for s, quick, cmd in plan:
            print(f"{s.stem:<24} {'--quick' if quick else '':<8} {shlex.join(cmd[1:])}")
        return 0

    summary = {"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "quick": args.quick, "cpu_count": os.cpu_count(), "runs": []}
    t_all = time.time()
    for i, (s, quick, cmd) in enumerate(plan, 1):
        print(f"\n{'=' * 100}\n[{i}/{len(plan)}] {shlex.join(cmd[1:])}\n{'=' * 100}", flush=True)
        rc, sec = run_one(cmd, Path(args.log_dir) / f"{s.stem}.log", args.timeout or None)
        print(f"[run_all] {s.stem}: exit {rc} in {sec:.1f} s", flush=True)
        summary["runs"].append({"script": s.name, "command": shlex.join(["python"] + cmd[1:]), "returncode": rc,
                                "seconds": round(sec, 2), "quick": bool(args.quick and quick),
                                "load_average_1min_after": round(os.getloadavg()[0], 2)})
        summary["total_seconds"] = round(time.time() - t_all, 2)
        write_json(Path(args.output), summary)

    print(f"\n{'script':<26} {'exit':>5} {'seconds':>9}")
    for r in summary["runs"]:
        print(f"{r['script']:<26} {r['returncode']:>5} {r['seconds']:>9.1f}")
    failed = [r["script"] for r in summary["runs"] if r["returncode"] != 0]
    print(f"\nwrote {args.output}" + (f"; FAILED: {', '.join(failed)}" if failed else "; all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
