"""proteinmtp.metric_registry is the one list: a metric added there (and nowhere else) reaches the
per-protein row, eval_results.json, the CSV, the console table and pair-mode scoring."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from proteinmtp import metric_registry as R
from proteinmtp.dataset import Sample
from proteinmtp.eval_report import format_summary, per_protein_csv, summarize
from proteinmtp.eval_scoring import score_prediction
from proteinmtp.evaluation import Evaluation
from proteinmtp.metrics import contact_metrics, distance_metrics, structure_metrics
from proteinmtp.scoring import score_chains
from proteinmtp.structure import Chain
from tests.conftest import helix_ca


def spread(pred_xyz, true_xyz, mask=None):
    """A made-up structure metric: the predicted radius of gyration over the native's (scored rows)."""
    rg = lambda x: float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean()))  # noqa: E731
    m = np.isfinite(true_xyz).all(1) & np.isfinite(pred_xyz).all(1) & (True if mask is None else mask)
    return {"rg_ratio": rg(pred_xyz[m]) / rg(true_xyz[m])}


@pytest.fixture
def with_new_metric(monkeypatch):
    new = R.Metric("rg_ratio", "structure", spread, headline=("rg_ratio",), required=("rg_ratio",), pairs=True,
                   label="Rg ratio", digits=3)
    monkeypatch.setattr(R, "METRICS", (*R.METRICS, new))
    return new


def _sample(L=30):
    ca = helix_ca(L)
    return Sample(id="h", sequence="A" * L, ca=ca, residue_ids=[str(i) for i in range(L)], source="x", split="test")


def test_one_registry_entry_reaches_every_report(with_new_metric):
    s = _sample()
    true = s.distances()
    xyz = 1.1 * np.asarray(s.ca)
    row = score_prediction(true, true, xyz, s, higher_is_contact=False)
    assert row["rg_ratio"] == pytest.approx(1.1)
    ev = Evaluation(rows=[{"id": "h", "length": 30, "n_present": 30, "length_bin": "<100",
                           **{m: dict(row) for m in ("model", "prior", "oracle")}}])
    res = summarize(ev)
    assert res["model"]["rg_ratio"] == pytest.approx(1.1)
    assert "rg_ratio" in format_summary(res).splitlines()[0]
    (csv_row,) = csv.DictReader(io.StringIO(per_protein_csv(ev)))
    assert float(csv_row["model_rg_ratio"]) == pytest.approx(1.1)
    empty = summarize(Evaluation())
    assert "rg_ratio" in empty["model"]                           # a required key, null without proteins
    ids = tuple(map(str, range(30)))
    ch = Chain(id="p:A", chain_id="A", sequence="A" * 30, ca=xyz, cb=xyz, residue_ids=ids, source="p", breaks=())
    nat = Chain(id="n:A", chain_id="A", sequence="A" * 30, ca=np.asarray(s.ca), cb=np.asarray(s.ca), residue_ids=ids,
                source="n", breaks=())
    assert score_chains([ch], [nat])["rg_ratio"] == pytest.approx(1.1)


def test_registry_functions_are_the_metrics_module_functions():
    assert R.functions("distance") == (distance_metrics,)
    assert R.functions("contact") == (contact_metrics,)
    assert R.functions("structure") == (structure_metrics,)
    assert [m.name for m in R.pair_metrics()] == ["rmsd", "tm_score", "gdt_ts", "gdt_ha", "lddt"]


def test_every_listed_key_is_computed():
    """Each headline, required and training key is a key the registered functions return."""
    s = _sample()
    true = s.distances()
    row = score_prediction(true, true, np.asarray(s.ca), s, higher_is_contact=False)
    for what in ("headline", "required", "training"):
        for k in R.keys(what):
            assert k.endswith("_cb") or k in row, (what, k)


def test_a_metric_naming_keys_it_does_not_have_is_refused():
    with pytest.raises(ValueError, match="headline names keys it does not have"):
        R.Metric("mae", "distance", distance_metrics, ranges=("long",), headline=("mae_short",))


def test_summary_says_where_the_model_beats_each_baseline():
    """Lower is better for the distance errors and RMSD, higher for the rest; a tie is not better."""
    res = {"n_proteins": 2, "model": {"mae": 5.0, "rmsd": 9.0, "tm_score": 0.30, "lddt": 0.40},
           "prior": {"mae": 6.0, "rmsd": 8.0, "tm_score": 0.20, "lddt": 0.40},
           "neighbour": {"mae": 4.0, "rmsd": 10.0, "tm_score": 0.35, "lddt": 0.30}}
    lines = format_summary(res).splitlines()
    prior = next(x for x in lines if x.startswith("model vs prior:"))
    neigh = next(x for x in lines if x.startswith("model vs neighbour:"))
    assert prior == "model vs prior: better on 2/4 (mae, tm_score); not on rmsd, lddt"
    assert neigh == "model vs neighbour: better on 2/4 (rmsd, lddt); not on mae, tm_score"
