"""Loading a backbone: a Hugging Face Hub id, a local directory or a GGUF file (dequantised once and cached,
``proteinmtp.weights``), pretrained or random-initialised from its config; its tokenizer; how many tokens it
can read. A Hub id with no network fails at once with "offline" instead of retrying.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from proteinmtp.rundir import RunLoadError

logger = logging.getLogger(__name__)


def backbone_text_config(backbone: nn.Module):
    cfg = backbone.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def is_encoder_config(config) -> bool:
    """True for bidirectional encoders (ESM, BERT-like): they get the direct layout's eos and no causal mask."""
    return bool(getattr(config, "is_decoder", False) is False and config.model_type in
                ("esm", "bert", "roberta", "deberta", "deberta-v2", "electra", "modernbert"))


# Families whose learned absolute position ids start after the padding index (RoBERTa-style offset).
PADDING_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "esm", "longformer")


def backbone_max_tokens(config) -> int | None:
    """Token positions a backbone takes, special tokens included (None = the config declares no limit).

    ``max_position_embeddings`` (``n_positions`` for GPT-2-style configs); RoBERTa/ESM-style position ids
    start at pad_token_id + 1, which costs that many positions. A learned absolute table (BERT: 512) is a
    hard limit: a longer input would index past it. Rotary models (Qwen: 32768) declare a large number.
    """
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not n:
        return None
    n = int(n)
    if config.model_type in PADDING_OFFSET_POSITIONS and getattr(config, "position_embedding_type",
                                                                 "absolute") == "absolute":
        n -= int(getattr(config, "pad_token_id", None) or 0) + 1
    return n


HUB_PROBE_TIMEOUT = 3.0      # seconds for one TCP connect to the Hub before calling it unreachable


def looks_like_path(name: str) -> bool:
    """True when ``name`` is meant as a local directory rather than a Hub id ("org/model"): it starts with
    / . or ~, has a backslash or more than one "/", or its first component exists here."""
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        return True
    first = name.split("/", 1)[0]
    return "/" in name and Path(first).exists()


def hub_reachable(endpoint: str | None = None, timeout: float = HUB_PROBE_TIMEOUT) -> tuple[bool, str]:
    """(reachable, reason): one TCP connect to the Hub endpoint's host. Behind an HTTP(S) proxy the direct
    connect says nothing, so the Hub counts as reachable and the download itself decides."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True, "proxy"
    url = urlparse(endpoint or constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True, ""
    except OSError as e:
        return False, f"{host}:{port}: {e.strerror or e}"


def hub_source_kwargs(name: str, what: str = "backbone") -> dict[str, Any]:
    """Check where ``name`` can come from before ``from_pretrained`` retries for a minute; return its
    extra keyword arguments.

    A local directory: {}. Something that looks like a path but is not a directory: RunLoadError at once.
    A Hub id: {} when the Hub is reachable; {"local_files_only": True} when it is not (or HF_HUB_OFFLINE
    is set) but a copy is cached; otherwise RunLoadError "offline: cannot download ...".
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return {}
    if path.exists():
        raise RunLoadError(f"{what} {name!r} is a file; pass a model directory or a Hugging Face Hub id")
    if looks_like_path(name):
        raise RunLoadError(f"{what} directory {name!r} does not exist")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if constants.is_offline_mode():                      # HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE
        if cached:
            return {"local_files_only": True}
        raise RunLoadError(f"offline (HF_HUB_OFFLINE is set): cannot download {what} {name!r} from the Hugging "
                           "Face Hub and no copy is cached; pass a local directory")
    ok, why = hub_reachable()
    if ok:
        return {}
    if cached:
        return {"local_files_only": True}
    raise RunLoadError(f"offline: cannot download {what} {name!r} (the Hugging Face Hub is unreachable: {why}); "
                       "no copy is cached and no local directory has that name; pass a local directory")


def resolve_backbone(name: str, gguf_file: str = "", *, expect_sha256: str | None = None) -> tuple[str, dict | None]:
    """(what from_pretrained should load, GGUF provenance or None).

    A GGUF checkpoint (``name`` ending in .gguf, or ``gguf_file`` inside the directory/repository ``name``)
    becomes its dequantised model directory (``proteinmtp.weights.dequantised_dir``: built once per file
    SHA-256, then read in seconds); anything else is returned as it is. ``expect_sha256``: RunLoadError
    when the file is not the one a run recorded.
    """
    from proteinmtp import weights

    if not (gguf_file or weights.is_gguf_path(name)):
        return name, None
    try:
        path = weights.locate_gguf(name, gguf_file)
        out, prov = weights.dequantised_dir(path, expect_sha256=expect_sha256)
    except weights.WeightsError as e:
        raise RunLoadError(str(e)) from None
    return str(out), prov


INITS = ("pretrained", "random")
# Encoders whose forward skips a missing pooler (its weights are unused here and would get no gradient).
POOLER_OPTIONAL = ("esm", "bert", "roberta", "xlm-roberta")


def load_backbone(name: str, *, dtype: torch.dtype | None = None, trust_remote_code: bool = False,
                  quantization_config=None, device_map=None, init: str = "pretrained",
                  seed: int = 0, gguf_file: str = "") -> nn.Module:
    """AutoModel (base model, no LM head) from a Hub id, a local directory or a GGUF file
    (``resolve_backbone``).

    ``init="random"`` builds the same config with the architecture's own initialiser
    (``AutoModel.from_config``) under ``torch.manual_seed(seed)``, without touching the global RNG stream:
    the control arm of a pretrained backbone. Its weights are saved with the run (``save_weights``).
    """
    from transformers import AutoConfig, AutoModel

    if init not in INITS:
        raise ValueError(f"--init_backbone must be one of {', '.join(INITS)}, got {init!r}")
    name, _ = resolve_backbone(name, gguf_file)
    src = hub_source_kwargs(name, "backbone")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        if init == "random":
            if quantization_config is not None:
                raise ValueError("a random-initialised backbone cannot be quantised (--use_4bit needs pretrained weights)")
            config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **src)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                model = AutoModel.from_config(config, **kwargs)
        else:
            if quantization_config is not None:
                kwargs["quantization_config"] = quantization_config
            if device_map is not None:
                kwargs["device_map"] = device_map
            model = AutoModel.from_pretrained(name, **kwargs, **src)
    except OSError as e:
        raise RunLoadError(f"cannot load backbone {name!r}: {str(e).splitlines()[0]}") from None
    if getattr(model, "pooler", None) is not None and model.config.model_type in POOLER_OPTIONAL:
        model.pooler = None          # unused; would leave parameters without gradients under DDP
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model


def load_tokenizer(name: str, *, trust_remote_code: bool = False, gguf_file: str = ""):
    """AutoTokenizer from a Hub id, a local directory or a GGUF file (the tokenizer it carries); fails fast
    like ``load_backbone``."""
    from transformers import AutoTokenizer

    name, _ = resolve_backbone(name, gguf_file)
    src = hub_source_kwargs(name, "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **src)
    except OSError as e:
        raise RunLoadError(f"cannot load tokenizer {name!r}: {str(e).splitlines()[0]}") from None
