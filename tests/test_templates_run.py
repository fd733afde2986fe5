"""Templates wired into the model, the collator and train_distmat.py: a few steps with templates from a
training split on the tiny backbone, save / reload / predict, resume compares the template spec, bad input
is one line. Data: short chains of the bundled demo dataset (real structures)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch

from proteinmtp import templates as TP
from proteinmtp.dataio import open_dataset
from proteinmtp.dataset import compute_global_stats, save_dataset
from proteinmtp.heads import HeadConfig, build_head
from proteinmtp.heads.templates import template_tensors


@pytest.fixture(scope="module")
def small(demo_dir, tmp_path_factory):
    """train.json (40 short demo training chains) and val.json (4 short demo test chains, split val)."""
    root = tmp_path_factory.mktemp("tmpl_data")
    train = [s for s in open_dataset(demo_dir / "dataset" / "train.json.gz").samples if len(s.sequence) <= 140][:40]
    val = [s for s in open_dataset(demo_dir / "dataset" / "test.json.gz").samples if len(s.sequence) <= 140][:4]
    for s in val:
        s.split = "val"
    stats = compute_global_stats(train)
    cfg = {"val_fraction": 0.1, "test_fraction": 0.1}
    save_dataset(root / "train.json", train, stats, cfg)
    save_dataset(root / "val.json", val, stats, cfg)
    return {"root": root, "train": root / "train.json", "val": root / "val.json", "stats": stats, "cfg": cfg,
            "val_samples": val, "train_samples": train}


def _argv(tiny, small, out, *extra):
    return ["--train_data", str(small["train"]), "--val_data", str(small["val"]), "--model_name", str(tiny),
            "--finetune", "full", "--output_dir", str(out), "--max_steps", "3", "--logging_steps", "1",
            "--save_steps", "3", "--eval_steps", "3", "--pair_dim", "8", "--single_dim", "16", "--dilations", "1",
            "--max_seq_len", "48", "--warmup_steps", "1", "--template_dim", "8", "--template_layers", "1",
            "--no_tqdm", "--ss_weight", "0", *extra]


@pytest.fixture(scope="module")
def trained(tiny, small, tmp_path_factory):
    """3 steps with templates (K=2) from the training split; the trained model kept in memory."""
    import train_distmat
    from proteinmtp import train_command

    out = tmp_path_factory.mktemp("tmpl_run") / "run"
    kept = {}
    original = train_command.train_and_save

    def keep(args, trainer, *rest):
        rc = original(args, trainer, *rest)
        kept["model"] = trainer.accelerator.unwrap_model(trainer.model)
        return rc

    train_command.train_and_save = keep
    try:
        assert train_distmat.main(_argv(tiny, small, out, "--templates", "2")) == 0
    finally:
        train_command.train_and_save = original
    return {"run": out, "model": kept["model"]}


def test_training_records_the_database_and_spec(trained, small):
    cfg = json.loads((trained["run"] / "training_config.json").read_text())
    rec = cfg["templates"]
    assert rec["path"] == str(small["train"].resolve())
    assert rec["fingerprint"] == TP.database_fingerprint(small["train"])
    assert rec["n_chains"] == 40 and rec["k"] == 2
    assert cfg["model"]["head"]["templates"] == 2 and cfg["model"]["head"]["template_dim"] == 8
    # the search was cached per chain in the run: training + validation chains
    cached = list((trained["run"] / "template_cache").rglob("*.json"))
    assert len(cached) == 44


def test_saved_run_predicts_what_the_trained_model_predicts(trained, small):
    """Round trip: the weights and template features of the reloaded run give the in-memory model's outputs."""
    from proteinmtp.model import LoadedRun, load_run

    run = load_run(trained["run"])
    assert run.templates is not None and run.templates.db.fingerprint == TP.database_fingerprint(small["train"])
    seqs = [s.sequence for s in small["val_samples"]]
    mem = LoadedRun(trained["model"], run.config, prior=run.prior, templates=run.templates)
    a, b = run.predict(seqs), mem.predict(seqs)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.dist, y.dist, rtol=0, atol=1e-5)
        np.testing.assert_allclose(x.residue_confidence, y.residue_confidence, rtol=0, atol=1e-6)
        assert x.templates == y.templates
    # templates are really used: some chain has one, and turning them off changes that chain's prediction
    used = [i for i, p in enumerate(a) if p.templates]
    assert used, "no held-out chain found a template"
    off = load_run(trained["run"], templates=0).predict([seqs[used[0]]])[0]
    assert off.templates is None
    assert np.abs(off.dist - a[used[0]].dist).max() > 1e-4
    # the REMARK data: id, identity, coverage of real database chains
    ids = {s.id for s in small["train_samples"]}
    for t in a[used[0]].templates:
        assert t["id"] in ids and 0 < t["identity"] <= 1 and 0 < t["coverage"] <= 1


def test_resume_compares_the_template_spec(trained, tiny, small, capsys):
    import train_distmat

    run = trained["run"]
    for extra in (("--templates", "3"), ("--templates", "2", "--template_dim", "16"),
                  ("--templates", "2", "--template_dropout", "0.5")):
        assert train_distmat.main(_argv(tiny, small, run, "--max_steps", "5", *extra)) == 2
        err = capsys.readouterr().err
        assert "different settings" in err and "templat" in err, err
    # a resumed run keeps its own K without --templates (the default 4 is for new runs only)
    assert train_distmat.parse_args(_argv(tiny, small, run)).templates == 2


def test_resume_refuses_a_changed_database(tiny, small, tmp_path, capsys):
    import train_distmat

    db = tmp_path / "db.json"
    shutil.copy(small["train"], db)
    run = tmp_path / "run"
    assert train_distmat.main(_argv(tiny, small, run, "--templates", "1", "--template_db", str(db),
                                    "--max_steps", "1", "--save_steps", "1")) == 0
    capsys.readouterr()
    ds = open_dataset(db)
    save_dataset(db, ds.samples[:-1], ds.global_stats, ds.config)        # the database changed
    assert train_distmat.main(_argv(tiny, small, run, "--templates", "1", "--template_db", str(db),
                                    "--max_steps", "2", "--save_steps", "1")) == 2
    err = capsys.readouterr().err
    assert "templates.fingerprint" in err and "templates.n_chains" in err, err


@pytest.mark.parametrize("case", ["negative_k", "missing_db", "corrupt_db", "held_out_db", "other_build"])
def test_bad_template_input_is_one_line_and_no_output(case, tiny, small, tmp_path, capsys):
    import train_distmat

    extra = {"negative_k": ["--templates", "-1"],
             "missing_db": ["--template_db", str(tmp_path / "nope.json")],
             "corrupt_db": ["--template_db", str(tmp_path / "bad.json")],
             "held_out_db": ["--template_db", str(small["val"])],
             "other_build": ["--template_db", str(tmp_path / "other.json")]}[case]
    (tmp_path / "bad.json").write_text('{"format": "proteinmtp-dataset/1", "samp')
    other = small["train_samples"][:10]
    save_dataset(tmp_path / "other.json", other, compute_global_stats(other), small["cfg"])
    out = tmp_path / "run"
    assert train_distmat.main(_argv(tiny, small, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    want = {"negative_k": "--templates must be at least 0", "missing_db": "not found",
            "corrupt_db": "bad.json", "held_out_db": "held out", "other_build": "other normalisation statistics"}
    assert want[case] in err[0], err
    assert not out.exists()


def test_own_database_built_whole_is_accepted(small, tmp_path):
    """A user's own structures (built with no held-out split) have their own statistics and are accepted."""
    own = small["train_samples"][:10]
    save_dataset(tmp_path / "own.json", own, compute_global_stats(own), {"val_fraction": 0.0, "test_fraction": 0.0})
    TP.TemplateDatabase.load(tmp_path / "own.json").check_statistics(small["stats"])


def test_old_runs_read_as_no_templates(tmp_path):
    from proteinmtp import rundir
    from proteinmtp.train_command import stored_templates

    for version in (0, 1):          # stored before templates: migrate reads them as 0
        old = rundir.migrate({"config_version": version, "model": {"head": {"pair_dim": 8}}})
        assert HeadConfig.from_dict(old["model"]["head"]).templates == 0
    new = rundir.migrate({"config_version": rundir.CONFIG_VERSION, "model": {"head": {"templates": 3}}})
    assert new["model"]["head"]["templates"] == 3
    assert HeadConfig().templates == 4
    assert HeadConfig(head_type="coords").templates == 0          # the coordinate head has no pair tensor
    run = tmp_path / "old"
    run.mkdir()
    (run / "training_config.json").write_text(json.dumps({"model": {"head": {"pair_dim": 8}}, "args": {}}))
    assert stored_templates(run) == 0
    assert stored_templates(tmp_path / "new") == 4


def test_no_template_path_is_exactly_empty_slots():
    """templates=None gives what K template slots without a template give; a K mismatch is refused."""
    torch.manual_seed(0)
    cfg = HeadConfig(pair_dim=8, single_dim=16, dilations=(1,), templates=2, template_dim=8, template_layers=1,
                     prior_input=False, ss_weight=0)
    head = build_head(12, cfg).eval()
    feats, mask = torch.randn(2, 9, 12), torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    empty = template_tensors(TP.stack_features([TP.empty_features(9, 2), TP.empty_features(6, 2)], 9))
    a, b = head(feats, mask), head(feats, mask, templates=empty)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="template slots"):
        head(feats, mask, templates=template_tensors(TP.stack_features([TP.empty_features(9, 3)] * 2, 9)))
    plain = build_head(12, HeadConfig(pair_dim=8, single_dim=16, dilations=(1,), templates=0, prior_input=False))
    with pytest.raises(ValueError, match="no template embedding"):
        plain(feats, mask, templates=empty)


def test_collator_training_rules_only_in_training(small):
    """Template dropout 1 empties every training batch; the evaluation collator keeps the templates."""
    from proteinmtp.template_inputs import provider_for
    from proteinmtp.training import CropDataset, DistanceCollator

    class Enc:
        def collate(self, seqs):
            L = max(map(len, seqs))
            return {"residue_mask": torch.zeros(len(seqs), L, dtype=torch.bool)}

    db = TP.TemplateDatabase.load(small["train"])
    queries = small["train_samples"][:6]
    prov = provider_for(db, queries, 2, TP.TemplateOptions(template_dropout=1.0))
    items = [CropDataset(queries, 30, random_crop=False)[i] for i in range(6)]
    train_b = DistanceCollator(Enc(), templates=prov)(items)["templates"]
    eval_b = DistanceCollator(Enc(), templates=prov).evaluation()(items)["templates"]
    assert train_b["template_mask"].shape == (6, 2) and not train_b["template_mask"].any()
    assert eval_b["template_mask"].any()
    # each crop's features are the crop's block of the whole chain's
    it = items[0]
    whole = prov.features(it["id"], it["full_sequence"])
    crop = TP.crop_features(whole, it["start"], it["start"] + len(it["sequence"]))
    n = len(it["sequence"])
    np.testing.assert_array_equal(eval_b["dist_bin"][0, :, :n, :n].numpy(), crop["dist_bin"])


# -- inference and evaluation ---------------------------------------------------------------------------
def _infer(run, out, seq, *extra):
    import infer_distmat

    return infer_distmat.main(["--model_path", str(run), "--sequence", seq, "--output", str(out), "--device", "cpu",
                               *extra])


def _remarks(path) -> list[str]:
    return [x[11:].strip() for x in path.read_text().splitlines() if x.startswith("REMARK 250")]


@pytest.fixture(scope="module")
def db_run(tiny, small, tmp_path_factory):
    """One step with --template_db a copy of the training split (so the test can move or change it)."""
    import train_distmat

    root = tmp_path_factory.mktemp("db_run")
    db = root / "db.json"
    shutil.copy(small["train"], db)
    assert train_distmat.main(_argv(tiny, small, root / "run", "--templates", "2", "--template_db", str(db),
                                    "--max_steps", "1", "--save_steps", "1", "--eval_steps", "100")) == 0
    return {"run": root / "run", "db": db}


def test_infer_moved_or_changed_database_is_one_line_saying_what_to_pass(db_run, small, tmp_path, capsys):
    seq = small["val_samples"][0].sequence
    db, moved = db_run["db"], tmp_path / "moved.json"
    shutil.move(db, moved)
    try:
        assert _infer(db_run["run"], tmp_path / "a.pdb", seq) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not found (moved?)" in err[0] and "--template_db" in err[0], err
        assert not (tmp_path / "a.pdb").exists()
        # --template_db given at inference: the moved database is used, and the REMARKs name its chains
        assert _infer(db_run["run"], tmp_path / "b.pdb", seq, "--template_db", str(moved)) == 0
        rem = _remarks(tmp_path / "b.pdb")
        named = [r for r in rem if r.startswith("TEMPLATE ")]
        ids = {s.id for s in small["train_samples"]}
        assert named and all(r.split()[2] in ids and "IDENTITY" in r and "COVERAGE" in r for r in named), rem
        # --templates 0: predicted without templates, no TEMPLATE remark
        assert _infer(db_run["run"], tmp_path / "c.pdb", seq, "--template_db", str(moved), "--templates", "0") == 0
        assert not any(r.startswith("TEMPLATE") for r in _remarks(tmp_path / "c.pdb"))
        assert _infer(db_run["run"], tmp_path / "d.pdb", seq, "--template_db", str(small["val"])) == 2
        assert "held out" in capsys.readouterr().err
    finally:
        shutil.move(moved, db)
    ds = open_dataset(db)
    save_dataset(tmp_path / "changed.json", ds.samples[1:], ds.global_stats, ds.config)
    shutil.copy(db, tmp_path / "orig.json")
    shutil.copy(tmp_path / "changed.json", db)
    try:
        capsys.readouterr()
        assert _infer(db_run["run"], tmp_path / "e.pdb", seq) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "changed since it was recorded" in err[0] and "--template_db" in err[0], err
        assert not (tmp_path / "e.pdb").exists()
    finally:
        shutil.copy(tmp_path / "orig.json", db)


def _no_hit_sequence(n: int = 90) -> str:
    """A GS linker: low complexity, no MMseqs2 hit (a random sequence does hit at E <= 10)."""
    return ("GS" * n)[:n]


def test_no_hit_takes_the_no_template_path(trained, tmp_path):
    from proteinmtp.model import load_run

    run = load_run(trained["run"])
    seq = _no_hit_sequence()
    with_t, = run.predict([seq])
    assert with_t.templates == []                       # searched, nothing found
    off, = run.predict([seq], use_templates=False)
    np.testing.assert_allclose(with_t.dist, off.dist, rtol=1e-5, atol=1e-5)     # float32 summation order
    assert _infer(trained["run"], tmp_path / "n.pdb", seq) == 0
    assert any(r.startswith("TEMPLATES NONE") for r in _remarks(tmp_path / "n.pdb"))


def test_evaluate_reports_model_no_templates_and_counts_chains_without_hit(trained, small, tmp_path):
    import copy
    import csv

    import evaluate_distmat_model
    from proteinmtp.eval_report import NO_TEMPLATES

    nohit = copy.deepcopy(small["val_samples"][1])      # the module's samples stay as they are
    nohit.id, nohit.sequence = "nohit:A", _no_hit_sequence(len(nohit.sequence))
    test = [copy.deepcopy(small["val_samples"][0]), nohit]
    for s in test:
        s.split = "test"
    save_dataset(tmp_path / "test.json", test, small["stats"], small["cfg"])
    out = tmp_path / "ev"
    assert evaluate_distmat_model.main(["--model_path", str(trained["run"]), "--test_data", str(tmp_path / "test.json"),
                                        "--output_dir", str(out), "--no_figures", "--device", "cpu",
                                        "--no_neighbour"]) == 0
    res = json.loads((out / "eval_results.json").read_text())
    assert set(res[NO_TEMPLATES]) == set(res["model"])
    assert res["templates"]["n_without_hit"] == 1 and res["templates"]["n_with_hit"] == 1
    assert res["templates"]["fingerprint"] == TP.database_fingerprint(small["train"])
    rows = {r["id"]: r for r in csv.DictReader((out / "eval_per_protein.csv").open())}
    assert rows["nohit:A"]["n_templates"] == "0" and rows["nohit:A"]["template_identity"] == ""
    hit = rows[test[0].id]
    assert int(hit["n_templates"]) >= 1 and 0 < float(hit["template_identity"]) <= 1
    assert "model_no_templates_mae" in hit and "model_mae" in hit
    # the no-hit chain is predicted the same with and without templates; the chain with one is not
    assert float(rows["nohit:A"]["model_mae"]) == pytest.approx(float(rows["nohit:A"]["model_no_templates_mae"]),
                                                               abs=1e-4)
    assert float(hit["model_mae"]) != pytest.approx(float(hit["model_no_templates_mae"]), abs=1e-6)


def test_val_chains_never_enter_the_database(trained, small):
    """Training searched the training and validation chains against the training split only: every cached
    hit is a training chain, and no validation chain is a template of anything."""
    train_ids = {s.id for s in small["train_samples"]}
    val_ids = {s.id for s in small["val_samples"]}
    recs = [json.loads(p.read_text()) for p in (trained["run"] / "template_cache").rglob("*.json")]
    targets = {h["target_id"] for r in recs for h in r["hits"]}
    assert targets and targets <= train_ids and not targets & val_ids
    assert {r["query_id"] for r in recs} == train_ids | val_ids


def test_copy_path_open_gate_copies_the_template_and_no_cover_changes_nothing():
    """template_copy: with the gate forced open and the head's own outputs zeroed, a template covering every
    pair is copied exactly (regression: its normalised log-distance; distogram: its bin wins); pairs no
    template covers get the head without the copy path."""
    from proteinmtp.heads.templates import TemplateCopy

    torch.manual_seed(0)
    cfg = HeadConfig(pair_dim=8, single_dim=16, dilations=(1,), templates=1, template_dim=8, template_layers=1,
                     prior_input=False, ss_weight=0)
    head = build_head(12, cfg).eval()
    assert isinstance(head.template_copy, TemplateCopy)
    L = 7
    rng = np.random.default_rng(0)
    ca = np.cumsum(rng.normal(0, 2.2, (L, 3)), axis=0)
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    f = TP.empty_features(L, 1)
    f["pair_mask"][0] = ~np.eye(L, dtype=bool)
    f["dist_A"][0], f["dist_bin"][0] = d, np.searchsorted(TP.DEFAULT_BIN_EDGES, d)
    f["aligned"][0] = True
    f["identity"][0], f["coverage"][0], f["significance"][0], f["template_mask"][0] = 0.3, 1.0, 0.5, True
    t = template_tensors(TP.stack_features([f], L))
    t["dist_norm"] = torch.log(t["dist_A"].clamp(min=1.0))
    with torch.no_grad():
        for lin in (head.regress, head.distogram):
            lin.weight.zero_()
            lin.bias.zero_()
        head.template_copy.gate.bias.fill_(50.0)                  # gate open
        head.template_copy.strength.fill_(20.0)
        feats, mask = torch.randn(1, L, 12), torch.ones(1, L, dtype=torch.bool)
        out = head(feats, mask, templates=t)
    off = ~np.eye(L, dtype=bool)
    np.testing.assert_allclose(out["dist_norm"][0].numpy()[off], np.log(np.maximum(d, 1.0))[off], atol=1e-5)
    assert (out["distogram_logits"][0].argmax(-1).numpy()[off] == f["dist_bin"][0][off]).all()
    # nothing covered: exactly the head without the copy path
    f["pair_mask"][0] = False
    f["template_mask"][0] = False
    empty = template_tensors(TP.stack_features([f], L))
    with torch.no_grad():
        a = head(feats, mask, templates=empty)
        copy, head.template_copy = head.template_copy, None
        b = head(feats, mask, templates=empty)
        head.template_copy = copy
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # a run stored before the copy path (config version < 3) builds without it
    old = build_head(12, HeadConfig.from_dict({**asdict(cfg), "template_copy": False}))
    assert old.template_copy is None
