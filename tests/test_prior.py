"""Separation prior: exact profiles on synthetic chains (hand-computable), length awareness,
fallbacks, and a JSON round trip."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from proteinmtp.prior import SeparationPrior


def _line(L: int, step: float) -> SimpleNamespace:
    """Straight chain: d(i, j) = step · |i − j| exactly."""
    ca = np.zeros((L, 3))
    ca[:, 0] = step * np.arange(L)
    return SimpleNamespace(ca=ca)


def _helixish(L: int, radius: float) -> SimpleNamespace:
    t = np.arange(L) * 1.7
    return SimpleNamespace(ca=np.stack([radius * np.cos(t), radius * np.sin(t), 1.5 * np.arange(L)], axis=1))


def test_profile_equals_mean_distance_per_separation():
    chains = [_line(50, 3.8), _line(55, 3.0), _line(60, 3.4)] * 2     # all in the 0–63 bin
    p = SeparationPrior.fit(chains, min_chains=1)
    prof = p.profile(50)
    k = np.arange(50)
    # pairs at separation k: 50−k, 55−k, 60−k (twice each) with d = step·k
    expected = k * (3.8 * (50 - k) + 3.0 * (55 - k) + 3.4 * (60 - k)) / ((50 - k) + (55 - k) + (60 - k))
    np.testing.assert_allclose(prof, expected, rtol=1e-9)
    m = p.predict(50)
    assert m.shape == (50, 50) and np.allclose(m, m.T) and (np.diag(m) == 0).all()
    assert m[3, 10] == pytest.approx(expected[7])


def test_prior_is_length_aware():
    short = [_line(40, 3.0) for _ in range(6)]          # bin 0–63
    long = [_line(200, 3.8) for _ in range(6)]          # bin 192–255
    p = SeparationPrior.fit(short + long)
    assert p.predict(40)[0, 10] == pytest.approx(30.0)
    assert p.predict(200)[0, 10] == pytest.approx(38.0)


def test_thin_bin_falls_back_and_extrapolates_to_any_length():
    chains = [_helixish(100, 2.3) for _ in range(6)] + [_line(130, 3.8)]   # bin 128–159 has 1 chain
    p = SeparationPrior.fit(chains, min_chains=5)
    # L = 130: its own bin is thin → neighbours pooled (100-residue chains + the line), not the line alone
    prof = p.profile(130)
    line_alone = 3.8 * 20
    assert prof[20] < line_alone
    # far beyond every training chain: finite, non-decreasing tail, no NaN
    m = p.predict(1500)
    assert np.isfinite(m).all()
    tail = p.profile(1500)[130:]
    assert (np.diff(tail) >= -1e-9).all()
    assert p.predict(1).shape == (1, 1)


def test_fit_ignores_missing_residues():
    c = _line(30, 3.8)
    c.ca[5] = np.nan
    p = SeparationPrior.fit([c] * 5)
    # separation 1 pairs: 29 − 2 (those touching residue 5), all at 3.8 Å
    assert p.profile(30)[1] == pytest.approx(3.8)
    assert p.n_pairs[0][1] == 5 * 27
    with pytest.raises(ValueError, match="no chain"):
        SeparationPrior.fit([SimpleNamespace(ca=np.full((4, 3), np.nan))])


def test_save_load_round_trip(tmp_path):
    p = SeparationPrior.fit([_helixish(80, 2.3), _line(150, 3.8), _helixish(300, 5.0)] * 3)
    path = tmp_path / "run" / "prior.json"
    p.save(path)
    q = SeparationPrior.load(path)
    for L in (10, 80, 150, 300, 700):
        np.testing.assert_allclose(q.predict(L), p.predict(L), rtol=1e-6)
    assert q.to_dict()["format"] == "proteinmtp-prior/1"
    with pytest.raises(ValueError, match="unknown format"):
        SeparationPrior.from_dict({**p.to_dict(), "format": "proteinmtp-prior/99"})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid prior JSON"):
        SeparationPrior.load(tmp_path / "bad.json")


def test_shipped_prior_equals_the_fitted_one_and_is_picked(tmp_path):
    """The builder's prior.json (fitted on the coordinates as stored, here given to 1e-6 Å so that rounding
    matters) is byte for byte the prior training fits on the loaded split, and prior_for_training picks it
    only when its training chains match."""
    import json

    from proteinmtp.dataio import open_dataset
    from proteinmtp.dataset import Sample, compute_global_stats, save_dataset
    from proteinmtp.fileio import write_json
    from proteinmtp.prior import SHIPPED_PRIOR_NAME, fit_shipped, prior_for_training

    rng = np.random.default_rng(0)
    samples = []
    for i, L in enumerate((40, 70, 70, 130, 200, 260, 33)):
        ca = np.cumsum(rng.normal(0, 2.2, (L, 3)), axis=0) + rng.uniform(-1e-3, 1e-3, (L, 3))
        ca[rng.random(L) < 0.05] = np.nan
        samples.append(Sample(id=f"c{i}:A", sequence="A" * L, ca=ca, residue_ids=[str(k) for k in range(L)],
                              source="x", split="train"))
    train_path = tmp_path / "train.json.gz"
    save_dataset(train_path, samples, compute_global_stats(samples), {})
    loaded = open_dataset(train_path).samples
    assert not np.array_equal(loaded[0].ca, samples[0].ca, equal_nan=True)   # rounding did change them
    fitted_on_loaded = json.dumps(SeparationPrior.fit(loaded).to_dict())
    assert json.dumps(SeparationPrior.fit(samples).to_dict()) != fitted_on_loaded   # hence stored_coords

    prior, why = prior_for_training(train_path, loaded)
    assert "fitted" in why and "no " in why and json.dumps(prior.to_dict()) == fitted_on_loaded
    write_json(tmp_path / SHIPPED_PRIOR_NAME, fit_shipped(samples), indent=None)
    prior, why = prior_for_training(train_path, loaded)
    assert "shipped" in why
    assert json.dumps(prior.to_dict()) == fitted_on_loaded          # the run's prior.json: identical text
    # a shipped prior with a marker value proves which one was returned; other chains -> fitted again
    d = json.loads((tmp_path / SHIPPED_PRIOR_NAME).read_text())
    d["power_law"] = [1.0, 0.123]
    write_json(tmp_path / SHIPPED_PRIOR_NAME, d, indent=None)
    assert prior_for_training(train_path, loaded)[0].power_law == (1.0, 0.123)
    prior, why = prior_for_training(train_path, loaded[:-1])
    assert "other training chains" in why and prior.power_law != (1.0, 0.123)
    (tmp_path / SHIPPED_PRIOR_NAME).write_text("{broken")
    assert "unreadable" in prior_for_training(train_path, loaded)[1]
