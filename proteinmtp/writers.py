"""Files written for a prediction: the Cα-trace structure (PDB/mmCIF with REMARKs and confidence), the
distance matrix (.npy), the distogram (.npz), the check that an existing structure holds a record, and
one appended JSON line of a manifest. Every file is written atomically (``fileio``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from proteinmtp.confidence import predicted_tm
from proteinmtp.constants import STANDARD_AA
from proteinmtp.fileio import atomic_open
from proteinmtp.predict import StructurePrediction, predicted_ss8
from proteinmtp.structure import StructureReadError, read_structure
from proteinmtp.structure_writer import write_trace


def structure_remarks(sp: StructurePrediction, *, run_dir: str | Path = "", model_name: str = "",
                      record_id: str = "") -> list[str]:
    """REMARK text for an output structure: model, run, record, hand chosen, mean confidence, predicted
    TM-score (``confidence.predicted_tm``, when the model predicts pair error classes)."""
    rem = []
    if record_id:
        rem.append(f"RECORD {record_id}")
    rem.append(f"MODEL {model_name or 'unknown'}")
    if run_dir:
        rem.append(f"RUN {Path(run_dir).resolve().name}")
    rem.append(f"HAND {sp.hand.upper()} (HELIX-HANDEDNESS SCORE {float(sp.info.get('hand_score', 0.0)):+.2f}; "
               "MDS CANNOT TELL MIRROR IMAGES APART)")
    if sp.info.get("hand_rule"):
        rem.append(f"HAND RULE {str(sp.info['hand_rule']).upper().replace('_', ' ')}")
    rem.append(f"MEAN CONFIDENCE {sp.mean_confidence:.1f} (0-100)")
    ptm = predicted_tm(getattr(sp.distances, "pair_error_probs", None))
    if ptm is not None:
        rem.append(f"PREDICTED TM-SCORE {ptm:.3f} (PTM FROM PAIR DISTANCE ERRORS; BLIND TO THE HAND)")
    rem.extend(template_remarks(getattr(sp.distances, "templates", None)))
    if "stress_rmse" in sp.info:
        rem.append(f"DISTANCE FIT RMSE {sp.info['stress_rmse']:.2f} A")
    return rem


def template_remarks(templates: list[dict] | None) -> list[str]:
    """REMARK text naming the templates a prediction used (``DistancePrediction.templates``: id, identity,
    coverage, best first); one line when the run's database had no hit; nothing for a run without templates
    (or with them turned off)."""
    if templates is None:
        return []
    if not templates:
        return ["TEMPLATES NONE (NO HIT IN THE TEMPLATE DATABASE; PREDICTED ON THE NO-TEMPLATE PATH)"]
    return [f"TEMPLATE {i} {t['id']} IDENTITY {float(t['identity']):.3f} COVERAGE {float(t['coverage']):.3f}"
            for i, t in enumerate(templates, 1)]


def write_structure(path: str | Path, sp: StructurePrediction, *, fmt: str = "pdb", run_dir: str | Path = "",
                    model_name: str = "", record_id: str = "") -> Path:
    """Write a Cα-trace PDB or mmCIF (``fmt``), confidence 0–100 in the B-factor column, REMARKs, and
    HELIX/SHEET records (mmCIF: _struct_conf/_struct_sheet_range) of the predicted secondary structure when
    the run has a secondary-structure head."""
    path = Path(path)
    write_trace(path, sp.ca_xyz, sp.sequence, fmt=fmt, bfactors=sp.confidence, ss8=predicted_ss8(sp.distances),
                model_name=model_name or "proteinmtp", method=f"{sp.info.get('method', '?')} MDS + hand choice",
                remarks=structure_remarks(sp, run_dir=run_dir, model_name=model_name, record_id=record_id))
    return path


def save_distmat(path: str | Path, sp: StructurePrediction) -> Path:
    """Save the predicted distance matrix [L, L] float32 Å as .npy (atomic)."""
    path = Path(path)
    dist = np.asarray(sp.distances.dist, dtype=np.float32)
    with atomic_open(path, "wb") as fh:
        np.save(fh, dist)
    return path


def save_distogram(path: str | Path, sp: StructurePrediction) -> Path:
    """Save distogram and confidences as .npz (atomic).

    Arrays: dist [L, L] Å, distogram_probs [L, L, n_bins] float16 (if the model has a distogram), bin_edges
    [n_bins - 1] Å, contact_prob [L, L], pair_confidence [L, L] 0–1, residue_confidence [L] 0–1, sequence;
    when the model predicts pair error classes also pair_error_probs [L, L, 5] float16 (|pred − true| <
    0.5, 1, 2, 4, ≥ 4 Å) and ptm (a scalar, ``confidence.predicted_tm``).
    """
    dp = sp.distances
    arrays: dict[str, np.ndarray] = {
        "sequence": np.array(sp.sequence),
        "dist": np.asarray(dp.dist, dtype=np.float32),
        "contact_prob": np.asarray(dp.contact_prob, dtype=np.float32),
        "pair_confidence": np.asarray(dp.pair_confidence, dtype=np.float32),
        "residue_confidence": np.asarray(dp.residue_confidence, dtype=np.float32),
    }
    if getattr(dp, "distogram_probs", None) is not None:
        arrays["distogram_probs"] = np.asarray(dp.distogram_probs, dtype=np.float16)  # halves the file
    if getattr(dp, "bin_edges", None) is not None:
        arrays["bin_edges"] = np.asarray(dp.bin_edges, dtype=np.float32)
    if getattr(dp, "pair_error_probs", None) is not None:
        arrays["pair_error_probs"] = np.asarray(dp.pair_error_probs, dtype=np.float16)
        arrays["ptm"] = np.array(predicted_tm(dp.pair_error_probs), dtype=np.float64)
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def existing_structure_mismatch(path: str | Path, sequence: str) -> str | None:
    """Why the structure file ``path`` (written by an earlier run) does not hold ``sequence``; None when
    it does. Lengths must agree, and letters wherever ``sequence`` has one of the 20 standard amino acids
    (X, B, Z, U, O are written as UNK, ASX, GLX, SEC, PYL and may read back as X)."""
    try:
        chains = read_structure(path)
    except StructureReadError as e:
        return f"unreadable ({str(e).removeprefix(f'{path}: ')})"
    got = "".join(c.sequence for c in chains)
    if len(got) != len(sequence):
        return f"holds {len(got)} residues, not {len(sequence)}"
    for i, (a, b) in enumerate(zip(sequence, got)):
        if a in STANDARD_AA and a != b:
            return f"holds another sequence ({b!r} at position {i + 1}, not {a!r})"
    return None


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON line to ``path`` with a single ``write`` on a file opened for appending, so a row
    is added whole (an earlier run's rows are kept; an interrupted run leaves every finished row)."""
    data = (json.dumps(row, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)

