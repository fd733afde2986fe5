"""Frozen feature cache: cached rows equal the backbone's own whole-chain features, crops take the right rows,
keys separate what must differ, bad files are recomputed, and a frozen run trains the same with and without it."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from proteinmtp.dataset import Sample, compute_global_stats, save_dataset
from proteinmtp.features import FeatureCache
from proteinmtp.model import HeadConfig, ModelSpec, build_model
from proteinmtp.tiny import write_tiny
from proteinmtp.training import CropDataset, DistanceCollator

STATS = {"log_dist_mean": 3.0, "log_dist_std": 0.5}
SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"          # 33 residues


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_bert")
    write_tiny(out, "bert", hidden_size=32, num_layers=3, num_heads=2, max_positions=64)
    return out


def frozen(path, layout="direct", layers="last", init="pretrained", seed=0, prior_input=False):
    torch.manual_seed(0)
    head = asdict(HeadConfig(pair_dim=8, single_dim=16, dilations=(1,), prior_input=prior_input))
    return build_model(ModelSpec(base_model=str(path), layout=layout, feature_layers=layers, finetune="frozen",
                                 global_stats=STATS, head=head, init_backbone=init, init_seed=seed))


def live_hidden(model, seq):
    b = model.encoder.collate([seq])
    with torch.no_grad():
        return model.backbone_hidden(b["input_ids"], b["attention_mask"], b["token_kind"], b["residue_pos"])[0]


def helix(n, rng):
    t = np.arange(n)
    return np.stack([2.3 * np.cos(1.745 * t), 2.3 * np.sin(1.745 * t), 1.5 * t], 1) + rng.normal(0, 0.4, (n, 3))


@pytest.mark.parametrize("layers", ["last", "-1,-2,1"])
def test_cached_rows_are_the_whole_chain_features(bert, tmp_path, layers):
    model = frozen(bert, layers=layers).train()           # training mode: the frozen backbone must not drop out
    cache = FeatureCache(model, tmp_path / "fc")
    got = cache.features(SEQ)
    want = live_hidden(model.eval(), SEQ)
    assert got.dtype == torch.float16 and got.shape == want.shape
    assert got.shape == ((33, 32) if layers == "last" else (3, 33, 32))
    torch.testing.assert_close(got.float(), want, rtol=2e-3, atol=2e-3)         # float16 rounding only
    assert cache.misses == 1 and (cache.dir / "meta.json").is_file()
    meta = json.loads((cache.dir / "meta.json").read_text())
    assert meta["feature_layers"] == ("last" if layers == "last" else [3, 2, 1])    # 3 layers: -1 -> 3, -2 -> 2
    cache.compute = None                                                         # a hit must not recompute
    assert torch.equal(cache.features(SEQ), got) and cache.hits == 1
    # size on disk: k layers x L x H x 2 bytes (float16), plus a header of well under 200 bytes
    k = 1 if layers == "last" else 3
    assert 33 * 32 * 2 * k <= cache.size_bytes() < 33 * 32 * 2 * k + 200


def test_crop_takes_the_same_rows_as_the_distances(bert, tmp_path):
    """A crop's features are rows start..start+n of the whole chain's; for a bidirectional encoder they
    differ from the features of the crop read alone (context), which is the documented difference."""
    model = frozen(bert).eval()
    cache = FeatureCache(model, tmp_path / "fc")
    rng = np.random.default_rng(0)
    ca = helix(len(SEQ), rng)
    s = Sample(id="x:A", sequence=SEQ, ca=ca, residue_ids=[str(i) for i in range(33)], source="", split="train")
    ds = CropDataset([s], max_len=12, random_crop=True, context_len=64)
    torch.manual_seed(3)
    items = [ds[0], ds[0]]
    assert all(it["context"] == SEQ and it["context_start"] == 0 for it in items)
    batch = DistanceCollator(model.encoder, feature_cache=cache)(items)
    whole = live_hidden(model, SEQ)
    for b, it in enumerate(items):
        st = it["start"]
        assert SEQ[st:st + 12] == it["sequence"]
        torch.testing.assert_close(batch["features"][b], whole[st:st + 12], rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(batch["dist"][b, 0, 5].item(), np.linalg.norm(ca[st] - ca[st + 5]), rtol=1e-5)
    alone = live_hidden(model, items[0]["sequence"])
    assert (alone - whole[items[0]["start"]:items[0]["start"] + 12]).abs().max().item() > 1e-2
    assert "input_ids" not in batch and batch["residue_mask"].all()


def test_long_chain_is_read_on_its_central_window(tiny, tmp_path):
    model = frozen(tiny).eval()
    cache = FeatureCache(model, tmp_path / "fc")
    rng = np.random.default_rng(1)
    seq = SEQ + "GSHMLEDPVAGSHMLEDPVA"                     # 53 residues, window 40 -> residues 6..45
    s = Sample(id="y:A", sequence=seq, ca=helix(53, rng), residue_ids=[str(i) for i in range(53)], source="",
               split="train")
    ds = CropDataset([s], max_len=10, random_crop=True, context_len=40)
    torch.manual_seed(0)
    for _ in range(20):
        it = ds[0]
        assert it["context"] == seq[6:46] and it["context_start"] == 6 and it["full_len"] == 53
        assert 6 <= it["start"] <= 36 and seq[it["start"]:it["start"] + 10] == it["sequence"]
        b = DistanceCollator(model.encoder, feature_cache=cache)([it])
        r = it["start"] - 6
        torch.testing.assert_close(b["features"][0], live_hidden(model, seq[6:46])[r:r + 10], rtol=2e-3, atol=2e-3)
    assert cache.misses == 1                                               # one window, computed once


def test_forward_on_cached_features_equals_forward_on_tokens(bert, tmp_path):
    for layers in ("last", "-1,-3"):
        model = frozen(bert, layers=layers, prior_input=False).eval()
        if model.layer_mix is not None:
            with torch.no_grad():
                model.layer_mix.copy_(torch.tensor([0.3, -0.7]))
        cache = FeatureCache(model, tmp_path / layers)
        with torch.no_grad():
            tok = model(**model.encoder.collate([SEQ]))
            fc = model(**cache.batch([(SEQ, 0, len(SEQ))]))
        torch.testing.assert_close(fc["dist_norm"], tok["dist_norm"], rtol=1e-2, atol=1e-2)
        assert (fc["dist_norm"] - tok["dist_norm"]).abs().max() < 5e-3


def test_keys_separate_backbones_inits_layouts_and_layers(bert, tmp_path):
    d = tmp_path / "fc"
    key = lambda m: FeatureCache(m, d).key                                  # noqa: E731
    base = key(frozen(bert))
    assert key(frozen(bert)) == base                                        # same function, same key
    assert key(frozen(bert, layers="-1,-2")) != base
    assert key(frozen(bert, layout="echo")) != base
    r1 = key(frozen(bert, init="random", seed=1))
    assert r1 not in (base, key(frozen(bert, init="random", seed=2))) and r1 == key(frozen(bert, init="random", seed=1))
    m = frozen(bert)
    with torch.no_grad():
        m.backbone.embeddings.word_embeddings.weight[7, 0] += 1e-3          # one weight changed: another key
    assert key(m) != base


def test_unreadable_file_is_recomputed_and_other_modes_refused(bert, tmp_path):
    model = frozen(bert).eval()
    cache = FeatureCache(model, tmp_path / "fc")
    good = cache.features(SEQ)
    cache.path(SEQ).write_bytes(b"not a safetensors file")
    again = FeatureCache(model, tmp_path / "fc")
    assert torch.equal(again.features(SEQ), good) and again.misses == 1
    m = build_model(ModelSpec(base_model=str(bert), finetune="full", layout="direct", global_stats=STATS,
                              head=asdict(HeadConfig(pair_dim=8, single_dim=16, dilations=(1,)))))
    with pytest.raises(ValueError, match="frozen"):
        FeatureCache(m, tmp_path / "x")
    with pytest.raises(ValueError, match="outside the 33 cached"):
        cache.batch([(SEQ, 30, 5)])


def write_data(path, lengths, seed=0):
    rng = np.random.default_rng(seed)
    letters = list("ACDEFGHIKLMNPQRSTVWY")
    samples = [Sample(id=f"h{i}:A", sequence="".join(rng.choice(letters, n)), ca=helix(n, rng),
                      residue_ids=[str(k) for k in range(n)], source="synthetic", split="train")
               for i, n in enumerate(lengths)]
    save_dataset(path, samples, compute_global_stats(samples), {})


def first_loss(run):
    rows = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_frozen_run_trains_the_same_with_and_without_the_cache(bert, tmp_path):
    """Chains no longer than the crop: cached whole-chain features are the crop's features, so the two runs
    see the same numbers (up to float16) and log the same losses; the cached run fills its cache directory.
    The tiny BERT has dropout 0.1: a frozen backbone must stay in eval mode in training for this to hold."""
    import train_distmat

    write_data(tmp_path / "train.json", [20, 24, 18])
    write_data(tmp_path / "val.json", [22], seed=1)
    common = ["--train_data", str(tmp_path / "train.json"), "--val_data", str(tmp_path / "val.json"),
              "--model_name", str(bert), "--finetune", "frozen", "--max_steps", "3", "--save_steps", "100",
              "--eval_steps", "3", "--logging_steps", "1", "--warmup_steps", "1", "--pair_dim", "8",
              "--single_dim", "16", "--dilations", "1", "--max_seq_len", "24", "--seed", "4", "--no_tqdm"]
    assert train_distmat.main(common + ["--output_dir", str(tmp_path / "cached")]) == 0
    assert train_distmat.main(common + ["--output_dir", str(tmp_path / "live"), "--no-feature_cache"]) == 0
    a, b = first_loss(tmp_path / "cached"), first_loss(tmp_path / "live")
    assert len(a) == len(b) >= 3
    np.testing.assert_allclose(a, b, rtol=5e-5)     # float16 costs ~1e-6 here; backbone dropout would cost ~1e-3
    keys = list((tmp_path / "cached" / "feature_cache").iterdir())
    assert len(keys) == 1 and len(list(keys[0].glob("*.safetensors"))) == 4     # 3 training + 1 validation chain
    assert not (tmp_path / "live" / "feature_cache").exists()
    ev = [json.loads(x) for x in (tmp_path / "cached" / "train_log.jsonl").read_text().splitlines()]
    ev_live = [json.loads(x) for x in (tmp_path / "live" / "train_log.jsonl").read_text().splitlines()]
    ma = [r["eval_mae"] for r in ev if "eval_mae" in r]
    mb = [r["eval_mae"] for r in ev_live if "eval_mae" in r]
    assert ma and np.allclose(ma, mb, rtol=1e-4)


def test_one_stacked_pass_fills_single_layer_caches(bert, tmp_path):
    """store(): the rows of one pass over several layers, written under each single-layer key, are what each
    single-layer model computes itself (how benchmarks/bench_pretraining.py's layer probe fills its caches)."""
    h = live_hidden(frozen(bert, layers="1,3"), SEQ).to(torch.float16)          # [2, L, H]
    for j, k in enumerate((1, 3)):
        single = frozen(bert, layers=str(k))
        cache = FeatureCache(single, tmp_path / "fc")
        cache.store(SEQ, h[j:j + 1].clone())
        got = cache.features(SEQ)
        assert (cache.hits, cache.misses) == (1, 0)
        torch.testing.assert_close(got.float(), live_hidden(single, SEQ), rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="float16"):
        cache.store(SEQ, h[0].float())
