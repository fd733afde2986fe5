"""Tiny backbones: loadable through the Auto* classes, and every residue letter is exactly the expected token."""

from __future__ import annotations

import pytest
from transformers import AutoConfig, AutoModel, AutoTokenizer

from proteinmtp.constants import ALLOWED_AA
from proteinmtp.tiny import SPECIAL_TOKENS, main, residue_vocab, write_tiny


@pytest.fixture(scope="module", params=["qwen2", "esm"])
def tiny_dir(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"tiny_{request.param}")
    write_tiny(out, request.param)
    return request.param, out


def test_vocab_layout_by_hand():
    vocab = residue_vocab()
    assert len(vocab) == len(SPECIAL_TOKENS) + 25
    assert [vocab[c] for c in "ACX"] == [6, 7, 6 + 20]      # specials take ids 0..5, then ALLOWED_AA order
    assert vocab["O"] == len(vocab) - 1


def test_auto_classes_load_and_every_letter_maps(tiny_dir):
    arch, path = tiny_dir
    cfg = AutoConfig.from_pretrained(path)
    assert cfg.model_type == arch and cfg.hidden_size == 128 and cfg.num_hidden_layers == 4
    model = AutoModel.from_pretrained(path)
    assert type(model).__name__ == {"qwen2": "Qwen2Model", "esm": "EsmModel"}[arch]
    tok = AutoTokenizer.from_pretrained(path)
    vocab = residue_vocab()
    # vocabulary lookup (what proteinmtp.layouts uses), both directions
    for letter in ALLOWED_AA:
        assert tok.convert_tokens_to_ids(letter) == vocab[letter], letter
        assert tok.convert_ids_to_tokens(vocab[letter]) == letter
    # text tokenisation of all 25 letters as well (transformers 5 may swap in Qwen2Tokenizer for qwen2:
    # upper-case letters must still come out one token each, in order, none dropped)
    ids = tok(ALLOWED_AA, add_special_tokens=False)["input_ids"]
    assert ids == [vocab[c] for c in ALLOWED_AA]
    assert tok.pad_token_id == vocab["<pad>"]


def test_cli_writes_loadable_dir(tmp_path, capsys):
    assert main([str(tmp_path / "m"), "--arch", "qwen2", "--hidden_size", "32", "--num_layers", "1",
                 "--num_heads", "2"]) == 0
    assert AutoConfig.from_pretrained(tmp_path / "m").hidden_size == 32
    assert main([str(tmp_path / "bad"), "--hidden_size", "30", "--num_heads", "4"]) == 2
    assert "not divisible" in capsys.readouterr().err


def test_bert_arch_is_uncased_wordpiece(tmp_path):
    from proteinmtp.tiny import bert_vocab

    write_tiny(tmp_path / "b", "bert", hidden_size=32, num_layers=1, num_heads=2, max_positions=64)
    cfg = AutoConfig.from_pretrained(tmp_path / "b")
    assert cfg.model_type == "bert" and cfg.max_position_embeddings == 64
    assert type(AutoModel.from_pretrained(tmp_path / "b")).__name__ == "BertModel"
    tok = AutoTokenizer.from_pretrained(tmp_path / "b")
    v = bert_vocab()
    assert tok(ALLOWED_AA, add_special_tokens=False)["input_ids"] != [v[c.lower()] for c in ALLOWED_AA]  # one word
    assert tok(" ".join(ALLOWED_AA), add_special_tokens=False)["input_ids"] == [v[c.lower()] for c in ALLOWED_AA]
    assert tok.convert_tokens_to_ids("A") == tok.unk_token_id and tok.cls_token_id == v["[CLS]"]
