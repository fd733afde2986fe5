"""Check a built dataset for train/held-out leakage with an MMseqs2 search.

    python benchmarks/check_leakage.py                    # the bundled demo split -> leakage_demo.json
    python benchmarks/check_leakage.py --data_dir build/full --output benchmarks/results/leakage_full.json

Searches every val and test chain against every train chain (``mmseqs easy-search``, E-value
<= 1e-3) and counts held-out chains with a hit at identity >= --identity:

  * ``criterion``: the builder's rule, alignment covering >= --coverage of the shorter chain
    (must be 0 for a dataset built with the same --identity/--coverage);
  * ``any_coverage``: any alignment length (stricter than the builder promises; informative);
  * both with the exhaustive search (every pair aligned) and with MMseqs2's default k-mer
    prefilter at sensitivity 7.5, the way a reviewer would usually run it.

Prints a table, writes JSON (default benchmarks/results/leakage_demo.json), exits 1 if ``criterion``
finds a leak.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from proteinmtp.builder import BuildConfig
from proteinmtp.dataio import open_dataset
from proteinmtp.fileio import atomic_write
from proteinmtp.splits import iter_search_hits


def _find(data_dir: Path, name: str) -> Path:
    for suffix in (".json", ".json.gz"):
        if (data_dir / f"{name}{suffix}").exists():
            return data_dir / f"{name}{suffix}"
    raise SystemExit(f"check_leakage.py: error: no {name}.json[.gz] in {data_dir}")


def _severity(h: dict) -> float:
    return h["fident"] * max(h["qcov"], h["tcov"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default="data/demo/dataset", help="directory with train/val/test JSON")
    p.add_argument("--identity", type=float, default=0.3, help="identity (fraction) counted as leakage")
    p.add_argument("--coverage", type=float, default=BuildConfig().coverage,
                   help="coverage of the shorter chain (fraction) for the builder's rule")
    p.add_argument("--threads", type=int, default=2, help="MMseqs2 threads")
    p.add_argument("--output", default="benchmarks/results/leakage_demo.json", help="JSON result file")
    args = p.parse_args()
    data_dir = Path(args.data_dir)
    splits = {n: open_dataset(_find(data_dir, n)).samples for n in ("train", "val", "test")}
    train = {s.id: s.sequence for s in splits["train"]}
    held = {s.id: s.sequence for n in ("val", "test") for s in splits[n]}
    result: dict = {"data_dir": str(args.data_dir), "identity": args.identity, "coverage": args.coverage,
                    "n_train": len(train), "n_val": len(splits["val"]), "n_test": len(splits["test"])}
    rows = []
    for mode, exhaustive in (("exhaustive", True), ("prefilter_s7.5", False)):
        # hits streamed (never a list of every hit): per rule, the leaked chains, a count and the worst hit
        acc = {label: {"chains": set(), "hits": 0, "worst": None} for label in ("criterion", "any_coverage")}
        for h in iter_search_hits(held, train, min_identity=args.identity, threads=args.threads,
                                  exhaustive=exhaustive):
            if h["fident"] < args.identity:
                continue
            for label in ("criterion", "any_coverage"):
                if label == "criterion" and max(h["qcov"], h["tcov"]) < args.coverage:
                    continue
                a = acc[label]
                a["chains"].add(h["query"])
                a["hits"] += 1
                if a["worst"] is None or _severity(h) > _severity(a["worst"]):
                    a["worst"] = h
        for label, a in acc.items():
            leaked = sorted(a["chains"])
            result[f"{mode}/{label}"] = {"held_out_chains_with_hit": len(leaked), "hits": a["hits"],
                                         "chains": leaked[:50], "worst_hit": a["worst"]}
            rows.append((mode, label, len(leaked), a["hits"], a["worst"]))
    print(f"{'search':<16} {'rule':<13} {'leaked chains':>13} {'hits':>6}  worst hit (identity, cov shorter, alnlen)")
    for mode, label, n, nh, w in rows:
        ws = f"{w['query']} -> {w['target']} ({w['fident']:.2f}, {max(w['qcov'], w['tcov']):.2f}, {w['alnlen']})" if w else "-"
        print(f"{mode:<16} {label:<13} {n:>13} {nh:>6}  {ws}")
    print(f"held-out chains: {len(held)} (val {result['n_val']}, test {result['n_test']}), train chains: {len(train)}")
    out = Path(args.output)
    atomic_write(out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"wrote {out}")
    return 1 if result["exhaustive/criterion"]["held_out_chains_with_hit"] else 0


if __name__ == "__main__":
    sys.exit(main())
