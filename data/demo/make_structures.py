"""Make the bundled demo structures: a few hundred unbound DB5.5 chains, reduced and gzipped.

    python data/demo/make_structures.py --db55 ../shared/data/structures/db5.5 \\
        --output data/demo/structures --target_chains 310 --max_len 300 --seed 0

Unbound files (``*_u.pdb.gz``) are visited in a seeded random order; a file is taken when every
protein chain in it is 40-300 residues long and at least one of its sequences is new. Each taken
file keeps its name and is reduced to its first model and the protein backbone + Cβ atoms
(N, CA, C, O, CB of amino-acid residues, MSE and other modified residues included; altlocs and
occupancies kept), which is all create_distmat_data.py reads; B-factors are set to 0.00 and columns
67-80 (segment id, element, charge) dropped to save space. Chains read from a reduced file are
identical to those read from the original (checked by tests/test_create_data.py on the bundled files). Stops when ``--target_chains`` unique sequences are in.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import gemmi
import numpy as np

from proteinmtp.structure import StructureReadError, read_structure

KEEP_ATOMS = {"N", "CA", "C", "O", "CB"}


def reduce_pdb(text: str) -> str:
    """First model, ATOM/HETATM lines of amino-acid residues with atoms N/CA/C/O/CB (B = 0), TER, END."""
    out = []
    for line in text.splitlines():
        rec = line[:6]
        if rec == "ENDMDL":
            break
        if rec in ("ATOM  ", "HETATM"):
            if line[12:16].strip() not in KEEP_ATOMS:
                continue
            info = gemmi.find_tabulated_residue(line[17:20].strip())
            if rec == "HETATM" and (info is None or not info.is_amino_acid()):
                continue
            out.append(line[:60] + "  0.00")  # B-factor zeroed, columns 67-80 dropped: ~20% smaller
        elif rec.startswith("TER"):
            out.append(line.rstrip())
    out.append("END")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--db55", default="../shared/data/structures/db5.5", help="DB5.5 directory (*_u.pdb.gz)")
    p.add_argument("--output", default="data/demo/structures", help="output directory")
    p.add_argument("--target_chains", type=int, default=310, help="unique chain sequences to collect")
    p.add_argument("--min_len", type=int, default=40, help="minimum chain length (residues)")
    p.add_argument("--max_len", type=int, default=300, help="maximum chain length (residues)")
    p.add_argument("--seed", type=int, default=0, help="seed for the order in which files are visited")
    args = p.parse_args()
    files = sorted(Path(args.db55).glob("*_u.pdb.gz"))
    if not files:
        print(f"error: no *_u.pdb.gz files in {args.db55}", file=sys.stderr)
        return 2
    order = np.random.default_rng(args.seed).permutation(len(files))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    n_files = 0
    for i in order:
        f = files[i]
        try:
            chains = read_structure(f)
        except StructureReadError:
            continue
        if not chains or not all(args.min_len <= len(c) <= args.max_len for c in chains):
            continue
        new = {c.sequence for c in chains} - seen
        if not new:
            continue
        seen |= new
        text = gzip.open(f, "rt").read()
        (out / f.name).write_bytes(gzip.compress(reduce_pdb(text).encode(), compresslevel=9, mtime=0))
        n_files += 1
        if len(seen) >= args.target_chains:
            break
    size = sum(x.stat().st_size for x in out.glob("*.gz"))
    print(f"{n_files} files, {len(seen)} unique sequences, {size / 1e6:.2f} MB in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
