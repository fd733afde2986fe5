"""Tiny random-initialised backbones with a character-level residue tokenizer, for tests and the demo.

The directory this writes is loaded exactly like a real checkpoint (``AutoModel.from_pretrained(dir)``,
``AutoTokenizer.from_pretrained(dir)``), so tests exercise the same code path as a Hub model.

    python -m proteinmtp.tiny runs/tiny_qwen2                  # Qwen2 decoder, hidden 128, 4 layers
    python -m proteinmtp.tiny runs/tiny_esm --arch esm         # ESM-2-style encoder
    python -m proteinmtp.tiny runs/tiny_bert --arch bert       # BERT encoder, uncased WordPiece (like MiniLM)
    python -m proteinmtp.tiny runs/tiny.gguf --arch qwen2      # the Qwen2 decoder as one GGUF file (Q8_0 + F32)

Transformers 5 pitfall: ``AutoTokenizer`` on a directory whose config says ``qwen2`` ignores the
``tokenizer_class`` we write (qwen2 is in transformers' MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS) and
rebuilds ``Qwen2Tokenizer``: a byte-level BPE over our vocabulary with Qwen's pre-tokenizer. Upper-case
residue letters survive that (a byte-level byte for an ASCII letter is the letter itself, and we ship no
merges), but text through it is not what we wrote. So ``proteinmtp.layouts`` never tokenises text: it maps
each residue letter to its id through the vocabulary (``convert_tokens_to_ids``), which is exact for any
class AutoTokenizer picks. ``test_tiny.py`` checks every letter both ways.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from proteinmtp.config import HelpFormatter
from proteinmtp.constants import ALLOWED_AA
from proteinmtp.fileio import atomic_write

# Special tokens of the character-level tokenizer, in id order; residue letters follow.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<sep>", "<cls>", "<unk>", "<mask>")
TOKENIZER_CLASS = "TokenizersBackend"
ARCHS = ("qwen2", "esm", "bert")
# The bert arch mimics an uncased WordPiece vocabulary (BERT, MiniLM): BERT's special tokens, the residue
# letters in lower case only, and a few word pieces so letters are not the only tokens.
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BERT_EXTRA_TOKENS = ("the", "##s", "##a", "protein")


def residue_vocab() -> dict[str, int]:
    """Vocabulary of the character-level tokenizer: special tokens (ids 0..5) then ALLOWED_AA letters."""
    tokens = list(SPECIAL_TOKENS) + list(ALLOWED_AA)
    return {tok: i for i, tok in enumerate(tokens)}


def bert_vocab() -> dict[str, int]:
    """Vocabulary of the tiny uncased BERT tokenizer: [PAD] [UNK] [CLS] [SEP] [MASK], a..o (ALLOWED_AA order,
    lower case), then a few word pieces."""
    tokens = list(BERT_SPECIAL_TOKENS) + [c.lower() for c in ALLOWED_AA] + list(BERT_EXTRA_TOKENS)
    return {tok: i for i, tok in enumerate(tokens)}


def build_bert_tokenizer():
    """Uncased WordPiece ``BertTokenizer`` over ``bert_vocab()`` (lower-cases text, like MiniLM's)."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab=bert_vocab(), do_lower_case=True, model_max_length=512)


def build_tokenizer():
    """Character-level tokenizer: every residue letter (incl. X B Z U O) is exactly one token.

    Returns a ``transformers.PreTrainedTokenizerFast`` (TokenizersBackend in transformers 5).
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = residue_vocab()
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # One "word" per character: isolate every single character, drop whitespace.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        sep_token="<sep>",
        cls_token="<cls>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=4096,
    )


def tiny_config(arch: str = "qwen2", *, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                max_positions: int = 2048):
    """A small random-init config of the given family (vocabulary = residue_vocab(); bert: bert_vocab()).

    ``max_positions``: tokens the backbone takes (bert: learned absolute positions, a hard limit).
    """
    vocab = residue_vocab()
    if arch == "bert":
        from transformers import BertConfig

        bv = bert_vocab()
        return BertConfig(
            vocab_size=len(bv), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, max_position_embeddings=max_positions,
            pad_token_id=bv["[PAD]"], type_vocab_size=2, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        )
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
            max_position_embeddings=max_positions, pad_token_id=vocab["<pad>"], eos_token_id=vocab["<eos>"],
            bos_token_id=None, tie_word_embeddings=True, use_cache=False,
        )
    if arch == "esm":
        from transformers import EsmConfig

        return EsmConfig(
            vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
            num_hidden_layers=num_layers, num_attention_heads=num_heads,
            max_position_embeddings=max_positions + 2, position_embedding_type="rotary",
            pad_token_id=vocab["<pad>"], mask_token_id=vocab["<mask>"], token_dropout=False,
            emb_layer_norm_before=False,
        )
    raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")


def write_tiny(out_dir: str | Path, arch: str = "qwen2", *, hidden_size: int = 128, num_layers: int = 4,
               num_heads: int = 4, seed: int = 0, max_positions: int = 2048) -> Path:
    """Write a tiny random-initialised backbone + tokenizer to ``out_dir`` (safetensors); return the path."""
    import torch
    from transformers import AutoModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_config(arch, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                         max_positions=max_positions)
    model = AutoModel.from_config(config)
    model.save_pretrained(out)
    if arch == "bert":            # a real BertTokenizer, loaded back by its own class (as MiniLM's is)
        build_bert_tokenizer().save_pretrained(out)
        return out
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out)
    # Pin the tokenizer class so AutoTokenizer never substitutes the model family's BPE tokenizer.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = TOKENIZER_CLASS
    atomic_write(cfg_path, json.dumps(cfg, indent=2))
    return out


GGUF_QUANT = "Q8_0"      # storage type of the tiny GGUF's 2-D weight matrices (norms and biases stay F32)


def write_tiny_gguf(path: str | Path, *, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                    seed: int = 0, max_positions: int = 2048, quant: str = GGUF_QUANT) -> Path:
    """Write the tiny random Qwen2 decoder as ONE GGUF file, the way llama.cpp's converter lays one out.

    The ``gguf`` package's writer, with its own tensor-name map for qwen2 (``blk.N.attn_q.weight`` ...);
    2-D weight matrices stored as ``quant`` (Q8_0: blocks of 32 int8 with an fp16 scale; ``"F32"`` to
    store them exactly), 1-D tensors as F32. It carries its tokenizer as GGUF metadata: a byte-level BPE
    (``tokenizer.ggml.model = gpt2``) over ``residue_vocab()`` with no merges (scores only), so every residue letter is
    one token. No output matrix: tied embeddings, as in Qwen2.5-0.5B. Returns the path.
    """
    import gguf
    import numpy as np
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    config = tiny_config("qwen2", hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                         max_positions=max_positions)
    model = AutoModel.from_config(config)
    qtype = gguf.GGMLQuantizationType[quant]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, num_layers)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    w = gguf.GGUFWriter(str(tmp), "qwen2")
    w.add_name("proteinmtp-tiny-qwen2")
    w.add_block_count(num_layers)
    w.add_context_length(max_positions)
    w.add_embedding_length(hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(num_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "Q8_0" else gguf.LlamaFileType.ALL_F32)
    vocab = residue_vocab()
    tokens = sorted(vocab, key=vocab.get)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_scores([0.0] * len(tokens))     # no merges: the loader derives none from single letters
    w.add_eos_token_id(vocab["<eos>"])
    w.add_pad_token_id(vocab["<pad>"])
    w.add_unk_token_id(vocab["<unk>"])
    for name, t in model.state_dict().items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ValueError(f"no GGUF name for {name}")
        a = t.detach().float().numpy()
        if a.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(gname, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gname, np.ascontiguousarray(a, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("out_dir", help="directory to write the backbone and tokenizer into (a path ending in .gguf: "
                                  "one GGUF file instead)")
    p.add_argument("--arch", choices=ARCHS, default="qwen2", help="backbone family")
    p.add_argument("--hidden_size", type=int, default=128, help="hidden size (model width)")
    p.add_argument("--num_layers", type=int, default=4, help="number of transformer layers")
    p.add_argument("--num_heads", type=int, default=4, help="attention heads per layer")
    p.add_argument("--seed", type=int, default=0, help="random seed of the initialisation")
    p.add_argument("--max_positions", type=int, default=2048,
                   help="tokens the backbone takes (max_position_embeddings; a hard limit for bert)")
    args = p.parse_args(argv)
    if args.hidden_size % args.num_heads:
        print(f"error: --hidden_size {args.hidden_size} is not divisible by --num_heads {args.num_heads}",
              file=sys.stderr)
        return 2
    if args.out_dir.endswith(".gguf"):
        if args.arch != "qwen2":
            print("error: a .gguf output is written for --arch qwen2 only", file=sys.stderr)
            return 2
        out = write_tiny_gguf(args.out_dir, hidden_size=args.hidden_size, num_layers=args.num_layers,
                              num_heads=args.num_heads, seed=args.seed, max_positions=args.max_positions)
        print(f"wrote tiny qwen2 GGUF (weights {GGUF_QUANT}, residue tokenizer) to {out}")
        return 0
    out = write_tiny(args.out_dir, args.arch, hidden_size=args.hidden_size, num_layers=args.num_layers,
                     num_heads=args.num_heads, seed=args.seed, max_positions=args.max_positions)
    print(f"wrote tiny {args.arch} backbone + residue tokenizer to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
