"""Re-create the Cα-trace fixtures of tests/data/geometry from Docking Benchmark 5.5 files.

    python tests/data/geometry/make_fixtures.py --structures ../shared/data/structures/db5.5

Each <name>.npz holds ``ca`` [L, 3] float32 Å (residues with a Cα only) and ``sequence``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from proteinmtp.structure import read_structure

# (file, chain index, name): an α-rich chain, a β-rich antibody domain pair, a mid-size α/β chain, a small one.
PICKS = [
    ("1A2K_l_b.pdb.gz", 0, "alpha_196"),
    ("1AHW_l_b.pdb.gz", 0, "beta_200"),
    ("1AZS_l_b.pdb.gz", 0, "mixed_339"),
    ("1AKJ_l_b.pdb.gz", 0, "small_114"),
]


def main() -> None:
    ap = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--structures", default="../shared/data/structures/db5.5", help="DB5.5 folder")
    ap.add_argument("--out", default=str(Path(__file__).parent), help="output folder")
    a = ap.parse_args()
    for fname, idx, name in PICKS:
        ch = read_structure(Path(a.structures) / fname)[idx]
        ok = np.isfinite(ch.ca).all(axis=1)
        seq = "".join(c for c, m in zip(ch.sequence, ok) if m)
        np.savez_compressed(Path(a.out) / f"{name}.npz", ca=ch.ca[ok].astype(np.float32), sequence=seq,
                            source=fname)
        print(name, int(ok.sum()))


if __name__ == "__main__":
    main()
