"""Residue layouts: exactly one feature position per residue, at the right token, whatever the tokenizer."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from proteinmtp.constants import ALLOWED_AA
from proteinmtp.layouts import KIND_PLACEHOLDER, KIND_SEP, KIND_VOCAB, LayoutError, ResidueEncoder
from proteinmtp.model import ModelSpec, build_model
from proteinmtp.tiny import residue_vocab, write_tiny


@pytest.fixture(scope="module")
def esm_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_esm")
    write_tiny(out, "esm", hidden_size=32, num_layers=2, num_heads=2)
    return out


def test_positions_by_hand(tiny, esm_dir):
    v = residue_vocab()
    ids = [v[c] for c in "ACDXO"]
    tok = AutoTokenizer.from_pretrained(tiny)          # decoder: no bos token
    e = ResidueEncoder(tok, "direct").encode("ACDXO")
    assert e.input_ids == ids and e.residue_pos == [0, 1, 2, 3, 4] and set(e.token_kind) == {KIND_VOCAB}
    e = ResidueEncoder(tok, "echo").encode("ACDXO")
    assert e.input_ids[:5] == ids and e.input_ids[6:] == ids and e.token_kind[5] == KIND_SEP
    assert e.residue_pos == [6, 7, 8, 9, 10]
    e = ResidueEncoder(tok, "placeholder").encode("ACDXO")
    assert e.input_ids[:5] == ids and e.token_kind[5] == KIND_SEP
    assert e.token_kind[6:] == [KIND_PLACEHOLDER] * 5 and e.residue_pos == [6, 7, 8, 9, 10]
    etok = AutoTokenizer.from_pretrained(esm_dir)          # encoder: <cls> r.. <eos>
    e = ResidueEncoder(etok, "direct", is_encoder=True).encode("ACDXO")
    assert e.input_ids == [v["<cls>"]] + ids + [v["<eos>"]] and e.residue_pos == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("layout", ["placeholder", "echo", "direct"])
def test_collate_one_feature_per_residue(tiny, layout):
    enc = ResidueEncoder(AutoTokenizer.from_pretrained(tiny), layout)
    seqs = ["ACDEFGHIK", "MK", ALLOWED_AA]
    b = enc.collate(seqs)
    assert b["residue_mask"].sum(1).tolist() == [len(s) for s in seqs]
    for i, s in enumerate(seqs):
        pos = b["residue_pos"][i, : len(s)]
        assert len(set(pos.tolist())) == len(s)
        assert b["attention_mask"][i].sum() == enc.n_tokens(len(s))
        if layout != "placeholder":   # the feature token is the residue's own letter
            assert b["input_ids"][i, pos].tolist() == [residue_vocab()[c] for c in s]
        else:
            assert (b["token_kind"][i, pos] == KIND_PLACEHOLDER).all()


def test_bpe_merges_do_not_change_residue_count():
    # A byte-level-like BPE that merges "AC" and "ACD": text tokenisation gives fewer tokens than residues;
    # the layout still yields one id per residue, built from the vocabulary.
    vocab = {"<pad>": 0, **{c: i + 1 for i, c in enumerate(ALLOWED_AA)}}
    vocab.update({"AC": 26, "ACD": 27})
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[("A", "C"), ("AC", "D")]))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>")
    assert len(tok("ACDACD", add_special_tokens=False)["input_ids"]) == 2
    e = ResidueEncoder(tok, "direct").encode("ACDACD")
    assert e.input_ids == [vocab[c] for c in "ACDACD"] and len(e.residue_pos) == 6


def test_missing_letter_and_bad_sequence_fail_clearly(tiny):
    vocab = {"<pad>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate("ACDEFGHIKLMNPQRSTVWY")}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>")
    with pytest.raises(LayoutError, match="XBZUO"):
        ResidueEncoder(tok, "echo")
    enc = ResidueEncoder(AutoTokenizer.from_pretrained(tiny), "echo")
    with pytest.raises(LayoutError, match="'a'"):
        enc.encode("ACaD")
    with pytest.raises(LayoutError, match="unknown residue layout"):
        ResidueEncoder(AutoTokenizer.from_pretrained(tiny), "sideways")


def _features(model, seqs):
    b = model.encoder.collate(seqs)
    with torch.no_grad():
        return model.residue_features(b["input_ids"], b["attention_mask"], b["token_kind"], b["residue_pos"])


@pytest.mark.parametrize("layout", ["placeholder", "echo", "direct"])
def test_feature_visibility_matches_layout(tiny, layout):
    """direct is causal (residue i's feature ignores residues > i); echo/placeholder see the whole chain.
    Also: padding a sequence in a batch does not change its features."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(base_model=str(tiny), layout=layout, finetune="frozen")).eval()
    a, b = "MKTAYIAKQR", "MKTAYIAKWW"                 # differ only in the last two residues
    fa, fb = _features(model, [a]), _features(model, [b])
    assert fa.shape == (1, 10, 32)
    early = (fa[0, :8] - fb[0, :8]).abs().max().item()
    if layout == "direct":
        assert early < 1e-5
    else:
        assert early > 1e-3
    padded = _features(model, [a, a + "GGGGGG"])
    assert torch.allclose(padded[0, :10], fa[0], atol=1e-5)


def test_esm_encoder_sees_whole_sequence_in_direct(esm_dir):
    torch.manual_seed(0)
    model = build_model(ModelSpec(base_model=str(esm_dir), layout="direct", finetune="frozen")).eval()
    assert model.spec.is_encoder
    fa, fb = _features(model, ["MKTAYIAKQR"]), _features(model, ["MKTAYIAKWW"])
    assert (fa[0, :8] - fb[0, :8]).abs().max().item() > 1e-3


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_bert")
    write_tiny(out, "bert", hidden_size=32, num_layers=2, num_heads=2, max_positions=40)
    return out


def test_uncased_vocabulary_maps_letters_to_lower_case(bert_dir):
    """An uncased WordPiece vocabulary (BERT/MiniLM) has 'a', not 'A': residues map to the lower-case ids;
    the encoder lays BERT out as [CLS] r_1 .. r_L [SEP] (no eos token: the sep token ends the sequence)."""
    from proteinmtp.layouts import residue_letter_case, residue_token_ids
    from proteinmtp.tiny import bert_vocab

    tok = AutoTokenizer.from_pretrained(bert_dir)
    assert type(tok).__name__ == "BertTokenizer" and tok.eos_token_id is None
    assert tok.convert_tokens_to_ids("A") == tok.unk_token_id          # upper case is not in the vocabulary
    v = bert_vocab()
    assert residue_letter_case(tok) == "lower"
    ids = residue_token_ids(tok)
    assert ids == {c: v[c.lower()] for c in ALLOWED_AA} and len(set(ids.values())) == 25
    enc = ResidueEncoder(tok, "direct", is_encoder=True)
    e = enc.encode("MKAO")
    assert enc.letter_case == "lower"
    assert e.input_ids == [v["[CLS]"], v["m"], v["k"], v["a"], v["o"], v["[SEP]"]] and e.residue_pos == [1, 2, 3, 4]
    # a cased vocabulary keeps upper case even if it also has lower-case letters
    both = {"<pad>": 0, **{c: i + 1 for i, c in enumerate(ALLOWED_AA)}, **{c.lower(): i + 30 for i, c in enumerate(ALLOWED_AA)}}
    tb = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab=both, unk_token="<pad>")),
                                 pad_token="<pad>")
    assert residue_letter_case(tb) == "upper" and ResidueEncoder(tb, "direct").encode("AC").input_ids == [1, 2]
    # asked for the wrong case explicitly (a run recorded 'upper' but the tokenizer is uncased): clear error
    with pytest.raises(LayoutError, match="upper-case vocabulary token"):
        ResidueEncoder(tok, "direct", is_encoder=True, letter_case="upper")


def test_mixed_case_vocabulary_is_refused():
    """Letters must resolve in one case: 20 upper + 5 lower (XBZUO) is not a residue vocabulary."""
    vocab = {"<pad>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate("ACDEFGHIKLMNPQRSTVWY")},
             **{c: i + 40 for i, c in enumerate("xbzuo")}}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>")),
                                  pad_token="<pad>", unk_token="<unk>")
    with pytest.raises(LayoutError, match="'XBZUO'.*tried upper and lower"):
        ResidueEncoder(tok, "direct")


def test_bert_backbone_records_case_and_sees_whole_sequence(bert_dir):
    torch.manual_seed(0)
    model = build_model(ModelSpec(base_model=str(bert_dir), layout="direct", finetune="frozen")).eval()
    assert model.spec.is_encoder and model.spec.residue_case == "lower"
    fa, fb = _features(model, ["MKTAYIAKQR"]), _features(model, ["MKTAYIAKWW"])
    assert fa.shape == (1, 10, 32)
    assert (fa[0, :8] - fb[0, :8]).abs().max().item() > 1e-3     # bidirectional
    # our ids equal what BERT's own tokenizer makes of the lower-case, space-separated letters
    tok = AutoTokenizer.from_pretrained(bert_dir)
    own = tok(" ".join("MKTAYIAKQR"))["input_ids"]
    assert model.encoder.collate(["MKTAYIAKQR"])["input_ids"][0].tolist() == own
