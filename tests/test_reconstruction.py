"""The reconstruction registry and its clash-resolving final stage: every method keeps the Cα bounds on
clash-prone inputs (the length-aware prior, noisy natives, an untrained model), the old path (``final=False``)
breaks them on the same inputs, the registry is the one list of methods, and geometry no longer imports
folding."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from proteinmtp import geometry as G
from proteinmtp import metrics as M
from proteinmtp import reconstruction as R
from proteinmtp.constants import CA_CA_BOND
from proteinmtp.dataio import open_dataset
from proteinmtp.folding import gaussian_distogram
from proteinmtp.prior import SeparationPrior

EDGES = np.linspace(2.0, 22.0, 41)   # the distance head's bins


@pytest.fixture(scope="module")
def demo(demo_dir):
    """The demo's held-out chains and a separation prior fitted on them (the shape of a prior's distances is
    what matters here; the demo's training split would take seconds longer to load)."""
    test = open_dataset(demo_dir / "dataset" / "test.json.gz").samples
    return {s.id: s for s in test}, SeparationPrior.fit(test)


def _bounds_hold(xyz, breaks=()):
    """The issue's bounds, computed here independently of metrics.clash_check (full distance matrix)."""
    d = G.distance_matrix(xyz)
    L = len(xyz)
    i, j = np.triu_indices(L, 1)
    brk = set(breaks)
    bonded = (j - i == 1) & np.array([a not in brk for a in i])
    i2 = (j - i == 2) & np.array([a not in brk and a + 1 not in brk for a in i])
    nb = d[i, j][~bonded]
    return (nb.min(initial=np.inf) >= 3.5 and d[i, j][i2].min(initial=np.inf) >= 4.2
            and np.abs(d[i, j][bonded] - CA_CA_BOND).max(initial=0.0) <= 0.1)


def _inputs(dist, sigma):
    """Keyword arguments of every method: the distogram a calibrated model with error sd σ would give."""
    return {"distogram": gaussian_distogram(dist, sigma, EDGES), "bin_edges": EDGES}


@pytest.mark.parametrize("method", R.method_names())
def test_random_400mer_every_method_keeps_the_bounds(method, demo):
    """A random 400-residue chain: what a weak model predicts for it is close to the length-aware prior (the
    issue: 158 pairs under 3 Å, down to 0.95 Å at i, i+2, from smooth distances ≥ 5.58 Å apart)."""
    _, prior = demo
    rng = np.random.default_rng(400)
    d = prior.predict(400)
    eps = np.triu(rng.normal(scale=0.5, size=d.shape), 1)
    d = np.maximum(d + eps + eps.T, 1.0)
    np.fill_diagonal(d, 0.0)
    kw = _inputs(d, 2.0) if method == "distogram" else {}
    before, _ = R.reconstruct(d, method=method, final=False, **kw)
    assert M.clash_check(before)["n_clashes"] > 0          # the failure of the issue, reproduced
    xyz, info = R.reconstruct(d, method=method, **kw)
    assert info["method"] == method and info["geometry_ok"] and info["geometry"]["n_clashes"] == 0
    assert M.clash_check(xyz)["ok"] and _bounds_hold(xyz)
    assert np.sort(G.distance_matrix(xyz)[np.triu_indices(400, 2)])[0] >= 3.5


@pytest.mark.parametrize("method", R.method_names())
@pytest.mark.parametrize("source", ["prior", "native_noise"])
def test_demo_chain_every_method_keeps_the_bounds(method, source, demo):
    """A held-out demo chain with two recorded chain breaks: its prior, and its native distances + 2 Å noise."""
    samples, prior = demo
    s = samples["1AVX_l_u:B"]
    ca = np.asarray(s.ca)[s.mask()]
    breaks = G.chain_breaks(ca)
    assert len(breaks) == 2
    if source == "prior":
        d = prior.predict(len(ca))
    else:
        rng = np.random.default_rng(7)
        eps = np.triu(rng.normal(scale=2.0, size=(len(ca), len(ca))), 1)
        d = np.maximum(G.distance_matrix(ca) + eps + eps.T, 1.0)
        np.fill_diagonal(d, 0.0)
    kw = _inputs(d, 2.0) if method == "distogram" else {}
    before, _ = R.reconstruct(d, method=method, breaks=breaks, final=False, **kw)
    xyz, info = R.reconstruct(d, method=method, breaks=breaks, **kw)
    assert _bounds_hold(xyz, breaks) and info["geometry_ok"]
    if source == "prior":
        assert not _bounds_hold(before, breaks)              # fails before the final stage
    else:  # on good distances the stage costs nothing measurable
        assert M.tm_score(xyz, ca) >= M.tm_score(before, ca) - 0.01
        assert M.lddt_ca(xyz, ca) >= M.lddt_ca(before, ca) - 0.01
        # chain breaks stay unbonded: the stage does not pull the two ends of a gap to 3.8 Å
        gaps = np.linalg.norm(xyz[np.asarray(breaks) + 1] - xyz[np.asarray(breaks)], axis=1)
        native_gaps = np.linalg.norm(ca[np.asarray(breaks) + 1] - ca[np.asarray(breaks)], axis=1)
        assert (np.abs(gaps - CA_CA_BOND) > 0.5).all() and np.abs(gaps - native_gaps).max() < 1.5


def test_untrained_model_prediction_keeps_the_bounds(tiny_run):
    """A random 120-mer through the tiny (2-step) run, as inference runs it, with every method."""
    from proteinmtp.model import load_run
    from proteinmtp.predict import structure_from_distances

    run = load_run(tiny_run["run_dir"])
    seq = "".join(np.random.default_rng(120).choice(list("ACDEFGHIKLMNPQRSTVWY"), 120))
    [dp] = run.predict([seq])
    before, _ = R.reconstruct(np.asarray(dp.dist, dtype=np.float64), method=R.DEFAULT_METHOD, final=False)
    assert not M.clash_check(before)["ok"]                  # the default path before the final stage clashes
    for method in R.method_names():
        sp = structure_from_distances(dp, method=method)
        assert _bounds_hold(sp.ca_xyz), method


def test_exact_distances_are_left_alone(demo):
    """A structure already inside the bounds is not moved by the final stage (0 rounds)."""
    samples, _ = demo
    s = samples["1BUH_l_u:A"]
    ca = np.asarray(s.ca)[s.mask()]
    d = G.distance_matrix(ca)
    x0, i0 = R.reconstruct(d, method="refine", breaks=G.chain_breaks(ca), final=False)
    x1, i1 = R.reconstruct(d, method="refine", breaks=G.chain_breaks(ca))
    assert i1["final_rounds"] == 0 and np.array_equal(x0, x1) and M.rmsd(x1, ca) < 0.1


def test_final_stage_escalates_until_the_check_passes(monkeypatch):
    """Rounds run at strength 1, 10, 100 … and stop at the first structure in bounds (here the first round is
    cut to one iteration, so it cannot get there)."""
    seen = []
    real = G.resolve_clashes

    def spy(x, breaks=(), *, strength=1.0, **kw):
        seen.append(strength)
        return real(x, breaks, strength=strength, **kw, **({"max_iter": 1} if len(seen) == 1 else {}))

    monkeypatch.setattr(R, "resolve_clashes", spy)
    x0 = np.zeros((30, 3)) + np.linspace(0, 1, 30)[:, None]       # 30 atoms on a line within 1.7 Å
    xyz, info = R.final_stage(x0)
    assert seen == [1.0, 10.0] and info == {"final_rounds": 2, "geometry_ok": True}
    assert _bounds_hold(xyz)


def test_final_stage_unsticks_flat_and_coincident_starts():
    """All atoms in one point, or on one line (a gradient along the line cannot let atoms pass each other):
    the stage kicks the start out of the line and gets to the bounds."""
    for x0 in (np.zeros((40, 3)), np.zeros((40, 3)) + np.linspace(0, 1, 40)[:, None]):
        xyz, info = R.final_stage(x0)
        assert info["geometry_ok"] and _bounds_hold(xyz)


def test_final_stage_reports_failure(monkeypatch, caplog):
    monkeypatch.setattr(R, "resolve_clashes", lambda x, breaks=(), **kw: x)   # a stage that does nothing
    with caplog.at_level(logging.WARNING, logger="proteinmtp.reconstruction"):
        xyz, info = R.final_stage(np.zeros((5, 3)), rounds=2)
    assert info == {"final_rounds": 2, "geometry_ok": False} and "out of bounds after 2 rounds" in caplog.text


def test_registry_is_the_one_list_of_methods(repo_root):
    """Every method is registered with a build function and what it needs; the scripts' --mds_method choices,
    the default and the contracts all come from it."""
    import argparse

    from proteinmtp.runcli import add_prediction_arguments

    assert R.method_names() == ("classical", "refine", "distogram")
    assert R.DEFAULT_METHOD in R.METHODS
    for name, m in R.METHODS.items():
        assert m.name == name and callable(m.build) and m.summary
        assert m.fallback is None or (m.fallback in R.METHODS and m.needs)
    assert R.METHODS["distogram"].needs == ("distogram",)
    ap = argparse.ArgumentParser()
    add_prediction_arguments(ap, "reconstruction")
    action = next(a for a in ap._actions if a.dest == "mds_method")
    assert tuple(action.choices) == R.method_names() and action.default == R.DEFAULT_METHOD
    assert all(f"{n}: " in action.help for n in R.method_names()) and "needs the distogram" in action.help
    contracts = (repo_root / "docs" / "contracts.md").read_text()
    assert all(f"`{n}`" in contracts for n in R.method_names())
    # the fallback, decided in one place
    full = R.Inputs(distogram=np.ones((3, 3, 3)) / 3, bin_edges=np.array([4.0, 8.0]))
    assert R.resolve_method("distogram", full) == "distogram"
    assert R.resolve_method("distogram", R.Inputs()) == "refine"
    with pytest.raises(ValueError, match="must be one of 'classical', 'refine', 'distogram'"):
        R.resolve_method("smacof", R.Inputs())
    # no literal default left beside the constant
    for f in ("predict.py", "evaluation.py", "eval_scoring.py", "inference.py"):
        assert 'method: str = "refine"' not in (repo_root / "proteinmtp" / f).read_text(), f


