"""Shared test fixtures. Tests never read ../shared: every file they need is committed in the repo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"          # small structure files (edge cases), compressed
DEMO_DIR = REPO / "data" / "demo"            # bundled demo structures + dataset built from them


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    return TEST_DATA


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO_DIR


def helix_ca(L: int, radius: float = 2.3, rise: float = 1.5, turn_deg: float = 100.0) -> np.ndarray:
    """Ideal right-handed α-helix Cα trace [L, 3] Å: ``radius`` Å, ``turn_deg`` degrees and ``rise`` Å per
    residue (defaults: Cα–Cα ≈ 3.83 Å)."""
    t = np.arange(L)
    a = np.deg2rad(turn_deg) * t
    return np.stack([radius * np.cos(a), radius * np.sin(a), rise * t], axis=1)


def ca_atom_array(ca: np.ndarray):
    """A biotite AtomArray of Cα atoms (ALA, chain A, residues 1..L) at ``ca``: the reference programs' input."""
    import biotite.structure as bs

    arr = bs.AtomArray(len(ca))
    arr.coord = ca
    arr.atom_name[:] = "CA"
    arr.element[:] = "C"
    arr.res_id = np.arange(1, len(ca) + 1)
    arr.res_name[:] = "ALA"
    arr.chain_id[:] = "A"
    return arr


def real_samples(test_data_dir: Path, n: int, crop: int):
    """First n distinct chains (>= 20 residues) of the committed structures, first ``crop`` residues."""
    from proteinmtp.dataset import Sample
    from proteinmtp.structure import read_structure

    out, seen = [], set()
    for f in sorted(test_data_dir.glob("*.gz")):
        try:
            chains = read_structure(f)
        except ValueError:
            continue
        for c in chains:
            if len(c.sequence) >= 20 and c.sequence not in seen:
                seen.add(c.sequence)
                out.append(Sample(id=c.id, sequence=c.sequence[:crop], ca=c.ca[:crop],
                                  residue_ids=list(c.residue_ids[:crop]), source=f.name, split="train"))
    return out[:n]


@pytest.fixture(scope="session")
def data(tmp_path_factory, test_data_dir):
    """train.json (4 real chains, 40 residues each) and val.json (2) for the training CLI tests."""
    from proteinmtp.dataset import compute_global_stats, save_dataset

    out = tmp_path_factory.mktemp("data")
    samples = real_samples(test_data_dir, 6, 40)
    train, val = samples[:4], samples[4:]
    for s in val:
        s.split = "val"
    gs = compute_global_stats(train)
    save_dataset(out / "train.json", train, gs, {})
    save_dataset(out / "val.json", val, gs, {})
    return out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A tiny random Qwen2-style backbone directory (hidden 32, 2 layers, 2 heads; proteinmtp.tiny), shared
    read-only by every test that builds a model on it."""
    from proteinmtp.tiny import write_tiny

    out = tmp_path_factory.mktemp("tiny_qwen2")
    write_tiny(out, "qwen2", hidden_size=32, num_layers=2, num_heads=2)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """A tiny trained run for inference/evaluation tests: 2 steps of train_distmat.py on chains from tests/data.

    Returns {"run_dir", "train_data", "test_data", "max_len"}. The test split holds 1LCD:A (51 residues),
    1A8O:A with residues 10–14 stripped of their Cα (mask test), 3KPR:B (99), and 2XHE:B (220 > max_len 128,
    skipped by the evaluator). Trains in a subprocess (~20 s on 2 cores).
    """
    import subprocess
    import sys

    import numpy as np

    from proteinmtp.dataset import Sample, compute_global_stats, save_dataset
    from proteinmtp.structure import read_structure
    from proteinmtp.tiny import write_tiny

    root = tmp_path_factory.mktemp("tiny_run")
    chains = {c.id: c for f in ("1LCD.pdb.gz", "1A8O.pdb.gz", "3KPR.pdb.gz", "2BEG.pdb.gz", "2XHE.pdb.gz")
              for c in read_structure(TEST_DATA / f)}

    def sample(cid: str, split: str) -> Sample:
        c = chains[cid]
        return Sample(id=c.id, sequence=c.sequence, ca=np.array(c.ca), residue_ids=list(c.residue_ids),
                       source=c.source, split=split)

    train = [sample(c, "train") for c in ("1LCD:A", "1A8O:A", "3KPR:B", "2BEG:A")]
    stats = compute_global_stats(train)
    masked = sample("1A8O:A", "test")
    masked.ca[10:15] = np.nan
    test = [sample("1LCD:A", "test"), masked, sample("3KPR:B", "test"),
            sample("2XHE:B", "test")]
    save_dataset(root / "train.json", train, stats, {})
    save_dataset(root / "test.json.gz", test, stats, {})
    write_tiny(root / "backbone", hidden_size=32, num_layers=2, num_heads=2)
    cmd = [sys.executable, str(REPO / "train_distmat.py"), "--train_data", str(root / "train.json"),
           "--model_name", str(root / "backbone"), "--finetune", "full", "--output_dir", str(root / "run"),
           "--max_steps", "2", "--logging_steps", "1", "--save_steps", "2", "--eval_steps", "1000",
           "--pair_dim", "8", "--single_dim", "16", "--dilations", "1", "--max_seq_len", "64",
           "--max_eval_len", "128", "--warmup_steps", "1", "--no_tqdm"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"tiny training failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return {"run_dir": root / "run", "train_data": root / "train.json", "test_data": root / "test.json.gz",
            "max_len": 128}
