"""The model: an LLM backbone, one feature vector per residue, a pairwise distance head; save/load of a run.

    backbone (AutoModel, no LM head) --layout--> features [B, L, H]
        -> (last layer | learned mix of layers) -> head: projection -> pair features [B, L, L, c]
        -> residual dilated 3x3 conv blocks (+ optional axial attention) -> symmetric outputs:
           distogram logits [B, L, L, n_bins], normalised log-distance [B, L, L],
           pair confidence logits [B, L, L, 5], residue confidence logits [B, L]

The regression target is ``(ln d - log_dist_mean) / log_dist_std`` with the TRAIN split's global_stats
(stored as buffers in the head weights and in training_config.json). Only the pair tensor is L²·c, with c
the head width; the backbone's hidden size H never enters an L² tensor.

Heads live in ``proteinmtp.heads`` (one module each, looked up by ``head.head_type`` in
``heads.REGISTRY``; the protocol a head follows is in ``heads.common``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from proteinmtp.backbone import (
    backbone_max_tokens,
    backbone_text_config,
    is_encoder_config,
    load_backbone,
    load_tokenizer,
    resolve_backbone,
)
from proteinmtp.batching import length_batches
from proteinmtp.config import flag
from proteinmtp.fileio import atomic_write
from proteinmtp.heads import HeadConfig, build_head
from proteinmtp.heads.losses import LossTargets, head_loss
from proteinmtp.layouts import KIND_PLACEHOLDER, KIND_SEP, LAYOUTS, ResidueEncoder
from proteinmtp.rundir import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    BACKBONE_DIR,
    HEAD_WEIGHTS,
    PRIOR_NAME,
    TOKENIZER_DIR,
    RunLoadError,
    config_dir,
    read_run_config,
)

logger = logging.getLogger(__name__)

# Backbone state-dict keys a saved backbone/ may lack without anything being wrong (buffers that models
# rebuild from their config; cf. ESM's pretrained.py): matched with re.search.
EXPECTED_MISSING_BACKBONE_KEYS = (r"(^|\.)position_ids$", r"rotary_emb\.inv_freq$", r"\.masked_bias$",
                                  r"(^|\.)attn\.bias$", r"(^|\.)token_type_ids$")


# ----------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------
@dataclass
class ModelSpec:
    """Everything needed to rebuild the model of a run (training_config.json["model"], compared whole on
    resume). A field with ``flag`` metadata is also a ``train_distmat.py`` flag with the field's default
    (``proteinmtp.config``); the head's hyper-parameters are ``head`` (``HeadConfig`` as a dict)."""

    base_model: str = field(default="Qwen/Qwen2.5-0.5B", metadata=flag(
        "Hugging Face Hub id, local backbone directory, or a GGUF file (a path ending in .gguf; dequantised "
        "once and cached, see proteinmtp.weights)", name="model_name"))
    gguf_file: str = field(default="", metadata=flag(
        "GGUF file name inside --model_name (a directory or Hub repository), as transformers' "
        "from_pretrained(..., gguf_file=...) takes it; '' = --model_name is not a GGUF checkpoint unless it "
        "ends in .gguf"))
    # where a GGUF backbone came from (proteinmtp.weights.gguf_provenance: file, size, sha256, quantisation,
    # architecture); filled by build_model, checked against the file when a run is loaded ({} = not a GGUF)
    backbone_source: dict = field(default_factory=dict)
    layout: str = field(default="direct", metadata=flag(
        "how one backbone hidden state per residue is obtained: direct = the sequence once, features at each "
        "residue (with a decoder, residue i sees residues <= i); echo = the sequence twice, features at the "
        "second copy (each sees the whole chain; 2L tokens); placeholder = the sequence then L learned "
        "placeholder tokens, features at those (2L tokens)", name="residue_layout", choices=LAYOUTS))
    is_encoder: bool = False
    feature_layers: str = field(default="last", metadata=flag(
        "'last' or comma-separated hidden-state indices mixed with learned weights, e.g. -1,-3,-5"))
    finetune: str = field(default="lora", metadata=flag(
        "what trains in the backbone", choices=("lora", "full", "frozen")))
    lora_r: int = field(default=16, metadata=flag("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=flag("LoRA alpha"))
    lora_dropout: float = field(default=0.05, metadata=flag("LoRA dropout probability, in [0, 1)"))
    lora_target_modules: str = field(default="all-linear", metadata=flag(
        "comma-separated module names, or all-linear"))
    global_stats: dict = field(default_factory=dict)
    head: dict = field(default_factory=dict)
    max_len: int = 1024                    # longest chain inference will accept (residues; --max_eval_len)
    residue_case: str = ""                 # vocabulary spelling of residue letters: upper | lower ("" = detect)
    init_backbone: str = field(default="pretrained", metadata=flag(
        "backbone weights: the checkpoint's pretrained ones, or random = the same config with the "
        "architecture's own initialiser seeded by --seed (the control arm; tokenizer kept; the weights are "
        "saved with the run)", choices=("pretrained", "random")))
    init_seed: int = 0                     # torch seed of the random initialisation (--seed)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


# ----------------------------------------------------------------------------------------------------
# backbone + layout + head
# ----------------------------------------------------------------------------------------------------
def _parse_layers(spec: str) -> list[int] | None:
    if spec in ("", "last", None):
        return None
    try:
        return [int(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--feature_layers must be 'last' or comma-separated layer indices, got {spec!r}") from None


class DistanceModel(nn.Module):
    """Backbone + learned special-token vectors + layer mix + head. ``forward(**batch)`` returns a dict.

    batch keys (from ``ResidueEncoder.collate`` / ``training.DistanceCollator``): input_ids, attention_mask,
    token_kind [B, T]; residue_pos, residue_mask [B, L]; optional dist [B, L, L] Å (NaN = missing) -> loss.
    """

    def __init__(self, backbone: nn.Module, encoder: ResidueEncoder, spec: ModelSpec):
        super().__init__()
        self.backbone = backbone
        self.encoder = encoder
        self.spec = spec
        cfg = backbone_text_config(backbone)
        hidden = cfg.hidden_size
        n_layers = cfg.num_hidden_layers
        std = float(getattr(cfg, "initializer_range", 0.02))
        # learned vectors injected through inputs_embeds (the vocabulary embedding stays as it is)
        self.sep_embed = nn.Parameter(torch.randn(hidden) * std)
        self.placeholder_embed = nn.Parameter(torch.randn(hidden) * std)
        # a layout that never uses a vector must not train it (DDP rejects parameters without gradients)
        self.sep_embed.requires_grad_(spec.layout != "direct")
        self.placeholder_embed.requires_grad_(spec.layout == "placeholder")
        layers = _parse_layers(spec.feature_layers)
        if layers is not None:
            norm = [i if i >= 0 else n_layers + 1 + i for i in layers]   # hidden_states has n_layers+1 entries
            if any(not 0 <= i <= n_layers for i in norm):
                raise ValueError(f"--feature_layers {spec.feature_layers}: backbone has layers 0..{n_layers}")
            self.layer_ids = norm
            self.layer_mix = nn.Parameter(torch.zeros(len(norm)))
        else:
            self.layer_ids = None
            self.layer_mix = None
        self.head = build_head(hidden, HeadConfig.from_dict(spec.head))
        gs = spec.global_stats or {}
        self.register_buffer("log_dist_mean", torch.tensor(float(gs.get("log_dist_mean", 2.5))))
        self.register_buffer("log_dist_std", torch.tensor(float(gs.get("log_dist_std", 0.6))))

    # -- features --------------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """A frozen backbone stays in eval mode (no dropout): its features are a fixed function of the
        sequence, the same in training, evaluation, inference and the feature cache."""
        super().train(mode)
        if self.spec.finetune == "frozen":
            self.backbone.eval()
        return self

    def backbone_hidden(self, input_ids, attention_mask, token_kind, residue_pos) -> torch.Tensor:
        """Backbone hidden states at the residue positions, before the layer mix, in the backbone's dtype:
        [B, L, H] for feature_layers 'last', else the selected layers stacked [B, k, L, H]."""
        kwargs: dict[str, Any] = {"attention_mask": attention_mask}
        if (token_kind != 0).any():
            emb = self.backbone.get_input_embeddings()(input_ids)
            sep = self.sep_embed.to(emb.dtype)
            ph = self.placeholder_embed.to(emb.dtype)
            emb = torch.where((token_kind == KIND_SEP)[..., None], sep, emb)
            emb = torch.where((token_kind == KIND_PLACEHOLDER)[..., None], ph, emb)
            kwargs["inputs_embeds"] = emb
        else:
            kwargs["input_ids"] = input_ids
        if self.layer_ids is not None:
            kwargs["output_hidden_states"] = True
        out = self.backbone(**kwargs)
        layers = [out.last_hidden_state] if self.layer_ids is None else [out.hidden_states[i] for i in self.layer_ids]
        idx = residue_pos[..., None].expand(-1, -1, layers[0].shape[-1])
        picked = [torch.gather(h, 1, idx) for h in layers]
        return picked[0] if self.layer_ids is None else torch.stack(picked, 1)

    def mix_layers(self, hidden: torch.Tensor) -> torch.Tensor:
        """``backbone_hidden`` output (or cached features of that shape) -> [B, L, H] float32."""
        if self.layer_ids is None:
            return hidden.float()
        w = torch.softmax(self.layer_mix, 0)
        return sum(w[k] * hidden[:, k].float() for k in range(len(self.layer_ids)))

    def residue_features(self, input_ids, attention_mask, token_kind, residue_pos) -> torch.Tensor:
        """Backbone hidden states at the residue positions (layer mix applied): [B, L, H] float32."""
        return self.mix_layers(self.backbone_hidden(input_ids, attention_mask, token_kind, residue_pos))

    def forward(self, input_ids=None, attention_mask=None, token_kind=None, residue_pos=None, residue_mask=None,
                dist=None, prior_dist=None, features=None, ss_labels=None, templates=None, **_):
        """``features`` (from ``proteinmtp.features.FeatureCache``: ``backbone_hidden``'s shape, padded) replaces
        the backbone pass; then the token tensors are not needed. ``templates``: the batch's template
        features (``heads.templates``; None = no template), for a head trained with them. With ``dist`` (and
        optional ``ss_labels`` [B, L]) the output holds ``loss`` and every ``loss_<term>``
        (``proteinmtp.heads.losses``)."""
        if features is not None:
            feats = self.mix_layers(features)
        else:
            feats = self.residue_features(input_ids, attention_mask, token_kind, residue_pos)
        if templates is not None and getattr(self.head, "template_copy", None) is not None:
            # the copy path mixes template distances into the normalised log-distance the head regresses
            templates = {**templates, "dist_norm": (torch.log(templates["dist_A"].float().clamp(min=1.0))
                                                    - self.log_dist_mean) / self.log_dist_std}
        extra = {"templates": templates} if templates is not None or getattr(self.head, "templates", None) else {}
        if getattr(self.head.cfg, "prior_input", False):
            if prior_dist is None:
                raise ValueError("this model takes the separation prior as input: the batch needs prior_dist")
            prior_norm = (torch.log(prior_dist.float().clamp(min=1.0)) - self.log_dist_mean) / self.log_dist_std
            out = self.head(feats, residue_mask, prior_norm, **extra)
        else:
            out = self.head(feats, residue_mask, **extra)
        if dist is not None:
            L = residue_mask.shape[1]
            eye = torch.eye(L, dtype=torch.bool, device=dist.device)
            valid = residue_mask[:, :, None] & residue_mask[:, None, :] & torch.isfinite(dist) & ~eye & (dist > 0)
            out.update(head_loss(self.head, out, LossTargets(dist, valid, (self.log_dist_mean, self.log_dist_std),
                                                             ss_labels=ss_labels)))
        return out

    # -- weights ---------------------------------------------------------------------------------------
    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything except the backbone (head, special vectors, layer mix, normalisation buffers)."""
        return {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()
                if not k.startswith("backbone.")}


def apply_finetune(backbone: nn.Module, spec: ModelSpec) -> nn.Module:
    """Wrap/freeze the backbone for lora | full | frozen fine-tuning."""
    if spec.finetune == "full":
        return backbone
    for p in backbone.parameters():
        p.requires_grad_(False)
    if spec.finetune == "frozen":
        return backbone
    if spec.finetune == "lora":
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if getattr(backbone, "is_loaded_in_4bit", False) or getattr(backbone, "is_loaded_in_8bit", False):
            # QLoRA: norms in fp32, base frozen; checkpointing is enabled by the caller (non-reentrant)
            backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=False)

        targets: str | list[str] = spec.lora_target_modules
        if targets != "all-linear":
            targets = [t.strip() for t in str(targets).split(",") if t.strip()]
        cfg = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                         target_modules=targets, bias="none")
        return get_peft_model(backbone, cfg)
    raise ValueError(f"--finetune must be lora, full or frozen, got {spec.finetune!r}")


def build_model(spec: ModelSpec, *, tokenizer=None, trust_remote_code: bool = False, dtype=None,
                quantization_config=None, device_map=None, backbone_path: str | None = None) -> DistanceModel:
    """Backbone + fine-tuning wrapper + layout + head.

    The backbone is ``backbone_path`` (saved weights, loaded as they are) if given, else spec.base_model:
    its pretrained weights, or for ``spec.init_backbone == "random"`` its config initialised with
    ``spec.init_seed``. The tokenizer is always spec.base_model's (or the one passed). A GGUF base model
    (``spec.gguf_file``, or a path ending in .gguf) is loaded from its dequantised cache; its provenance
    goes into ``spec.backbone_source``, and a spec that already records one (a stored run) must name a
    file with the same SHA-256 (RunLoadError otherwise).
    """
    src = backbone_path
    if src is None:
        src, prov = resolve_backbone(spec.base_model, spec.gguf_file,
                                     expect_sha256=(spec.backbone_source or {}).get("sha256"))
        spec.backbone_source = prov or {}
    backbone = load_backbone(src, dtype=dtype, trust_remote_code=trust_remote_code,
                             quantization_config=quantization_config, device_map=device_map,
                             init="pretrained" if backbone_path else spec.init_backbone, seed=spec.init_seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(src, trust_remote_code=trust_remote_code)
    spec.is_encoder = is_encoder_config(backbone_text_config(backbone))
    if spec.layout not in LAYOUTS:
        raise ValueError(f"unknown residue layout {spec.layout!r}; choose one of {', '.join(LAYOUTS)}")
    encoder = ResidueEncoder(tokenizer, spec.layout, is_encoder=spec.is_encoder,
                             letter_case=spec.residue_case or None,
                             max_tokens=backbone_max_tokens(backbone_text_config(backbone)))
    spec.residue_case = encoder.letter_case
    backbone = apply_finetune(backbone, spec)
    return DistanceModel(backbone, encoder, spec)


# ----------------------------------------------------------------------------------------------------
# saving / loading
# ----------------------------------------------------------------------------------------------------
def save_weights(model: DistanceModel, out_dir: str | Path, *, save_base_backbone: bool = False) -> None:
    """Write the model's trainable state to ``out_dir`` (safetensors only).

    head.safetensors always; adapter/ (peft) for LoRA; backbone/ for full fine-tuning, for a random-initialised
    backbone (frozen or LoRA: inference needs exactly these weights, which no hub or directory holds), or when
    ``save_base_backbone`` (small local backbones: makes the run self-contained).
    """
    from safetensors.torch import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / HEAD_WEIGHTS, save(model.head_state_dict(), metadata={"format": "pt"}))
    bb = model.backbone
    is_peft = hasattr(bb, "peft_config")
    if is_peft:
        bb.save_pretrained(str(out / ADAPTER_DIR), safe_serialization=True)
    if model.spec.finetune == "full" or save_base_backbone or model.spec.init_backbone == "random":
        base = bb.get_base_model() if is_peft else bb
        if is_peft:
            # unmerged base weights: strip the LoRA modules from the state dict
            from peft.utils import get_peft_model_state_dict  # noqa: F401  (peft present)
            sd = {k.replace("base_layer.", ""): v for k, v in base.state_dict().items() if "lora_" not in k}
            base.save_pretrained(str(out / BACKBONE_DIR), state_dict=sd)
        else:
            base.save_pretrained(str(out / BACKBONE_DIR))


def load_weights_into(model: DistanceModel, ckpt_dir: str | Path) -> None:
    """Load what ``save_weights`` wrote back into an already built model (used for resume)."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt_dir)
    head = ckpt / HEAD_WEIGHTS
    if not head.is_file():
        raise RunLoadError(f"{ckpt}: no {HEAD_WEIGHTS}; not a ProteinMTP checkpoint")
    sd = load_file(str(head))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise RunLoadError(f"{head}: weights do not match the model (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}); was it trained with different head options?")
    bb = model.backbone
    if hasattr(bb, "peft_config") and (ckpt / ADAPTER_DIR).is_dir():
        from peft import set_peft_model_state_dict

        res = set_peft_model_state_dict(bb, load_file(str(ckpt / ADAPTER_DIR / ADAPTER_WEIGHTS)))
        missing = [k for k in getattr(res, "missing_keys", []) if "lora_" in k]
        unexpected = list(getattr(res, "unexpected_keys", []))
        if missing or unexpected:
            raise RunLoadError(f"{ckpt / ADAPTER_DIR}: adapter weights do not match the model (missing "
                               f"{missing[:5]}, unexpected {unexpected[:5]}); was it trained with other LoRA options?")
    if (model.spec.finetune == "full" or model.spec.init_backbone == "random") and (ckpt / BACKBONE_DIR).is_dir():
        # full: the trained backbone; random: the exact initial weights (not re-drawn from the seed, which
        # another torch version could draw differently). LoRA: the unmerged base under the adapter.
        sd = {}
        for f in sorted((ckpt / BACKBONE_DIR).glob("*.safetensors")):
            sd.update(load_file(str(f)))
        base = bb.get_base_model() if hasattr(bb, "peft_config") else bb
        own = {k: k.replace("base_layer.", "") for k in base.state_dict() if "lora_" not in k}
        check_backbone_keys(ckpt / BACKBONE_DIR, [v for v in own.values() if v not in sd])
        base.load_state_dict({k: sd[v] for k, v in own.items() if v in sd}, strict=False)


def check_backbone_keys(where: str | Path, missing: list[str]) -> None:
    """RunLoadError when a saved backbone lacks state-dict keys other than EXPECTED_MISSING_BACKBONE_KEYS
    (a partial or foreign backbone would otherwise keep random weights in silence)."""
    bad = [k for k in missing if not any(re.search(p, k) for p in EXPECTED_MISSING_BACKBONE_KEYS)]
    if bad:
        raise RunLoadError(f"{where}: saved backbone weights lack {len(bad)} key(s) of the model, e.g. {bad[:5]}; "
                           "the checkpoint is incomplete or from another backbone")


def prior_distances(prior, crops: list[tuple[int, int, int]], L_pad: int) -> torch.Tensor:
    """Separation-prior distances for a batch: crops = (chain length, crop start, crop length) per item.

    Returns [B, L_pad, L_pad] float32 Å (1.0 in padding). The prior depends on |i - j| and on the WHOLE
    chain's length, so a crop gets the block of its full chain's prior matrix.
    """
    out = torch.ones(len(crops), L_pad, L_pad, dtype=torch.float32)
    cache: dict[int, np.ndarray] = {}
    for b, (full_len, start, n) in enumerate(crops):
        if full_len not in cache:
            cache[full_len] = prior.predict(full_len)
        out[b, :n, :n] = torch.from_numpy(cache[full_len][start:start + n, start:start + n].astype(np.float32))
    return out


@dataclass
class DistancePrediction:
    """Prediction for one sequence (L residues)."""

    sequence: str
    dist: np.ndarray                 # [L, L] Å, symmetric, zero diagonal (from the regression output)
    contact_prob: np.ndarray         # [L, L] P(d < 8 Å) from the distogram
    pair_confidence: np.ndarray      # [L, L] in [0, 1] (expected lDDT-like score of the pair's distance)
    residue_confidence: np.ndarray   # [L] in [0, 1]
    distogram_probs: np.ndarray | None = None   # [L, L, n_bins]
    bin_edges: np.ndarray | None = None         # [n_bins - 1] Å
    pair_error_probs: np.ndarray | None = None  # [L, L, 5] P(|pred - true| in each ERROR_EDGES class); None: no classes
    ss_probs: np.ndarray | None = None          # [L, 8] secondary-structure probabilities (secondary.SS8 order)
    templates: list[dict] | None = None         # templates used, best first (template_inputs.describe_hits); [] = no
                                                # hit; None = the run uses no templates (or they were turned off)


class LoadedRun:
    """A trained run ready for inference. ``predict`` de-normalises with the run's saved global_stats and,
    for a run trained with templates, searches its template database (``templates``: a
    ``template_inputs.RunTemplates``; None = off)."""

    def __init__(self, model: DistanceModel, config: dict, prior=None, device: str = "cpu",
                 templates=None):
        self.templates = templates
        self.model = model.eval()
        self.config = config
        self.spec = model.spec
        fit = model.encoder.max_len          # what the backbone's positions allow in this layout
        self.max_len = int(self.spec.max_len) if fit is None else min(int(self.spec.max_len), fit)
        self.global_stats = dict(self.spec.global_stats)
        self.prior = prior
        self.device = device

    @torch.no_grad()
    def predict(self, sequences: list[str], batch_size: int = 1,
                max_residues2: int | None = None, use_templates: bool = True) -> list[DistancePrediction]:
        """Predict every sequence (upper-case one-letter codes, 2 <= L <= max_len), in input order.

        Forward passes take the sequences sorted by length, at most ``batch_size`` at a time and, with
        ``max_residues2``, at most that many padded pair positions (batch × longest L²) each
        (``proteinmtp.batching.length_batches``). On CPU oneDNN (mkldnn) is off here: it keeps state for
        every input shape it sees, so over many records of different lengths the process grew (tiny run,
        120 batches of random L 50–400: RSS 505 → 1,138 MB with it, flat ≈ 500–680 MB without).

        A run with templates (``self.templates``) searches its database for the sequences and names the
        templates used in each prediction's ``templates``; ``use_templates`` False predicts without them.
        """
        for s in sequences:
            if not 2 <= len(s) <= self.max_len:
                why = ""
                if len(s) > self.max_len and self.max_len < int(self.spec.max_len):
                    why = (f"; the backbone takes {self.model.encoder.max_tokens} positions "
                           f"(max_position_embeddings) in the {self.spec.layout} layout")
                raise ValueError(f"sequence of length {len(s)} is outside what this run supports "
                                 f"(2..{self.max_len} residues{why})")
        m = self.model
        stats = (float(m.log_dist_mean), float(m.log_dist_std))
        # use_templates False: the same run on its no-template path (evaluate's model_no_templates)
        tfeats, thits = (self.templates.features(sequences, m.head.cfg.bin_edges())
                         if self.templates is not None and use_templates else (None, None))
        on_cpu = str(self.device).startswith("cpu") and torch.backends.mkldnn.is_available()
        with onednn_disabled() if on_cpu else contextlib.nullcontext():
            results: list[DistancePrediction | None] = [None] * len(sequences)
            for idx in length_batches([len(s) for s in sequences], batch_size, max_residues2):
                batch = m.encoder.collate([sequences[i] for i in idx])
                if getattr(m.head.cfg, "prior_input", False):
                    if self.prior is None:
                        raise RunLoadError("this run takes the separation prior as input but its prior.json is missing")
                    batch["prior_dist"] = prior_distances(self.prior, [(len(sequences[i]), 0, len(sequences[i]))
                                                                       for i in idx], batch["residue_mask"].shape[1])
                if tfeats is not None:
                    from proteinmtp.heads.templates import template_tensors
                    from proteinmtp.templates import stack_features

                    batch["templates"] = template_tensors(stack_features([tfeats[i] for i in idx],
                                                                         batch["residue_mask"].shape[1]))
                batch = {k: ({kk: vv.to(self.device) for kk, vv in v.items()} if isinstance(v, dict)
                             else v.to(self.device)) for k, v in batch.items()}
                out = m(**batch)
                for b, i in enumerate(idx):
                    arrs = m.head.predict_numpy(out, b, len(sequences[i]), stats)
                    used = None
                    if thits is not None:
                        from proteinmtp.template_inputs import describe_hits

                        used = describe_hits(thits[i])
                    results[i] = DistancePrediction(sequence=sequences[i], templates=used, **arrs)
        return results  # type: ignore[return-value]


@contextlib.contextmanager
def onednn_disabled():
    """oneDNN (mkldnn) off inside the block, back as it was after. Only the ``enabled`` flag is touched:
    ``torch.backends.mkldnn.flags(enabled=False)`` also sets ``allow_tf32``, and on a torch build without
    Intel GPU support that set alone warns "TF32 acceleration on top of oneDNN is available for Intel GPUs"."""
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


def load_run(run_dir: str | Path, device: str = "cpu", *, trust_remote_code: bool = False,
             template_db: str | None = None, templates: int | None = None) -> LoadedRun:
    """Load a run directory (or one of its checkpoint-<step>/ directories) for inference; a run trained with
    templates reads its recorded database (``run_templates``: ``template_db`` overrides it, ``templates``
    0 turns them off).

    Raises RunLoadError with a clear message if the directory is missing or corrupt.
    """
    run = Path(run_dir)
    cfg = read_run_config(run)
    cfg_dir = config_dir(run)
    if not (run / HEAD_WEIGHTS).is_file():
        raise RunLoadError(f"{run} has no {HEAD_WEIGHTS}: the run did not finish saving (use a checkpoint-<step>/)")
    spec = ModelSpec.from_dict(cfg["model"])
    from proteinmtp.template_inputs import run_templates

    tmpl = run_templates(cfg, HeadConfig.from_dict(spec.head or {}), template_db, templates)   # before the weights
    if cfg["model"].get("trust_remote_code") and not trust_remote_code:
        raise RunLoadError(f"{run} was trained with --trust_remote_code; load it with --trust_remote_code (only if you trust that code)")
    backbone_path = None
    for d in (run, cfg_dir):
        if (d / BACKBONE_DIR / "config.json").is_file():
            backbone_path = str(d / BACKBONE_DIR)
            break
    if backbone_path is None and spec.init_backbone == "random":
        raise RunLoadError(f"{run} was trained on a random-initialised backbone but has no {BACKBONE_DIR}/ "
                           "with its weights; the run is incomplete")
    tok_dirs = [d / TOKENIZER_DIR for d in (run, cfg_dir, run.parent) if (d / TOKENIZER_DIR).is_dir()]
    if not tok_dirs and backbone_path and (Path(backbone_path) / "tokenizer_config.json").is_file():
        tok_dirs = [Path(backbone_path)]
    tokenizer = load_tokenizer(str(tok_dirs[0]) if tok_dirs else spec.base_model,
                               trust_remote_code=trust_remote_code)
    finetune = spec.finetune
    spec_load = ModelSpec.from_dict({**asdict(spec), "finetune": "frozen"})
    model = build_model(spec_load, tokenizer=tokenizer, trust_remote_code=trust_remote_code,
                        backbone_path=backbone_path)
    model.spec.finetune = finetune
    if finetune == "lora":
        if not (run / ADAPTER_DIR).is_dir():
            raise RunLoadError(f"{run} was trained with LoRA but has no {ADAPTER_DIR}/ directory")
        from peft import PeftModel

        model.backbone = PeftModel.from_pretrained(model.backbone, str(run / ADAPTER_DIR))
    try:
        load_weights_into(model, run)
    except RunLoadError:
        raise
    except Exception as e:  # safetensors header errors, shape mismatch
        raise RunLoadError(f"{run}: cannot read weights ({type(e).__name__}: {e})") from None
    prior = None
    prior_path = cfg_dir / PRIOR_NAME
    if prior_path.is_file():
        try:
            from proteinmtp.prior import SeparationPrior

            prior = SeparationPrior.load(prior_path)
        except Exception as e:
            if spec.head.get("prior_input"):
                raise RunLoadError(f"{prior_path}: cannot read the separation prior this run needs ({e})") from None
            logger.warning("%s: cannot read the separation prior (%s); the run loads without it (it is only "
                           "a baseline for this head)", prior_path, e)
            prior = None
    model.to(device)
    return LoadedRun(model, cfg, prior=prior, device=device, templates=tmpl)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return train, total


__all__ = ["HeadConfig", "ModelSpec", "DistanceModel", "DistancePrediction",
           "LoadedRun", "RunLoadError", "build_model", "load_run", "save_weights", "load_weights_into",
           "count_parameters", "prior_distances", "backbone_max_tokens"]

