"""The v1 coordinate head (proteinmtp.heads.coords): loss invariances by value, Kabsch/MDS against independent
references, the exactness of the detached-rotation gradient, and a tiny overfit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

from proteinmtp.heads import HeadConfig, build_head
from proteinmtp.heads.coords import DIST_EPS, CoordinateHead, coords_to_dist, kabsch_rmsd, mds_from_dist
from proteinmtp.heads.losses import LossTargets, head_loss

STATS = (torch.tensor(2.6), torch.tensor(0.7))


def loss_of(head, out, dist, valid, stats, **kw):
    """The head's loss terms (proteinmtp.heads.losses) for these outputs and targets."""
    return head_loss(head, out, LossTargets(dist, valid, stats, **kw))


@pytest.fixture(scope="module")
def native_ca(test_data_dir) -> np.ndarray:
    """Cα of 1LCD:A [51, 3] Å (every residue present)."""
    from proteinmtp.structure import read_structure

    ca = read_structure(test_data_dir / "1LCD.pdb.gz")[0].ca
    assert np.isfinite(ca).all()
    return ca


def _head(seed: int = 0) -> CoordinateHead:
    torch.manual_seed(seed)
    return CoordinateHead(16, HeadConfig(head_type="coords", single_dim=16, axial_heads=2))


def _out_from_xyz(xyz: torch.Tensor) -> dict:
    return {"xyz": xyz, "dist": coords_to_dist(xyz), "residue_conf_logits": torch.zeros(xyz.shape[:2])}


def _valid(L: int, present: torch.Tensor | None = None) -> torch.Tensor:
    m = torch.ones(1, L, dtype=torch.bool) if present is None else present[None]
    return m[:, :, None] & m[:, None, :] & ~torch.eye(L, dtype=torch.bool)


def test_head_type_coords_builds_a_head_whose_distances_are_its_coordinates():
    """--head_type coords through the registry builds the coordinate head: its "dist" output is the distance
    matrix of its "xyz" (checked with scipy), and padding gets zero coordinates."""
    torch.manual_seed(0)
    head = build_head(16, HeadConfig(head_type="coords", single_dim=16, axial_heads=2)).eval()
    feats = torch.randn(2, 9, 16)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    with torch.no_grad():
        out = head(feats, mask)
    xyz = out["xyz"].numpy()
    assert xyz.shape == (2, 9, 3) and float(np.abs(xyz).max()) > 0.1
    # the training output is the smoothed sqrt(d² + DIST_EPS) (a gradient at d = 0)
    for b, n in ((0, 9), (1, 6)):
        ref = np.sqrt(cdist(xyz[b, :n], xyz[b, :n]) ** 2 + DIST_EPS)
        np.testing.assert_allclose(out["dist"][b, :n, :n].numpy(), ref, rtol=1e-5, atol=1e-5)
    assert np.all(xyz[1, 6:] == 0)


def test_loss_is_invariant_to_rotation_translation_and_mirror_by_value(native_ca):
    """The loss of a prediction equals the loss of any rigidly moved (or mirrored) copy of it, and does not
    depend on the frame of the native: both enter only through distances or an optimal superposition."""
    rng = np.random.default_rng(0)
    L = native_ca.shape[0]
    pred = native_ca + rng.normal(scale=3.0, size=native_ca.shape)          # a noisy prediction, Å
    true_d = torch.tensor(cdist(native_ca, native_ca))[None]
    present = torch.ones(L, dtype=torch.bool)
    present[[3, 20, 21]] = False                                           # residues without a Cα
    valid = _valid(L, present)
    head = _head()
    ref = loss_of(head, _out_from_xyz(torch.tensor(pred)[None]), true_d, valid, STATS)
    R = Rotation.random(random_state=1).as_matrix()
    for moved in (pred @ R.T + np.array([40.0, -7.0, 3.0]), pred * np.array([1.0, -1.0, 1.0]) + 5.0):
        got = loss_of(head, _out_from_xyz(torch.tensor(moved)[None]), true_d, valid, STATS)
        for k in ("loss", "loss_regression", "loss_rmsd"):
            assert float(got[k]) == pytest.approx(float(ref[k]), rel=2e-6), k   # float32 inside the loss
    # the native frame does not matter either: same distances from a rotated native
    moved_native = native_ca @ Rotation.random(random_state=2).as_matrix().T - 12.0
    got = loss_of(head, _out_from_xyz(torch.tensor(pred)[None]),
                    torch.tensor(cdist(moved_native, moved_native))[None], valid, STATS)
    assert float(got["loss"]) == pytest.approx(float(ref["loss"]), rel=2e-6)
    # and the loss separates: the native itself scores (near) zero on both geometric terms
    exact = loss_of(head, _out_from_xyz(torch.tensor(native_ca)[None]), true_d, valid, STATS)
    assert float(exact["loss_rmsd"]) < 1e-3 and float(exact["loss_regression"]) < 1e-3
    assert float(ref["loss_rmsd"]) > 2.0


def test_regression_term_matches_hand_computation(native_ca):
    """loss_regression = mean |(ln d_pred - mu)/sd - (ln d_true - mu)/sd| over pairs i != j (NumPy)."""
    rng = np.random.default_rng(3)
    pred = native_ca + rng.normal(scale=2.0, size=native_ca.shape)
    L = len(pred)
    out = loss_of(_head(), _out_from_xyz(torch.tensor(pred)[None]), torch.tensor(cdist(native_ca, native_ca))[None],
                       _valid(L), STATS)
    dp = np.sqrt(cdist(pred, pred) ** 2 + 1e-2)
    dt = cdist(native_ca, native_ca)
    off = ~np.eye(L, dtype=bool)
    expect = np.abs(np.log(dp[off]) - np.log(dt[off])).mean() / 0.7
    assert float(out["loss_regression"]) == pytest.approx(expect, rel=1e-5)


def test_kabsch_rmsd_against_scipy_align_vectors(native_ca):
    rng = np.random.default_rng(4)
    R = Rotation.random(random_state=5).as_matrix()
    target = native_ca @ R.T + rng.normal(scale=1.5, size=native_ca.shape) + 9.0
    a = native_ca - native_ca.mean(0)
    b = target - target.mean(0)
    rot, _ = Rotation.align_vectors(a, b)                                   # independent optimal rotation
    expect = math.sqrt(((a - rot.apply(b)) ** 2).sum(1).mean())
    got = float(kabsch_rmsd(torch.tensor(native_ca), torch.tensor(target)))
    assert got == pytest.approx(expect, rel=1e-7)
    # a mirror image is not a rotation: large RMSD unless the mirror is allowed
    mirrored = torch.tensor(native_ca * np.array([-1.0, 1.0, 1.0]))
    assert float(kabsch_rmsd(torch.tensor(native_ca), mirrored)) > 3.0
    assert float(kabsch_rmsd(torch.tensor(native_ca), mirrored, allow_mirror=True)) < 1e-3


def test_detached_rotation_gives_the_exact_gradient(native_ca):
    """Envelope theorem: d RMSD/d mobile with R held fixed equals the finite-difference gradient of the
    fully re-optimised RMSD."""
    rng = np.random.default_rng(6)
    mobile = torch.tensor(native_ca[:20] + rng.normal(scale=2.0, size=(20, 3)), requires_grad=True)
    target = torch.tensor(native_ca[:20])
    assert torch.autograd.gradcheck(lambda x: kabsch_rmsd(x, target), (mobile,), eps=1e-6, atol=1e-5)


def test_mds_recovers_coordinates(native_ca):
    d = torch.tensor(cdist(native_ca, native_ca))
    x = mds_from_dist(d).numpy()
    np.testing.assert_allclose(cdist(x, x), d.numpy(), atol=1e-8)
    assert float(kabsch_rmsd(torch.tensor(x), torch.tensor(native_ca), allow_mirror=True)) < 2e-4  # sqrt(1e-8) floor


def test_predict_numpy_distances_are_those_of_the_coordinates():
    torch.manual_seed(0)
    head = _head().eval()
    feats = torch.randn(2, 12, 16)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False                                                     # padded second item
    with torch.no_grad():
        out = head(feats, mask)
    p = head.predict_numpy(out, 1, 9, (2.6, 0.7))
    xyz = out["xyz"][1, :9].double().numpy()
    np.testing.assert_allclose(p["dist"], cdist(xyz, xyz), atol=1e-9)
    assert p["distogram_probs"] is None and p["bin_edges"] is None
    for k in ("contact_prob", "pair_confidence"):
        assert p[k].shape == (9, 9) and (p[k] >= 0).all() and (p[k] <= 1).all()
    # contact score ranks pairs exactly like the (negated) distance
    iu = np.triu_indices(9, 1)
    assert (np.argsort(-p["contact_prob"][iu], kind="stable") == np.argsort(p["dist"][iu], kind="stable")).all()
    # padding must not change the prediction of the unpadded residues
    with torch.no_grad():
        alone = head(feats[1:2, :9], mask[1:2, :9])
    np.testing.assert_allclose(alone["xyz"][0].numpy(), out["xyz"][1, :9].numpy(), atol=1e-5)


def test_tiny_overfit_drops_distance_error(tmp_path, native_ca, test_data_dir):
    """Tiny Qwen2 backbone + coordinate head on 32 residues of a real chain: 40 Adam steps cut the distance
    MAE of the predicted coordinates by more than half."""

    # one intra-op thread: tiny ops gain nothing from two, and a second thread spin-waits badly when
    # the cores are busy (measured 50x slower steps under load)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _overfit(tmp_path, native_ca, test_data_dir)
    finally:
        torch.set_num_threads(threads)


def _overfit(tmp_path, native_ca, test_data_dir) -> None:
    from proteinmtp.model import ModelSpec, build_model
    from proteinmtp.structure import read_structure
    from proteinmtp.tiny import write_tiny
    from proteinmtp.training import DistanceCollator

    torch.manual_seed(0)
    write_tiny(tmp_path / "bb", hidden_size=32, num_layers=1, num_heads=2)
    spec = ModelSpec(base_model=str(tmp_path / "bb"), finetune="full",
                     head={"head_type": "coords", "single_dim": 16, "axial_heads": 2},
                     global_stats={"log_dist_mean": 2.6, "log_dist_std": 0.7})
    model = build_model(spec)
    seq, ca = read_structure(test_data_dir / "1LCD.pdb.gz")[0].sequence[:32], native_ca[:32]
    batch = DistanceCollator(model.encoder)([{"sequence": seq, "ca": ca}])
    true = cdist(ca, ca)
    iu = np.triu_indices(len(seq), 1)

    def mae() -> float:
        with torch.no_grad():
            out = model.eval()(**{k: v for k, v in batch.items() if k != "dist"})
        return float(np.abs(model.head.predict_numpy(out, 0, len(seq), (2.6, 0.7))["dist"][iu] - true[iu]).mean())

    before = mae()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(40):
        opt.zero_grad()
        loss = model(**batch)["loss"]
        loss.backward()
        opt.step()
    after = mae()
    assert after < 0.5 * before, (before, after)


def test_coords_run_round_trips_through_load_run(tmp_path):
    """A run saved with head_type coords loads through model.load_run (registration by import) and predicts
    the same distances as the model that was saved."""
    import json
    from dataclasses import asdict

    from proteinmtp.backbone import load_tokenizer
    from proteinmtp.model import ModelSpec, build_model, load_run, save_weights
    from proteinmtp.rundir import CONFIG_NAME, CONFIG_VERSION, TOKENIZER_DIR
    from proteinmtp.tiny import write_tiny

    torch.manual_seed(1)
    write_tiny(tmp_path / "bb", hidden_size=32, num_layers=1, num_heads=2)
    spec = ModelSpec(base_model=str(tmp_path / "bb"), finetune="full", max_len=64,
                     head={"head_type": "coords", "single_dim": 16, "axial_heads": 2},
                     global_stats={"log_dist_mean": 2.6, "log_dist_std": 0.7})
    model = build_model(spec).eval()
    with torch.no_grad():
        model.head.to_xyz.bias.add_(0.3)            # not the initial weights
    run = tmp_path / "run"
    save_weights(model, run)
    (run / CONFIG_NAME).write_text(json.dumps({"config_version": CONFIG_VERSION, "model": asdict(spec)}))
    load_tokenizer(str(tmp_path / "bb")).save_pretrained(str(run / TOKENIZER_DIR))
    seq = "MKTAYIAKQRQISFVKSHFSRQ"
    with torch.no_grad():
        out = model(**model.encoder.collate([seq]))
    expect = model.head.predict_numpy(out, 0, len(seq), (2.6, 0.7))["dist"]
    got = load_run(run).predict([seq])[0]
    np.testing.assert_allclose(got.dist, expect, atol=1e-4)
    assert got.distogram_probs is None and got.residue_confidence.shape == (len(seq),)
