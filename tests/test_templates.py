"""Template search, leakage rules, cache, features (proteinmtp.templates) and the template embedding
(proteinmtp.heads.templates). Searches use the bundled demo dataset (real structures)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from proteinmtp import templates as T
from proteinmtp.config import add_flags, from_args
from proteinmtp.constants import ALLOWED_AA
from proteinmtp.dataio import open_dataset
from proteinmtp.dataset import Sample, save_dataset
from proteinmtp.heads.templates import TemplateEmbedConfig, TemplatePairEmbedding, template_tensors
from proteinmtp.splits import search_hits


@pytest.fixture(scope="module")
def demo(demo_dir):
    d = demo_dir / "dataset"
    return {name: open_dataset(d / f"{name}.json.gz") for name in ("train", "val", "test")}


@pytest.fixture(scope="module")
def train_db(demo_dir):
    return T.TemplateDatabase.load(demo_dir / "dataset" / "train.json.gz")


@pytest.fixture(scope="module")
def antibody_queries(demo):
    """Training chains of the demo's largest cluster (antibody chains: many near-identical mates) + a few."""
    tr = demo["train"].samples
    big = [s for s in tr if s.cluster == "1AHW_r_u:H"][:10]
    return big + [s for s in tr if s.cluster != "1AHW_r_u:H"][:6]


@pytest.fixture(scope="module")
def train_found(antibody_queries, train_db):
    """Training chains searched against their own split (the training-time search), pool of 1000."""
    return T.search_templates(antibody_queries, train_db, max_hits=1000)


def _db_file(tmp_path, samples, name="db.json"):
    path = tmp_path / name
    save_dataset(path, samples, {}, {})
    return path


# -- leakage ---------------------------------------------------------------------------------------------
def test_own_chain_never_its_template(antibody_queries, train_db, train_found):
    # the raw MMseqs2 search does find each chain's own entry (so the rule has something to remove) ...
    raw = search_hits({"q": antibody_queries[0].sequence}, {f"t{j}": s.sequence for j, s in enumerate(train_db.samples)})
    own = next(j for j, s in enumerate(train_db.samples) if s.id == antibody_queries[0].id)
    assert any(h["target"] == f"t{own}" and h["fident"] == 1.0 for h in raw)
    # ... and no pool keeps it, nor any identical sequence, while the chains do get other hits
    n_hits = 0
    for q in antibody_queries:
        for h in train_found[q.id].hits:
            assert h.target_id != q.id
            assert train_db.samples[h.target].sequence != q.sequence
            n_hits += 1
    assert n_hits > 50
    assert sum(bool(train_found[q.id].hits) for q in antibody_queries) >= 14


def test_identical_sequence_under_another_id_excluded(tmp_path, demo):
    q = demo["train"].samples[0]
    copy = replace(q, id="copy:A", source="copy.pdb")
    mutant_seq = ("A" if q.sequence[10] != "A" else "G").join((q.sequence[:10], q.sequence[11:]))
    mutant = replace(q, id="mutant:A", sequence=mutant_seq, source="mutant.pdb")
    others = [s for s in demo["train"].samples[1:40]]
    db = T.TemplateDatabase.load(_db_file(tmp_path, [copy, mutant, *others]))
    hits = T.search_templates([q], db)[q.id].hits
    ids = [h.target_id for h in hits]
    assert "copy:A" not in ids                        # identical sequence, different id: excluded
    assert ids[0] == "mutant:A"                       # one substitution away: kept, and the best hit
    assert 0.99 < hits[0].identity < 1.0
    # by id too: a database chain with the query's id but another sequence is never its template
    db2 = T.TemplateDatabase.load(_db_file(tmp_path, [replace(mutant, id=q.id), *others], "db2.json"))
    assert q.id not in [h.target_id for h in T.search_templates([q], db2)[q.id].hits]


def test_held_out_chains_never_enter_the_database(demo_dir, demo, train_db):
    for split in ("val", "test"):
        with pytest.raises(T.TemplateError, match=f"held out .*split '{split}'.*train.json.gz"):
            T.TemplateDatabase.load(demo_dir / "dataset" / f"{split}.json.gz")
    held = demo["val"].samples + demo["test"].samples
    held_ids = {s.id for s in held}
    held_seqs = {s.sequence for s in held}
    assert {s.split for s in train_db.samples} == {"train"}
    found = T.search_templates(held, train_db)
    targets = [h for r in found.values() for h in r.hits]
    assert len(targets) > 100
    for h in targets:
        assert h.target_id not in held_ids
        assert train_db.samples[h.target].sequence not in held_seqs


def test_mixed_database_refused_with_one_line(tmp_path, demo):
    path = _db_file(tmp_path, demo["train"].samples[:5] + demo["test"].samples[:1])
    with pytest.raises(T.TemplateError) as e:
        T.TemplateDatabase.load(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and demo["test"].samples[0].id in msg
    db = T.TemplateDatabase.load(path, allow_held_out=True)
    assert len(db) == 6
    with pytest.raises(T.TemplateError, match="not found"):
        T.TemplateDatabase.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(T.TemplateError, match="bad.json"):
        T.TemplateDatabase.load(tmp_path / "bad.json")


# -- selection --------------------------------------------------------------------------------------------
def test_selection_filters(antibody_queries, train_found):
    q = antibody_queries[0]
    found = train_found[q.id]
    own = [h for h in found.hits if h.target_cluster == q.cluster]
    assert own and max(h.identity for h in own) > 0.8       # close cluster mates exist
    top = T.select_templates(found, 4, max_identity=1.0)
    assert [h.bits for h in top] == sorted((h.bits for h in found.hits), reverse=True)[:4]
    capped = T.select_templates(found, 4, max_identity=0.5)
    assert capped and all(h.identity <= 0.5 for h in capped)
    rng = np.random.default_rng(0)
    dropped = T.select_templates(found, 4, drop_own_cluster=1.0, rng=rng)
    assert all(h.target_cluster != q.cluster for h in dropped)
    assert T.select_templates(found, 4, dropout=1.0, rng=rng) == []
    # drop_own_cluster 0.5 drops the own cluster about half the time
    n = sum(T.select_templates(found, 1, max_identity=1.0, drop_own_cluster=0.5, rng=rng)[0].target_cluster
            != q.cluster for _ in range(400))
    assert 160 < n < 240
    with pytest.raises(ValueError, match="rng"):
        T.select_templates(found, 4, dropout=0.5)


def test_pool_gives_the_selection_of_all_hits(antibody_queries, train_db, train_found):
    small = T.search_templates(antibody_queries, train_db, max_hits=3)
    rng_args = [(c, drop) for c in (*T.IDENTITY_CEILINGS, 1.0) for drop in (0.0, 1.0)]
    for q in antibody_queries:
        assert len(small[q.id].hits) <= len(train_found[q.id].hits)
        for ceiling, drop in rng_args:
            a = T.select_templates(small[q.id], 3, max_identity=ceiling, drop_own_cluster=drop,
                                   rng=np.random.default_rng(0))
            b = T.select_templates(train_found[q.id], 3, max_identity=ceiling, drop_own_cluster=drop,
                                   rng=np.random.default_rng(0))
            assert [h.target for h in a] == [h.target for h in b]
            assert [h.runs for h in a] == [h.runs for h in b]


# -- cache and fingerprint ---------------------------------------------------------------------------------
def test_cache_hit_on_second_search(tmp_path, demo, train_db, monkeypatch):
    queries = demo["test"].samples[:6]
    st1, st2 = {}, {}
    first = T.search_templates(queries, train_db, cache_dir=tmp_path, stats=st1)
    assert st1["n_searched"] == 6 and st1["n_cached"] == 0
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 6 and all(f.parent.name == train_db.fingerprint[:16] for f in files)

    def no_search(*a, **k):
        raise AssertionError("MMseqs2 ran although every chain was cached")

    monkeypatch.setattr("proteinmtp.splits.search_hits", no_search)
    second = T.search_templates(queries, train_db, cache_dir=tmp_path, stats=st2)
    assert st2["n_searched"] == 0 and st2["n_cached"] == 6
    assert {k: v.to_dict() for k, v in first.items()} == {k: v.to_dict() for k, v in second.items()}
    monkeypatch.undo()
    # a corrupt entry is searched again and rewritten; the others stay cached
    files[0].write_text("{trunc")
    st3 = {}
    third = T.search_templates(queries, train_db, cache_dir=tmp_path, stats=st3)
    assert st3["n_searched"] == 1 and st3["n_cached"] == 5
    assert json.loads(files[0].read_text())["format"] == T.TEMPLATE_HITS_FORMAT
    assert {k: v.to_dict() for k, v in third.items()} == {k: v.to_dict() for k, v in first.items()}


def test_changed_database_changes_fingerprint_and_misses_cache(tmp_path, demo):
    samples = demo["train"].samples[:30]
    path = _db_file(tmp_path, samples)
    fp = T.database_fingerprint(path)
    assert fp == T.database_fingerprint(_db_file(tmp_path, samples, "same.json"))   # same content, same print
    moved = [replace(samples[0], ca=samples[0].ca + np.array([0.001, 0, 0])), *samples[1:]]
    _db_file(tmp_path, moved)                                                         # one Cα moved by 1e-3 Å
    assert T.database_fingerprint(path) != fp
    # a sharded directory: any changed file changes it
    from proteinmtp.shards import save_shards

    shards = save_shards(tmp_path / "db.shards", samples, {}, {})
    fp_dir = T.database_fingerprint(shards)
    victim = sorted(p for p in shards.iterdir() if p.name.endswith(".ca.npy"))[0]
    victim.write_bytes(victim.read_bytes()[:-1] + bytes([victim.read_bytes()[-1] ^ 1]))
    assert T.database_fingerprint(shards) != fp_dir
    # the cache is keyed by the fingerprint: a changed database is searched again
    q = demo["test"].samples[:2]
    cache = tmp_path / "cache"
    st = {}
    T.search_templates(q, T.TemplateDatabase.load(_db_file(tmp_path, samples, "c.json")), cache_dir=cache, stats=st)
    assert st["n_searched"] == 2
    T.search_templates(q, T.TemplateDatabase.load(_db_file(tmp_path, moved, "c.json")), cache_dir=cache, stats=st)
    assert st["n_searched"] == 2 and st["n_cached"] == 0


# -- features ------------------------------------------------------------------------------------------------
def _line_template():
    """Template GMKTAY with Cα on the x axis every 3.8 Å, residue 3 (T) without a Cα."""
    ca = np.array([[3.8 * i, 0.0, 0.0] for i in range(6)])
    ca[3] = np.nan
    return Sample(id="tmpl:A", sequence="GMKTAY", ca=ca, residue_ids=[str(i) for i in range(1, 7)],
                  source="t.pdb", split="train")


def test_features_match_hand_calculation():
    db = T.TemplateDatabase("mem", "0" * 64, [_line_template()])
    # query MKSAYW: M K S A Y aligned to template 1..5, W unaligned
    hit = T.TemplateHit(target=0, target_id="tmpl:A", identity=0.8, evalue=1e-5, bits=30.0, coverage=4 / 6,
                        runs=[[0, 1, 5]])
    f = T.template_features("MKSAYW", [hit], db, k=2)
    assert f["template_mask"].tolist() == [True, False]
    assert f["aligned"][0].tolist() == [True, True, True, True, True, False]
    assert f["identical"][0].tolist() == [True, True, False, True, True, False]    # S vs T
    assert f["similar"][0].tolist() == [True, True, True, True, True, False]      # BLOSUM62(S, T) = +1
    assert f["aatype"][0].tolist() == [ALLOWED_AA.index(c) for c in "MKTAY"] + [T.GAP]
    # pairs: query 0,1,3,4 -> template 1,2,4,5 (query 2 -> template 3 has no Cα)
    want = {(0, 1): 3.8, (0, 3): 11.4, (0, 4): 15.2, (1, 3): 7.6, (1, 4): 11.4, (3, 4): 3.8}
    expect_bin = {3.8: 4, 7.6: 12, 11.4: 19, 15.2: 27}      # bin b: 2 + 0.5 (b - 1) < d <= 2 + 0.5 b
    for (i, j), d in want.items():
        for a, b in ((i, j), (j, i)):
            assert f["pair_mask"][0, a, b]
            assert f["dist_A"][0, a, b] == pytest.approx(d, abs=1e-5)
            assert f["dist_bin"][0, a, b] == expect_bin[d]
    assert f["pair_mask"][0].sum() == 2 * len(want)           # nothing else: not residue 2, 5, the diagonal
    assert not f["pair_mask"][1].any() and not f["aligned"][1].any()
    assert f["identity"].tolist() == pytest.approx([0.8, 0.0]) and f["coverage"][0] == pytest.approx(4 / 6)
    # the alignment helper: query MKSAY against the template covers 4 of 5 residues with a Cα
    runs, cov = T.align_template("MKTAY", _line_template())
    assert runs == [[0, 1, 5]] and cov == pytest.approx(4 / 5)


def test_crop_is_the_block_of_the_whole_chain(demo, train_db):
    q = demo["test"].samples[0]
    hits = T.select_templates(T.search_templates([q], train_db)[q.id], 4)
    assert len(hits) == 4
    full = T.template_features(q.sequence, hits, train_db, k=4)
    assert full["pair_mask"].any()
    for s, e in ((0, 40), (37, 101), (len(q) - 50, len(q))):
        part = T.template_features(q.sequence, hits, train_db, k=4, crop=(s, e))
        ref = T.crop_features(full, s, e)
        assert part.keys() == ref.keys()
        for key in part:
            np.testing.assert_array_equal(part[key], ref[key], err_msg=key)
    with pytest.raises(ValueError, match="crop"):
        T.template_features(q.sequence, hits, train_db, crop=(0, len(q) + 1))


def test_stack_pads_with_no_template():
    db = T.TemplateDatabase("mem", "0" * 64, [_line_template()])
    hit = T.TemplateHit(0, "tmpl:A", 0.8, 1e-5, 30.0, 0.5, runs=[[0, 1, 5]])
    batch = T.stack_features([T.template_features("MKSAY", [hit], db, k=2), T.empty_features(3, 2)], 6)
    assert batch["dist_bin"].shape == (2, 2, 6, 6) and batch["aligned"].shape == (2, 2, 6)
    assert batch["pair_mask"][0, 0, :5, :5].sum() == 12 and not batch["pair_mask"][0, :, 5].any()
    assert not batch["template_mask"][1].any() and (batch["aatype"][0, 0, 5] == T.GAP)


def test_no_hit_path(train_db):
    q = Sample(id="nohit:A", sequence="W" * 60, ca=np.zeros((60, 3)), residue_ids=[str(i) for i in range(60)],
               source="", split="test")
    found = T.search_templates([q], train_db)[q.id]
    assert found.hits == []
    f = T.template_features(q.sequence, T.select_templates(found, 4), train_db, k=4)
    ref = T.empty_features(60, 4)
    for key in ref:
        np.testing.assert_array_equal(f[key], ref[key])
    emb = TemplatePairEmbedding(TemplateEmbedConfig(templates=4, template_dim=8), pair_dim=6)
    with torch.no_grad():
        out = emb(**template_tensors(T.stack_features([f], 60)))
        want = emb.out(emb.no_template)
    assert out.shape == (1, 60, 60, 6)
    torch.testing.assert_close(out, want.expand_as(out))


# -- embedding -------------------------------------------------------------------------------------------------
def _random_batch(B=2, K=3, L=9, seed=0):
    rng = np.random.default_rng(seed)
    feats = []
    for _ in range(B):
        f = T.empty_features(L, K)
        for k in range(K - 1):                 # the last slot stays a padding template
            al = rng.random(L) < 0.8
            f["aligned"][k] = al
            f["identical"][k] = al & (rng.random(L) < 0.5)
            f["similar"][k] = f["identical"][k] | (al & (rng.random(L) < 0.3))
            f["aatype"][k] = np.where(al, rng.integers(0, 25, L), T.GAP)
            pm = al[:, None] & al[None, :]
            np.fill_diagonal(pm, False)
            d = rng.uniform(3, 25, (L, L))
            d = (d + d.T) / 2
            f["pair_mask"][k] = pm
            f["dist_A"][k] = np.where(pm, d, 0)
            f["dist_bin"][k] = np.where(pm, np.searchsorted(T.DEFAULT_BIN_EDGES, d), 0)
            f["identity"][k], f["coverage"][k] = rng.random(), al.mean()
            f["significance"][k] = T.hit_significance(10 ** rng.uniform(-12, 1))
            f["template_mask"][k] = True
        feats.append(f)
    return template_tensors(T.stack_features(feats, L))


def test_embedding_shape_symmetry_and_masking():
    torch.manual_seed(0)
    emb = TemplatePairEmbedding(TemplateEmbedConfig(templates=3, template_dim=8, template_layers=2), pair_dim=5)
    batch = _random_batch()
    with torch.no_grad():
        out = emb(**batch)
        assert out.shape == (2, 9, 9, 5)
        torch.testing.assert_close(out, out.transpose(1, 2))
        # garbage in the masked (padding) slot changes nothing
        noisy = {k: v.clone() for k, v in batch.items()}
        noisy["dist_bin"][:, 2] = 17
        noisy["pair_mask"][:, 2] = True
        noisy["aatype"][:, 2] = 3
        noisy["aligned"][:, 2] = True
        noisy["identity"][:, 2] = 0.9
        torch.testing.assert_close(emb(**noisy), out)
        # and a real template does change the output where it covers pairs
        fewer = {k: v.clone() for k, v in batch.items()}
        fewer["template_mask"][:, 1] = False
        assert not torch.allclose(emb(**fewer), out)
        # pairs no template covers take the learned no-template value
        none = ~(batch["pair_mask"] & batch["template_mask"][:, :, None, None]).any(1)
        assert none.any()
        torch.testing.assert_close(out[none], emb.out(emb.no_template).expand(int(none.sum()), 5))


def _dense_reference(emb, dist_bin, pair_mask, aligned, identical, similar, aatype, identity, coverage,
                     template_mask, significance, **_):
    """The embedding written out on the dense [B, K, L, L, w] tensor (the module docstring's formula)."""
    pm = pair_mask & template_mask[:, :, None, None]
    pmf = pm.float()
    res = emb.aatype(aatype.long()) + emb.columns(torch.stack([aligned, identical, similar], -1).float())
    per_hit = [identity, coverage] + ([significance] if emb.cfg.template_evalue else [])
    hit = emb.hit(torch.stack(per_hit, -1).float())
    x = (emb.dist(dist_bin.long()) * pmf[..., None] + emb.pair_mask(pm.long())
         + res[:, :, :, None] + res[:, :, None, :] + hit[:, :, None, None])
    for block in emb.blocks:
        x = block(x)
    x = emb.norm(x)
    weight = pmf.sum(1)
    mean = (x * pmf[..., None]).sum(1) / weight.clamp(min=1)[..., None]
    return emb.out(torch.where((weight > 0)[..., None], mean, emb.no_template))


@pytest.mark.parametrize("evalue", [True, False])
def test_embedding_on_covered_pairs_equals_the_dense_formula(evalue):
    torch.manual_seed(1)
    emb = TemplatePairEmbedding(TemplateEmbedConfig(templates=3, template_dim=8, template_layers=2,
                                                    template_evalue=evalue), pair_dim=5)
    batch = _random_batch()
    out = emb(**batch)
    ref = _dense_reference(emb, **batch)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.autograd.grad(out.square().sum(), list(emb.parameters()), allow_unused=True)
    g_ref = torch.autograd.grad(ref.square().sum(), list(emb.parameters()), allow_unused=True)
    for a, b in zip(g, g_ref):
        if b is None:
            continue
        torch.testing.assert_close(a if a is not None else torch.zeros_like(b), b, rtol=1e-4, atol=1e-5)


def test_hit_significance_by_hand():
    # min(max(-log10 E, -1), 10) / 10
    for e, want in ((10.0, -0.1), (100.0, -0.1), (1.0, 0.0), (1e-3, 0.3), (1e-10, 1.0), (1e-50, 1.0), (0.0, 1.0)):
        assert T.hit_significance(e) == pytest.approx(want, abs=1e-12), e


def test_embedding_reads_the_evalue_and_refuses_features_without_it():
    torch.manual_seed(0)
    emb = TemplatePairEmbedding(TemplateEmbedConfig(templates=3, template_dim=8), pair_dim=5)
    batch = _random_batch()
    with torch.no_grad():
        out = emb(**batch)
        other = emb(**{**batch, "significance": batch["significance"] * 0 + 1.0})
    assert not torch.allclose(out, other)                 # the E-value changes the term
    with pytest.raises(ValueError, match="significance"):
        emb(**{k: v for k, v in batch.items() if k != "significance"})
    old = TemplatePairEmbedding(TemplateEmbedConfig(templates=3, template_dim=8, template_evalue=False), 5)
    assert old.hit.in_features == 2                       # a run stored before the E-value feature
    old(**{k: v for k, v in batch.items() if k != "significance"})


def test_embedding_gradients_reach_every_parameter():
    torch.manual_seed(0)
    emb = TemplatePairEmbedding(TemplateEmbedConfig(templates=3, template_dim=8, template_layers=2), pair_dim=5)
    out = emb(**_random_batch())
    (out ** 2).sum().backward()
    for name, p in emb.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# -- configuration ------------------------------------------------------------------------------------------------
def test_options_are_flags_with_defaults_and_checked():
    from proteinmtp.heads import HeadConfig

    p = argparse.ArgumentParser()
    add_flags(p, T.TemplateOptions)
    add_flags(p, TemplateEmbedConfig)
    args = p.parse_args(["--template_max_identity", "0.3", "--template_dim", "16", "--templates", "2"])
    opts = T.TemplateOptions(**from_args(args, T.TemplateOptions))
    assert opts == T.TemplateOptions(template_max_identity=0.3)
    cfg = TemplateEmbedConfig(**from_args(args, TemplateEmbedConfig))
    assert (cfg.templates, cfg.template_dim, cfg.template_layers) == (2, 16, TemplateEmbedConfig().template_layers)
    with pytest.raises(T.TemplateError, match="--template_drop_own_cluster"):
        T.TemplateOptions(template_drop_own_cluster=1.5).validate()
    with pytest.raises(ValueError, match="--templates"):
        TemplateEmbedConfig(templates=-1).validate()
    with pytest.raises(ValueError, match="--template_dim"):
        TemplateEmbedConfig(template_dim=0).validate()
    np.testing.assert_array_equal(TemplateEmbedConfig().bin_edges(), HeadConfig().bin_edges())
    np.testing.assert_array_equal(T.DEFAULT_BIN_EDGES, HeadConfig().bin_edges())
    from types import SimpleNamespace

    old_head = SimpleNamespace(pair_dim=64, n_bins=42)                     # a head config without the fields
    assert TemplateEmbedConfig.from_head(old_head).templates == 0
    assert TemplateEmbedConfig.from_head(HeadConfig(templates=3)).templates == 3


def test_options_select_applies_training_rules_only_in_training(antibody_queries, train_found):
    q = antibody_queries[0]
    opts = T.TemplateOptions(template_max_identity=1.0, template_drop_own_cluster=1.0, template_dropout=0.0)
    rng = np.random.default_rng(0)
    at_eval = opts.select(train_found[q.id], 4)
    assert any(h.target_cluster == q.cluster for h in at_eval)
    assert all(h.target_cluster != q.cluster for h in opts.select(train_found[q.id], 4, training=True, rng=rng))
    assert T.TemplateOptions(template_dropout=1.0).select(train_found[q.id], 4, training=True, rng=rng) == []


def test_provider_builds_the_crop_of_the_selected_templates(demo, train_db):
    q = demo["test"].samples[0]
    found = T.search_templates([q], train_db)
    prov = T.TemplateProvider(train_db, found, k=3)
    f = prov.features(q.id, q.sequence, (10, 60))
    ref = T.template_features(q.sequence, T.select_templates(found[q.id], 3), train_db, k=3, crop=(10, 60))
    for key in ref:
        np.testing.assert_array_equal(f[key], ref[key], err_msg=key)
    assert f["dist_bin"].shape == (3, 50, 50)
    with pytest.raises(ValueError, match="was not searched"):
        prov.features("other:A", q.sequence)
    with pytest.raises(ValueError, match="another sequence"):
        prov.features(q.id, q.sequence[:-1])
    stale = T.TemplateProvider(replace(train_db, fingerprint="f" * 64), found, k=3)
    with pytest.raises(ValueError, match="fingerprint"):
        stale.features(q.id, q.sequence)


def test_moved_or_changed_database_is_one_clear_line(tmp_path, demo):
    path = _db_file(tmp_path, demo["train"].samples[:10])
    fp = T.TemplateDatabase.load(path).fingerprint
    assert T.TemplateDatabase.load(path, expect_fingerprint=fp).fingerprint == fp
    _db_file(tmp_path, demo["train"].samples[:9])
    with pytest.raises(T.TemplateError) as e:
        T.TemplateDatabase.load(path, expect_fingerprint=fp)
    assert "\n" not in str(e.value) and "changed" in str(e.value) and "--template_db" in str(e.value)
    path.rename(tmp_path / "elsewhere.json")
    with pytest.raises(T.TemplateError, match="not found .*--template_db"):
        T.TemplateDatabase.load(path, expect_fingerprint=fp)
