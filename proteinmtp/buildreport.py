"""The report of a dataset build: what happened to every input file and chain (report.json's "files"), the
summary numbers and the summary printed at the end of a build."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from proteinmtp.dataset import Sample


def length_summary(lengths: Sequence[int]) -> dict:
    if not lengths:
        return {"n": 0}
    a = np.asarray(lengths)
    edges = [0, 50, 100, 200, 400, 800, 10**9]
    labels = ["<50", "50-99", "100-199", "200-399", "400-799", ">=800"]
    hist = {lab: int(((a >= lo) & (a < hi)).sum()) for lab, lo, hi in zip(labels, edges[:-1], edges[1:])}
    q = np.percentile(a, [0, 25, 50, 75, 100])
    return {"n": int(len(a)), "min": int(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
            "max": int(q[4]), "mean": float(a.mean()), "histogram": hist}


class BuildReport:
    """What the build did to every file and chain: report.json "files" entries, drop counts, file counters."""

    def __init__(self):
        self.files: dict[str, dict] = {}
        self.dropped: dict[str, int] = {}
        self.n_found = self.n_read = self.n_failed = self.n_noprotein = self.n_repaired = 0
        self.failed_by_kind: dict[str, int] = {}

    def note(self, file: str, status: str, **kw) -> dict:
        e = self.files.setdefault(file, {"file": file, "status": status})
        if status == "skipped":
            e["status"] = "skipped"
        e.update(kw)
        return e

    def drop(self, s: Sample, reason: str, detail: str = "") -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        e = self.note(s.source, "partial")
        e.setdefault("chains", []).append({"id": s.id, "reason": reason, **({"detail": detail} if detail else {})})

    def file_entries(self) -> list[dict]:
        return [self.files[k] for k in sorted(self.files)]

    def file_summary(self, n_inputs: int, n_ignored: int) -> dict:
        return {
            "inputs": n_inputs,
            "files_read": self.n_read,
            "files_failed": self.n_failed,
            "files_failed_by_kind": dict(sorted(self.failed_by_kind.items())),
            "files_without_protein": self.n_noprotein,
            "files_repaired": self.n_repaired,
            "files_ignored_extension": n_ignored,
            "chains_found": self.n_found,
        }


def format_summary(summary: dict, seconds: float) -> str:
    s = summary
    lines = [
        f"files: {s['inputs']} inputs, {s['files_read']} read, {s['files_failed']} unreadable, "
        f"{s['files_without_protein']} without protein chains, {s['files_repaired']} read after a repair "
        f"(see report.json)  ({seconds:.1f} s)",
    ]
    lines += failed_lines(s)
    lines += [
        f"chains: {s['chains_found']} found, {s['chains_kept']} kept (unique), "
        f"{sum(s['chains_dropped'].values())} dropped",
    ]
    for reason, n in s["chains_dropped"].items():
        lines.append(f"  dropped {reason:<22} {n}")
    cl = s.get("clustering", {})
    search = "" if not cl else " (exhaustive search)" if cl["exhaustive"] else " (k-mer prefilter)"
    lines.append(f"clusters: {s['clusters_total']}{search}")
    if "verify" in cl:
        v = cl["verify"]
        lines.append(f"  split verified exhaustively: {v['hits_across_splits']} held-out hits across splits, "
                     f"{v['chains_moved_to_train']} chains ({v['clusters_moved']} clusters) moved to train")
    elif cl and not cl["exhaustive"]:
        lines.append("  note: the prefilter misses some links (3.1 % on a 6,631-chain corpus), so a held-out "
                     "chain may keep a hit in train; --verify_split makes the split exact")
    for name, v in s["splits"].items():
        lines.append(f"  {name:<5} {v['chains']:6d} chains {v['clusters']:6d} clusters {v['residues']:8d} residues"
                     f"  (largest cluster {v.get('largest_cluster', 0)})")
    ln = s["length"]
    lines.append(f"length: min {ln['min']}  p25 {ln['p25']:.0f}  median {ln['median']:.0f}  p75 {ln['p75']:.0f}  "
                 f"max {ln['max']}  mean {ln['mean']:.1f}")
    lines.append("  " + "  ".join(f"{k}: {v}" for k, v in ln["histogram"].items()))
    return "\n".join(lines)


def failed_lines(s: dict) -> list[str]:
    """One line per kind of file not read (unsupported format, dangling symlink, …)."""
    return [f"  not read: {n} {kind.replace('_', ' ')}" for kind, n in s.get("files_failed_by_kind", {}).items()]
