"""Constants shared by every module (residues, geometry, separation ranges, file formats)."""

from __future__ import annotations

# The 20 standard amino acids, one-letter codes, in a fixed order.
STANDARD_AA = "ACDEFGHIKLMNPQRSTVWY"
# Letters a user may type: the 20 plus X (unknown), B (D/N), Z (E/Q), U (selenocysteine), O (pyrrolysine).
ALLOWED_AA = STANDARD_AA + "XBZUO"

AA1_TO_AA3 = {
    "A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS", "I": "ILE",
    "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN", "R": "ARG", "S": "SER",
    "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR", "X": "UNK", "B": "ASX", "Z": "GLX", "U": "SEC",
    "O": "PYL",
}
AA3_TO_AA1 = {v: k for k, v in AA1_TO_AA3.items() if k in STANDARD_AA}

# Geometry (Å).
CA_CA_BOND = 3.8          # ideal consecutive trans Cα–Cα distance
CHAIN_BREAK_CA_CA = 4.2   # consecutive Cα further apart than this = chain break
CONTACT_CUTOFF = 8.0      # Cα–Cα (or Cβ–Cβ) contact definition
# Bounds every predicted Cα trace must keep (``metrics.clash_check``; natives: i, i+2 ≥ 4.4 Å).
CLASH_MIN_CA_CA = 3.5     # no non-bonded Cα pair (|i − j| ≥ 2, or i, i+1 across a chain break) closer
I2_MIN_CA_CA = 4.2        # no i, i+2 Cα pair closer (the Cα virtual angle ≥ ~67°)
BOND_TOLERANCE = 0.1      # no Cα–Cα bond (i, i+1 within a chain segment) off CA_CA_BOND by more

# Sequence-separation ranges |i - j| (inclusive bounds; None = no upper bound).
SEPARATION_RANGES = {
    "local": (1, 5),
    "short": (6, 11),
    "medium": (12, 23),
    "long": (24, None),
}

# Dataset JSON format written by create_distmat_data.py and read by everything else.
DATASET_FORMAT = "proteinmtp-dataset/1"

# Pair-confidence classes: |predicted - true distance| in Å (the head's error classes, confidence.py's bins).
ERROR_EDGES = (0.5, 1.0, 2.0, 4.0)
