"""evaluate_distmat_model.py model mode on a tiny trained run: every key, oracle ≈ native, values cross-checked."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import evaluate_distmat_model
import infer_distmat
from proteinmtp.dataio import open_dataset
from proteinmtp.eval_cli import EvaluationInputError, run_neighbours
from proteinmtp.eval_report import format_summary, summarize
from proteinmtp.eval_scoring import MIRROR_KEY
from proteinmtp.evaluation import Evaluation, evaluate_run
from proteinmtp.metric_registry import REQUIRED_KEYS
from proteinmtp.prior import SeparationPrior
from tests.test_plots import png_size


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    out = root / "out"
    rc = evaluate_distmat_model.main([
        "--model_path", str(tiny_run["run_dir"]), "--test_data", str(tiny_run["test_data"]),
        "--output_dir", str(out), "--save_pdbs", "--experiment_name", "tiny eval",
        "--experiments_root", str(root / "experiments"), "--quiet"])
    assert rc == 0
    results = json.loads((out / "eval_results.json").read_text())
    with open(out / "eval_per_protein.csv") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    return {"out": out, "results": results, "rows": rows, "root": root}


def test_every_key_and_oracle(evaluated):
    res = evaluated["results"]
    assert res["n_proteins"] == 3
    assert list(res["skipped"]) == ["2XHE:B"] and "128" in res["skipped"]["2XHE:B"]
    for method in ("model", "prior", "neighbour", "oracle"):
        block = res[method]
        for k in REQUIRED_KEYS:
            assert isinstance(block[k], float), (method, k, block.get(k))
        assert block["n_proteins"] == 3
        assert set(block["by_range"]) == {"local", "short", "medium", "long"}
        assert set(block["by_range"]["long"]) >= {"mae", "rmse", "pearson", "precision_L", "precision_L5"}
        assert block["by_range"]["long"]["mae"] == pytest.approx(block["mae_long"])
        assert set(block["by_length"]) == {"<100"}  # 51, 70 and 99 residues
        assert block["by_length"]["<100"]["n_proteins"] == 3
    oracle = res["oracle"]
    assert oracle["tm_score"] >= 0.99 and oracle["rmsd"] < 0.5 and oracle["lddt"] > 0.99
    assert oracle["mae"] == pytest.approx(0.0, abs=1e-9)
    assert res["config"]["residue_layout"] == "direct" and res["config"]["model_name"].endswith("backbone")
    assert "diagnostic" in res["diagnostics"]["note"] and "WITH the native" in res["diagnostics"]["note"]


def test_mask_excludes_missing_ca(evaluated, tiny_run):
    row = evaluated["rows"]["1A8O:A"]
    assert int(row["length"]) == 70 and int(row["n_present"]) == 65
    n = 65 * 64 // 2                            # pairs among the 65 residues with a Cα
    for method in ("model", "prior", "neighbour", "oracle"):
        assert int(float(row[f"{method}_n_pairs"])) == n
        assert int(float(row[f"{method}_n_aligned"])) == 65


def test_neighbour_block(evaluated, tiny_run):
    """The tiny run's test chains are copies of its training chains: each one's neighbour is itself."""
    res = evaluated["results"]
    nb, prior = res["neighbour"], res["prior"]
    assert set(prior) <= set(nb) and set(nb) - set(prior) == {"identity", "aligned_fraction", "n_without_hit"}
    assert set(nb["by_range"]["long"]) == set(prior["by_range"]["long"])
    assert nb["identity"] == pytest.approx(1.0) and nb["aligned_fraction"] == 1.0 and nb["n_without_hit"] == 0
    assert nb["mae"] == pytest.approx(0.0, abs=1e-3)  # the training copy's exact distances (3-decimal Cα)
    assert nb["lddt"] > 0.99 and nb["rmsd"] < 0.5
    search = res["neighbour_search"]
    assert search["status"] == "ok" and search["train_data"] == str(tiny_run["train_data"])
    assert search["n_train_chains"] == 4 and search["n_with_hit"] == 4  # all 4 test chains, 2XHE:B too
    for sid, row in evaluated["rows"].items():
        assert row["neighbour_id"] == sid and float(row["neighbour_identity"]) == pytest.approx(1.0)
        assert float(row["neighbour_aligned_fraction"]) == 1.0


def test_neighbour_programmatic_no_hit_is_the_prior(tiny_run):
    """evaluate_run with precomputed neighbours: a chain without a hit scores exactly like the prior."""
    from proteinmtp.model import load_run
    from proteinmtp.neighbour import Neighbour, NeighbourSet, find_neighbours

    train = open_dataset(tiny_run["train_data"]).samples
    test = open_dataset(tiny_run["test_data"]).samples[:2]       # 1LCD:A, 1A8O:A (masked)
    nbs = find_neighbours(train, test)
    nbs.by_id["1LCD:A"] = Neighbour("1LCD:A", test[0].sequence)  # as if the search had found nothing
    run = load_run(tiny_run["run_dir"])
    ev = evaluate_run(run, test, neighbours=nbs, progress=False)
    rows = {r["id"]: r for r in ev.rows}
    none = rows["1LCD:A"]
    assert none["neighbour_id"] == "" and "identity" not in none["neighbour"]
    assert {k: v for k, v in none["neighbour"].items() if k != "aligned_fraction"} == none["prior"]
    assert rows["1A8O:A"]["neighbour"]["mae"] < 1e-3 < rows["1A8O:A"]["prior"]["mae"]
    assert set(ev.figures.errors) == {"model", "prior", "neighbour"}
    res = summarize(ev)
    assert res["neighbour"]["n_without_hit"] == 1 and res["neighbour"]["identity"] == pytest.approx(1.0)
    assert "neighbour" in format_summary(res) and "1 chain(s) without a hit" in format_summary(res)
    stale = NeighbourSet({"1LCD:A": nbs.by_id["1LCD:A"]})
    with pytest.raises(ValueError, match="no precomputed neighbour for chain '1A8O:A'"):
        evaluate_run(run, test, neighbours=stale, progress=False)


def test_neighbour_without_training_data(tmp_path, capsys):
    """A recorded train_data that is gone fails loudly, saying what to pass; so does a given one; only
    --no_neighbour skips the baseline; a run stored with a relative path resolves from another directory."""
    import argparse

    run = tmp_path / "run"
    run.mkdir()
    gone = str(tmp_path / "moved.json.gz")
    args = argparse.Namespace(no_neighbour=False, train_data=None)
    with pytest.raises(EvaluationInputError, match="moved.json.gz.*pass --train_data PATH or --no_neighbour"):
        run_neighbours(args, run, {"train_data": gone}, [])
    with pytest.raises(EvaluationInputError, match="--train_data .*moved.json.gz does not exist"):
        run_neighbours(argparse.Namespace(no_neighbour=False, train_data=gone), run, {}, [])
    nbs, info = run_neighbours(argparse.Namespace(no_neighbour=True, train_data=gone), run, {}, [])
    assert nbs is None and info["reason"] == "--no_neighbour" and capsys.readouterr().err == ""
    ev = Evaluation(neighbour_info=info)
    res = summarize(ev)
    assert res["neighbour"] is None and res["neighbour_search"]["reason"] == "--no_neighbour"


def test_values_match_independent_computation(evaluated, tiny_run, tmp_path):
    """Model MAE from a separate infer_distmat.py run, prior MAE from prior.json, both by plain NumPy."""
    data = {s.id: s for s in open_dataset(tiny_run["test_data"]).samples}
    s = data["1A8O:A"]
    true = s.distances()
    m = s.mask()
    iu, ju = np.triu_indices(len(s.sequence), 1)
    ok = m[iu] & m[ju]
    out = tmp_path / "p.pdb"
    assert infer_distmat.main(["--model_path", str(tiny_run["run_dir"]), "--sequence", s.sequence,
                               "--output", str(out), "--save_distmat"]) == 0
    pred = np.load(tmp_path / "p_distmat.npy").astype(np.float64)
    mae_model = np.abs(pred[iu, ju] - true[iu, ju])[ok].mean()
    prior = SeparationPrior.load(tiny_run["run_dir"] / "prior.json").predict(len(s.sequence))
    mae_prior = np.abs(prior[iu, ju] - true[iu, ju])[ok].mean()
    row = evaluated["rows"]["1A8O:A"]
    assert float(row["model_mae"]) == pytest.approx(mae_model, rel=1e-4)
    assert float(row["prior_mae"]) == pytest.approx(mae_prior, rel=1e-4)
    means = [float(r["model_mae"]) for r in evaluated["rows"].values()]
    assert evaluated["results"]["model"]["mae"] == pytest.approx(np.mean(means), rel=1e-4)


def test_hand_and_mirror_diagnostic_from_the_written_pdbs(evaluated, tiny_run):
    """The model's TM-score and the best-of-mirrors diagnostic recomputed from the PDB files the evaluation
    wrote (coordinates read back by gemmi, mirrored here by negating z), not from the evaluation's arrays."""
    import gemmi

    from proteinmtp.metrics import tm_score

    data = {s.id: s for s in open_dataset(tiny_run["test_data"]).samples}
    best = []
    for sid, row in evaluated["rows"].items():
        s = data[sid]
        st = gemmi.read_structure(str(evaluated["out"] / "pdbs" / f"{sid.replace(':', '_')}_model.pdb"))
        xyz = np.array([r[0].pos.tolist() for r in st[0][0]])[s.mask()]
        native = np.asarray(s.ca, float)[s.mask()]
        as_written = tm_score(xyz, native)
        mirrored = tm_score(xyz * np.array([1.0, 1.0, -1.0]), native)
        assert float(row["model_tm_score"]) == pytest.approx(as_written, abs=2e-3)
        assert float(row[f"model_{MIRROR_KEY}"]) == pytest.approx(max(as_written, mirrored), abs=2e-3)
        best.append(max(as_written, mirrored))
    assert evaluated["results"]["model"][MIRROR_KEY] == pytest.approx(np.mean(best), abs=2e-3)


def test_clashes_for_every_method(evaluated, tiny_run):
    """``clashes`` (non-bonded Cα pairs under 3.5 Å per 100 residues) in eval_results.json for model, prior,
    neighbour and oracle and per protein in the CSV; the model's value recomputed from its written PDB
    (an all-pairs count here, not metrics.clash_check); every method's structures keep the bounds."""
    import gemmi

    from proteinmtp.geometry import distance_matrix

    res, rows = evaluated["results"], evaluated["rows"]
    data = {s.id: s for s in open_dataset(tiny_run["test_data"]).samples}
    for method in ("model", "prior", "neighbour", "oracle"):
        assert res[method]["clashes"] == 0.0, method
        assert all(float(r[f"{method}_clashes"]) == 0.0 for r in rows.values()), method
    for sid, row in rows.items():
        st = gemmi.read_structure(str(evaluated["out"] / "pdbs" / f"{sid.replace(':', '_')}_model.pdb"))
        m = data[sid].mask()
        xyz = np.array([r[0].pos.tolist() for r in st[0][0]])
        idx = np.flatnonzero(m)
        d = distance_matrix(xyz[m])
        i, j = np.triu_indices(len(idx), 1)
        n = int(((idx[j] - idx[i] >= 2) & (d[i, j] < 3.5)).sum())
        assert float(row["model_clashes"]) == pytest.approx(100 * n / m.sum(), abs=1e-9)
        assert "REMARK 500" not in (evaluated["out"] / "pdbs" / f"{sid.replace(':', '_')}_model.pdb").read_text()


def test_score_prediction_counts_clashes_on_the_native_residues():
    """A hand-placed clash among the scored residues counts per 100 of them; a residue without a native Cα is
    left out, and separations are the chain's own (not the masked array's)."""
    from proteinmtp.dataset import Sample
    from proteinmtp.eval_scoring import score_prediction
    from proteinmtp.geometry import distance_matrix

    L = 20
    ca = np.zeros((L, 3))
    ca[:, 0] = np.arange(L) * 3.8 * np.cos(np.radians(30))
    ca[1::2, 1] = 3.8 * np.sin(np.radians(30))
    s = Sample(id="t", sequence="A" * L, ca=ca.copy(), residue_ids=[str(i + 1) for i in range(L)], source="",
               split="test")
    pred = ca.copy()
    pred[15] = pred[10] + [0, 0, 3.0]                  # 10–15 at 3.0 Å
    d = distance_matrix(pred)
    assert score_prediction(d, -d, pred, s, higher_is_contact=False)["clashes"] == pytest.approx(100 / L)
    s.ca[15] = np.nan                                  # residue 15 unscored: no clash left among 19
    assert score_prediction(d, -d, pred, s, higher_is_contact=False)["clashes"] == 0.0
    s.ca[:] = ca
    s.ca[5] = np.nan                                   # residues 4 and 6 are i, i+2 in the chain, not bonded
    pred2 = ca.copy()
    pred2[6] = pred2[4] + [0, 0, 3.2]
    d2 = distance_matrix(pred2)
    assert score_prediction(d2, -d2, pred2, s, higher_is_contact=False)["clashes"] == pytest.approx(100 / 19)


def test_figures_pdbs_and_record(evaluated):
    out, root = evaluated["out"], evaluated["root"]
    vis = out / "visualizations"
    sizes = {"distance_heatmaps.png": (900, 1260), "error_histogram.png": (700, 450),
             "error_by_separation.png": (800, 450), "pred_vs_true_scatter.png": (600, 600),
             "metrics_vs_length.png": (1260, 400), "training_curves.png": (1400, 400)}
    for name, size in sizes.items():
        assert png_size(vis / name) == size, name
    views = sorted(vis.glob("view_*.html"))
    assert len(views) == 3 and "<canvas" in views[0].read_text()
    assert sorted(p.name for p in (out / "pdbs").glob("*.pdb")) == sorted(
        f"{s}_{k}.pdb" for s in ("1A8O_A", "1LCD_A", "3KPR_B") for k in ("model", "native"))
    [exp] = list((root / "experiments").iterdir())
    assert exp.name.endswith("_tiny_eval")
    for f in ("config.json", "training_log.txt", "eval_results.json", "eval_per_protein.csv",
              "visualizations/training_curves.png", "visualizations/distance_heatmaps.png"):
        assert (exp / f).is_file(), f
    assert json.loads((exp / "eval_results.json").read_text()) == evaluated["results"]


@pytest.mark.parametrize("case", ["truncated_json", "missing_run", "missing_data"])
def test_bad_input(case, tiny_run, tmp_path, repo_root):
    data, run = tiny_run["test_data"], tiny_run["run_dir"]
    if case == "truncated_json":
        text = tiny_run["train_data"].read_text()
        data = tmp_path / "cut.json"
        data.write_text(text[: len(text) // 2])
        expect = "cut.json"
    elif case == "missing_run":
        run = tmp_path / "nope"
        expect = "nope"
    else:
        data = tmp_path / "nothing.json"
        expect = "nothing.json"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "evaluate_distmat_model.py", "--model_path", str(run), "--test_data",
                        str(data), "--output_dir", str(out), "--experiments_root", str(tmp_path / "exp")],
                       cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and expect in lines[0], r.stderr
    assert not out.exists() and not (tmp_path / "exp").exists()


def test_confidence_block_and_summary(evaluated):
    res = evaluated["results"]
    conf = res["model"]["confidence"]
    from proteinmtp.eval_report import CONFIDENCE_KEYS

    for k in CONFIDENCE_KEYS:
        assert k in conf
    assert -1 <= conf["residue_lddt_pearson"] <= 1 and 0 <= conf["pair_ece"] <= 1
    assert conf["n_residues"] == sum(int(r["n_present"]) for r in evaluated["rows"].values())
    ptms = [float(r["model_ptm"]) for r in evaluated["rows"].values()]
    assert all(0 < p <= 1 for p in ptms) and res["model"]["ptm"] == pytest.approx(np.mean(ptms), rel=1e-5)
    assert "confidence: per-residue vs true lDDT-Ca Pearson" in format_summary(res)
    assert "Cb-Cb < 8 A" in format_summary(res) and "precision_*_cb" in res["contact_definitions"]
    assert (evaluated["out"] / "visualizations" / "confidence.png").is_file()
    assert (evaluated["out"] / "visualizations" / "contact_precision.png").is_file()
    # the model PDB's REMARK carries the same pTM as the results
    pdb = (evaluated["out"] / "pdbs" / "1LCD_A_model.pdb").read_text()
    line = next(ln for ln in pdb.splitlines() if "PREDICTED TM-SCORE" in ln)
    assert f"{float(evaluated['rows']['1LCD:A']['model_ptm']):.3f}" in line


@pytest.mark.slow
def test_workers_give_the_same_results(tiny_run):
    """--workers 2 (a process pool, results merged in order) gives exactly the results of one process."""
    from proteinmtp.model import load_run

    run = load_run(tiny_run["run_dir"])
    test = list(open_dataset(tiny_run["test_data"]).samples)
    one = summarize(evaluate_run(run, test, progress=False, workers=1))
    two_ev = evaluate_run(run, test, progress=False, workers=2)
    assert [r["id"] for r in two_ev.rows] == [s.id for s in test if s.id != "2XHE:B"]
    assert summarize(two_ev) == one


def test_figure_data_is_bounded_and_order_free(tiny_run):
    """FigureData keeps the pair samples of at most max_sample_proteins proteins: the same ones whatever
    the number of proteins merged after them, and sums over every protein."""
    from proteinmtp.eval_figures import FigureData

    s = next(x for x in open_dataset(tiny_run["test_data"]).samples if x.id == "1LCD:A")
    true = s.distances()
    fd = FigureData(max_sample_proteins=4)
    contribs = [fd.contribution(i, s, {"model": true + i}, np.asarray(s.ca), np.zeros(len(true))) for i in range(12)]
    for c in contribs:
        fd.merge(c)
    assert len(fd.samples) == 4 and len(fd.heatmaps) == 3
    keys = sorted((c["key"], c["index"]) for c in contribs)[:4]
    assert sorted((k, i) for k, i, *_ in fd.samples) == keys
    n = len(true) * (len(true) - 1) // 2
    assert fd.sep_count.sum() == 12 * n
    assert fd.mae_by_separation()["model"][1:].mean() == pytest.approx(np.mean(range(12)))


class BadPrior:
    """A separation prior whose prediction fails (picklable: it travels to a scoring worker)."""

    def predict(self, length):
        raise ValueError(f"prior cannot predict {length} residues")


class _InterruptedRun:
    """The tiny run whose second forward pass is interrupted (Ctrl-C while proteins are being scored)."""

    def __init__(self, run):
        self.run, self.calls = run, 0
        self.config, self.max_len, self.prior = run.config, run.max_len, run.prior

    def predict(self, seqs, batch_size=1):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.run.predict(seqs, batch_size=batch_size)


def _no_children(timeout: float = 30.0) -> bool:
    import multiprocessing
    import time

    deadline = time.time() + timeout
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.05)
    return not multiprocessing.active_children()


@pytest.fixture(scope="module")
def loaded(tiny_run):
    from proteinmtp.model import load_run

    return load_run(tiny_run["run_dir"]), list(open_dataset(tiny_run["test_data"]).samples)


def test_evaluation_pool_failure_is_raised_and_the_workers_end(loaded):
    """A protein whose scoring fails in a worker process raises its own error in the caller; no worker is left."""
    run, test = loaded
    with pytest.raises(ValueError, match="prior cannot predict"):
        evaluate_run(run, test, prior=BadPrior(), progress=False, workers=2)
    assert _no_children()


def test_evaluation_pool_cancel_path(loaded):
    """Ctrl-C during the forward passes: KeyboardInterrupt reaches the caller at once, the proteins no worker
    started are dropped, and the worker processes end."""
    run, test = loaded
    wrapped = _InterruptedRun(run)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(wrapped, test, progress=False, workers=2, batch_size=1)
    assert wrapped.calls == 2 and _no_children()


def test_tf32_warning_is_not_triggered_by_inference(loaded):
    """LoadedRun.predict turns oneDNN off on CPU without torch.backends.mkldnn.flags(), whose allow_tf32
    setter warns 'TF32 acceleration on top of oneDNN' on builds without Intel GPU support."""
    import warnings

    import torch

    run, test = loaded
    before = torch.backends.mkldnn.enabled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.predict([test[0].sequence])
    assert not [w for w in caught if "TF32" in str(w.message)], [str(w.message) for w in caught]
    assert torch.backends.mkldnn.enabled == before


def test_a_set_with_no_scorable_protein_is_an_error(tiny_run, tmp_path, capsys):
    """Every protein skipped (here: longer than the run's max_len): exit 2 with the reason, nothing written."""
    from proteinmtp.dataset import save_dataset

    ds = open_dataset(tiny_run["test_data"])
    data = tmp_path / "long_only.json"
    save_dataset(data, [s for s in ds.samples if s.id == "2XHE:B"], ds.global_stats, {})
    out = tmp_path / "out"
    rc = evaluate_distmat_model.main(["--model_path", str(tiny_run["run_dir"]), "--test_data", str(data),
                                      "--output_dir", str(out), "--experiments_root", str(tmp_path / "exp"),
                                      "--quiet", "--no_neighbour"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "no protein can be scored" in err[0] and "2XHE:B: length 220 > model maximum 128" in err[0]
    assert not out.exists() and not (tmp_path / "exp").exists()


def test_evaluate_run_with_nothing_to_score_raises(loaded):
    from proteinmtp.evaluation import NothingToScore

    run, test = loaded
    with pytest.raises(NothingToScore, match="2XHE:B"):
        evaluate_run(run, [s for s in test if s.id == "2XHE:B"], progress=False)


def test_mds_method_distogram_through_the_cli(tiny_run, tmp_path):
    """--mds_method distogram reaches the reconstruction: the config says so, and the model's PDB was
    folded from the distogram (its REMARK names the method), with the same rows as the default's proteins."""
    out = tmp_path / "out"
    rc = evaluate_distmat_model.main(["--model_path", str(tiny_run["run_dir"]), "--test_data",
                                      str(tiny_run["test_data"]), "--output_dir", str(out), "--mds_method",
                                      "distogram", "--save_pdbs", "--no_figures", "--no_neighbour", "--quiet",
                                      "--experiments_root", str(tmp_path / "exp"), "--num_samples", "1"])
    assert rc == 0
    res = json.loads((out / "eval_results.json").read_text())
    assert res["config"]["mds_method"] == "distogram" and res["n_proteins"] == 1
    assert "RECONSTRUCTION DISTOGRAM MDS" in (out / "pdbs" / "1LCD_A_model.pdb").read_text().upper()
    assert 0.0 < res["model"]["tm_score"] <= 1.0


def test_a_sharded_binary_test_set_evaluates_as_its_json(tiny_run, tmp_path):
    """--test_data DIR.shards (create_distmat_data.py --format binary) is opened as training opens it and
    gives the results of the same split as JSON."""
    from proteinmtp.dataio import convert

    shards = convert(tiny_run["test_data"], tmp_path / "test.shards")
    results = {}
    for name, data in (("json", tiny_run["test_data"]), ("shards", shards)):
        out = tmp_path / name
        rc = evaluate_distmat_model.main(["--model_path", str(tiny_run["run_dir"]), "--test_data", str(data),
                                          "--output_dir", str(out), "--no_figures", "--no_neighbour", "--quiet",
                                          "--experiments_root", str(tmp_path / "exp")])
        assert rc == 0
        results[name] = json.loads((out / "eval_results.json").read_text())
        results[name]["config"].pop("test_data")
    assert results["shards"] == results["json"] and results["json"]["n_proteins"] == 3
