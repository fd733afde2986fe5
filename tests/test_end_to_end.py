"""The four command-line scripts chained as a user runs them, on the structures in tests/data:
create_distmat_data.py -> train_distmat.py -> evaluate_distmat_model.py -> infer_distmat.py (~1 min)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import gemmi
import numpy as np
import pytest

from proteinmtp.constants import AA1_TO_AA3
from proteinmtp.dataio import open_dataset
from proteinmtp.fasta import record_stems


def _run(repo_root, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{args[0]} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.mark.slow
def test_create_train_evaluate_infer(repo_root, test_data_dir, tmp_path):
    data, run, ev, preds = tmp_path / "data", tmp_path / "run", tmp_path / "eval", tmp_path / "preds"
    # 1. dataset: seed 2 puts the two 1ACB chains (63, 70 residues) in the test split
    _run(repo_root, "create_distmat_data.py", "--input", str(test_data_dir), "--output_dir", str(data),
         "--val_fraction", "0.2", "--test_fraction", "0.2", "--max_cluster_share", "1.0", "--seed", "2",
         "--workers", "1")
    splits = {n: open_dataset(data / f"{n}.json") for n in ("train", "val", "test")}
    ids = {n: {s.id for s in d.samples} for n, d in splits.items()}
    assert ids["train"] and ids["val"] and ids["test"] and not ids["train"] & ids["test"]
    report = json.loads((data / "report.json").read_text())
    assert any("1YJP_invalid" in json.dumps(f) for f in report["files"])     # the broken file is reported
    # 2. a tiny backbone and a few training steps
    _run(repo_root, "-m", "proteinmtp.tiny", str(tmp_path / "backbone"), "--hidden_size", "32",
         "--num_layers", "2", "--num_heads", "2")
    _run(repo_root, "train_distmat.py", "--train_data", str(data / "train.json"), "--val_data",
         str(data / "val.json"), "--model_name", str(tmp_path / "backbone"), "--finetune", "full",
         "--output_dir", str(run), "--max_steps", "4", "--logging_steps", "1", "--save_steps", "4",
         "--eval_steps", "4", "--max_eval_samples", "2", "--pair_dim", "8", "--single_dim", "16",
         "--dilations", "1", "--max_seq_len", "64", "--max_eval_len", "128", "--warmup_steps", "1", "--no_tqdm")
    assert (run / "head.safetensors").is_file() and (run / "training_complete.json").is_file()
    # 3. evaluation on the test split
    _run(repo_root, "evaluate_distmat_model.py", "--model_path", str(run), "--test_data", str(data / "test.json"),
         "--train_data", str(data / "train.json"), "--output_dir", str(ev), "--experiment_name", "e2e",
         "--experiments_root", str(tmp_path / "experiments"), "--no_figures", "--quiet")
    results = json.loads((ev / "eval_results.json").read_text())
    assert results["n_proteins"] == len(ids["test"]) == 2
    with open(ev / "eval_per_protein.csv") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    # 4. inference on the test sequences; its distances give the evaluation's model MAE (plain NumPy here)
    test = splits["test"].samples
    fasta = tmp_path / "test.fasta"
    fasta.write_text("".join(f">{s.id}\n{s.sequence}\n" for s in test))
    _run(repo_root, "infer_distmat.py", "--model_path", str(run), "--fasta", str(fasta), "--output", str(preds),
         "--save_distmat")
    for s, stem in zip(test, record_stems([s.id for s in test])):
        st = gemmi.read_structure(str(preds / f"{stem}.pdb"))
        assert [r.name for r in st[0][0]] == [AA1_TO_AA3[c] for c in s.sequence]
        pred = np.load(preds / f"{stem}_distmat.npy").astype(np.float64)
        true, m = s.distances(), s.mask()
        iu, ju = np.triu_indices(len(s.sequence), 1)
        ok = m[iu] & m[ju]
        mae = np.abs(pred[iu, ju] - true[iu, ju])[ok].mean()
        assert float(rows[s.id]["model_mae"]) == pytest.approx(mae, rel=1e-4)
