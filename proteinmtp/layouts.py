"""Residue-token layouts: how one backbone hidden state per residue is obtained (docs/contracts.md#residue-layouts).

    placeholder : [bos] r_1 .. r_L <sep> P_1 .. P_L   features at P_i  (every P_i sees the whole sequence)
    echo        : [bos] r_1 .. r_L <sep> r_1 .. r_L   features at the second copy
    direct      : [bos] r_1 .. r_L [eos]              features at r_i  (causal: r_i sees only <= i;
                                                       natural for a bidirectional encoder such as ESM-2)

Residue ids are built per residue from the tokenizer's vocabulary (one token per letter), never by
tokenising the sequence as text, so BPE merges cannot change the number of tokens. ``<sep>`` and the
placeholder ``P`` are not vocabulary tokens: their positions are marked in ``token_kind`` and the model
injects learned vectors there through ``inputs_embeds`` (the embedding matrix stays frozen).
``[bos]`` is the cls token for encoders (ESM: <cls>; BERT: [CLS]), the bos token for decoders that have one
(Llama: <s>; Qwen: none), and ``[eos]`` (direct layout, encoders only) its eos token, or its sep token when
it has no eos (BERT: [SEP]) -- the way each encoder was pre-trained. BERT's token_type_ids are left to the
model's default (all zeros: one segment).

Uncased vocabularies (BERT, MiniLM WordPiece) spell the letters in lower case: the residue letters are
looked up in whichever case resolves all of them (``residue_letter_case``); sequences stay upper case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proteinmtp.constants import ALLOWED_AA

LAYOUTS = ("placeholder", "echo", "direct")

# token_kind values: which positions get a learned vector instead of the vocabulary embedding.
KIND_VOCAB = 0
KIND_SEP = 1
KIND_PLACEHOLDER = 2


class LayoutError(ValueError):
    """A tokenizer or sequence cannot be laid out one token per residue."""


LETTER_CASES = ("upper", "lower")


def _letter_ids(tokenizer, letters: str) -> tuple[dict[str, int], list[str]]:
    """(letter -> id for the letters that are exactly one vocabulary token, letters that are not)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    ids: dict[str, int] = {}
    bad: list[str] = []
    for letter in letters:
        tid = tokenizer.convert_tokens_to_ids(letter)
        back = tokenizer.convert_ids_to_tokens(tid) if isinstance(tid, int) else None
        if not isinstance(tid, int) or (unk is not None and tid == unk) or back != letter:
            bad.append(letter)
        else:
            ids[letter] = tid
    return ids, bad


def residue_letter_case(tokenizer, letters: str = ALLOWED_AA) -> str:
    """'upper' if every residue letter is one vocabulary token as written (Qwen, Llama, ESM), else 'lower' if
    every lower-case letter is (uncased WordPiece: BERT, MiniLM); LayoutError naming the missing letters
    otherwise. All letters must resolve in the same case: a vocabulary is never mixed."""
    failed: dict[str, list[str]] = {}
    for case in LETTER_CASES:
        ids, bad = _letter_ids(tokenizer, letters if case == "upper" else letters.lower())
        if not bad:
            return case
        failed[case] = bad
    case = min(LETTER_CASES, key=lambda c: len(failed[c]))
    raise LayoutError(
        f"tokenizer {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '?')}) has no single "
        f"vocabulary token for residue letter(s) {''.join(failed[case])!r} (tried upper and lower case); "
        "ProteinMTP needs one token per residue. Use a backbone whose vocabulary contains the bare letters "
        "(Qwen/Llama/ESM upper case, uncased BERT/MiniLM lower case).")


def residue_token_ids(tokenizer, letters: str = ALLOWED_AA, case: str | None = None) -> dict[str, int]:
    """Map every residue letter (upper case, as in sequences) to its single vocabulary id.

    ``case`` ('upper' | 'lower', default: ``residue_letter_case``) is the spelling looked up in the
    vocabulary. Checks each id both ways (token -> id -> token), that ids are distinct and not the unknown
    token; fails clearly if a letter is not one token.
    """
    if case is None:
        case = residue_letter_case(tokenizer, letters)
    if case not in LETTER_CASES:
        raise LayoutError(f"residue letter case must be one of {', '.join(LETTER_CASES)}, got {case!r}")
    spelled = letters if case == "upper" else letters.lower()
    found, bad = _letter_ids(tokenizer, spelled)
    if bad:
        raise LayoutError(
            f"tokenizer {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '?')}) has no single "
            f"{case}-case vocabulary token for residue letter(s) {''.join(bad)!r}; ProteinMTP needs one token "
            "per residue.")
    ids = {letter: found[tok] for letter, tok in zip(letters, spelled)}
    if len(set(ids.values())) != len(ids):
        raise LayoutError(f"tokenizer maps different residue letters to the same id: {ids}")
    return ids


@dataclass
class EncodedSequence:
    """One sequence laid out as tokens. T = number of tokens, L = number of residues."""

    input_ids: list[int]      # [T] vocabulary ids (placeholder/sep positions hold pad_id, replaced later)
    token_kind: list[int]     # [T] KIND_VOCAB / KIND_SEP / KIND_PLACEHOLDER
    residue_pos: list[int]    # [L] index into the T tokens of each residue's feature vector


class ResidueEncoder:
    """Owns the token layout of a run: sequences -> padded tensors for the backbone.

    Args:
        tokenizer: any Hugging Face tokenizer whose vocabulary has the residue letters as tokens.
        layout: one of LAYOUTS.
        is_encoder: True for bidirectional encoders (ESM, BERT): [bos] is the cls token and the direct
            layout appends the eos token (ESM <eos>), or the sep token where there is no eos (BERT [SEP]).
        letter_case: 'upper' | 'lower' spelling of residue letters in the vocabulary; default: detected
            (``residue_letter_case``). A run records it and passes it back, so a changed tokenizer fails.
        max_tokens: positions the backbone takes (``backbone.backbone_max_tokens``), special tokens included;
            None = no limit. ``encode`` refuses a longer layout with a LayoutError naming both lengths.
    """

    def __init__(self, tokenizer, layout: str, *, is_encoder: bool = False, letter_case: str | None = None,
                 max_tokens: int | None = None):
        if layout not in LAYOUTS:
            raise LayoutError(f"unknown residue layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        self.layout = layout
        self.is_encoder = is_encoder
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.letter_case = letter_case or residue_letter_case(tokenizer)
        self.letter_ids = residue_token_ids(tokenizer, case=self.letter_case)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        # encoders start with their cls token (ESM <cls>); decoders with bos if they have one (Llama <s>)
        bos = getattr(tokenizer, "cls_token_id", None) if is_encoder else None
        if bos is None:
            bos = getattr(tokenizer, "bos_token_id", None)
        self.bos_id = None if bos is None else int(bos)
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            eos = getattr(tokenizer, "sep_token_id", None)     # BERT: [CLS] ... [SEP]
        self.eos_id = int(eos) if (is_encoder and eos is not None) else None

    # -- one sequence ---------------------------------------------------------------------------------
    def residue_ids(self, sequence: str) -> list[int]:
        """Vocabulary ids of the residues, one per letter; unknown letters raise LayoutError."""
        try:
            return [self.letter_ids[c] for c in sequence]
        except KeyError:
            bad = sorted({c for c in sequence if c not in self.letter_ids})
            raise LayoutError(f"sequence contains letter(s) {''.join(bad)!r} outside {ALLOWED_AA} "
                              "(upper-case one-letter codes only)") from None

    def n_tokens(self, length: int) -> int:
        """Number of tokens T for a chain of ``length`` residues."""
        n = length + (self.bos_id is not None)
        if self.layout == "direct":
            return n + (self.eos_id is not None)
        return n + 1 + length

    def max_residues(self, max_tokens: int) -> int:
        """Longest chain whose layout fits in ``max_tokens`` tokens."""
        extra = self.n_tokens(0)
        per = 1 if self.layout == "direct" else 2
        return max(0, (max_tokens - extra) // per)

    @property
    def max_len(self) -> int | None:
        """Longest chain (residues) the backbone can take in this layout; None = no limit."""
        return None if self.max_tokens is None else self.max_residues(self.max_tokens)

    def check_length(self, length: int) -> None:
        """LayoutError if a chain of ``length`` residues needs more tokens than the backbone has positions."""
        if self.max_tokens is not None and self.n_tokens(length) > self.max_tokens:
            raise LayoutError(
                f"a chain of {length} residues needs {self.n_tokens(length)} tokens in the {self.layout} layout "
                f"({self.n_tokens(0)} special), but the backbone takes at most {self.max_tokens} positions "
                f"(max_position_embeddings): at most {self.max_len} residues")

    def encode(self, sequence: str) -> EncodedSequence:
        """Lay out one sequence; the result has exactly len(sequence) feature positions (checked)."""
        res = self.residue_ids(sequence)
        L = len(res)
        self.check_length(L)
        ids: list[int] = [] if self.bos_id is None else [self.bos_id]
        kind = [KIND_VOCAB] * len(ids)
        start = len(ids)
        ids += res
        kind += [KIND_VOCAB] * L
        if self.layout == "direct":
            pos = list(range(start, start + L))
            if self.eos_id is not None:
                ids.append(self.eos_id)
                kind.append(KIND_VOCAB)
        else:
            ids.append(self.pad_id)
            kind.append(KIND_SEP)
            second = len(ids)
            if self.layout == "echo":
                ids += res
                kind += [KIND_VOCAB] * L
            else:  # placeholder
                ids += [self.pad_id] * L
                kind += [KIND_PLACEHOLDER] * L
            pos = list(range(second, second + L))
        if len(pos) != L or len(ids) != self.n_tokens(L):
            raise AssertionError(f"layout {self.layout}: {len(pos)} feature positions for {L} residues")
        return EncodedSequence(ids, kind, pos)

    # -- a batch --------------------------------------------------------------------------------------
    def collate(self, sequences: list[str]) -> dict[str, torch.Tensor]:
        """Right-padded batch tensors.

        Returns:
            input_ids [B, T] long, attention_mask [B, T] long, token_kind [B, T] long,
            residue_pos [B, Lmax] long (0 at padding), residue_mask [B, Lmax] bool.
        """
        enc = [self.encode(s) for s in sequences]
        B = len(enc)
        T = max(len(e.input_ids) for e in enc)
        Lmax = max(len(e.residue_pos) for e in enc)
        input_ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        attention = torch.zeros((B, T), dtype=torch.long)
        kind = torch.zeros((B, T), dtype=torch.long)
        pos = torch.zeros((B, Lmax), dtype=torch.long)
        rmask = torch.zeros((B, Lmax), dtype=torch.bool)
        for b, e in enumerate(enc):
            t, L = len(e.input_ids), len(e.residue_pos)
            input_ids[b, :t] = torch.tensor(e.input_ids)
            attention[b, :t] = 1
            kind[b, :t] = torch.tensor(e.token_kind)
            pos[b, :L] = torch.tensor(e.residue_pos)
            rmask[b, :L] = True
        return {"input_ids": input_ids, "attention_mask": attention, "token_kind": kind,
                "residue_pos": pos, "residue_mask": rmask}
