"""What every script that runs a trained model shares: the prediction flags, the device, the run's
limits and description read from its config, and one-line load errors."""

from __future__ import annotations

from pathlib import Path

from proteinmtp.fasta import InputError
from proteinmtp.reconstruction import DEFAULT_METHOD, method_names, methods_help
from proteinmtp.rundir import RunLoadError, read_run_config


def run_max_len(run_dir: str | Path) -> int | None:
    """Longest chain a run accepts (training_config.json ``model.max_len``), read without loading weights
    (nor torch). Accepts a run directory or one of its checkpoint-<step>/ directories. InputError when the
    directory or its config is missing or corrupt.
    """
    try:
        model = read_run_config(run_dir)["model"]
    except RunLoadError as e:
        raise InputError(str(e)) from None
    ml = model.get("max_len")
    return int(ml) if isinstance(ml, (int, float)) and ml > 0 else None


def run_description(config: dict) -> dict:
    """Base model id, residue layout and head type of a run, from its training_config.json content."""
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    args = config.get("args") if isinstance(config.get("args"), dict) else {}
    head = model.get("head") if isinstance(model.get("head"), dict) else {}
    return {"model_name": str(config.get("base_model") or model.get("base_model") or args.get("model_name") or ""),
            "residue_layout": config.get("layout") or model.get("layout") or args.get("residue_layout"),
            "head_type": head.get("head_type") or args.get("head_type")}


METHOD_HELP = f"{methods_help()}; every one ends with the clash-resolving final stage"   # from the registry


def add_prediction_arguments(group, mds_help: str) -> None:
    """The flags every script that runs a trained model shares (argparse parser or argument group):
    --mds_method, --batch_size, --device, --template_db, --templates, --trust_remote_code."""
    group.add_argument("--mds_method", choices=method_names(), default=DEFAULT_METHOD,
                       help=f"{mds_help}: {METHOD_HELP}")
    group.add_argument("--batch_size", type=int, default=1, help="sequences per forward pass (≥ 1)")
    group.add_argument("--device", default="auto",
                       help="torch device: auto (cuda if available, else cpu), cpu, cuda:0 …")
    group.add_argument("--template_db", default=None,
                       help="template database for a run trained with templates (a dataset of training chains "
                            "that create_distmat_data.py built); without it, the one the run recorded, which "
                            "must be at its recorded path with its recorded SHA-256")
    group.add_argument("--templates", type=int, default=None, metavar="K",
                       help="templates per chain for a run trained with them: 0 = predict without templates, "
                            "1..the run's K = use at most that many; without it, the run's K")
    group.add_argument("--trust_remote_code", action="store_true",
                       help="allow the backbone's own Python code from its model directory (only for backbones "
                            "you trust)")


def resolve_device(device: str, local_rank: int | None = None) -> str:
    """``--device``: "auto" is cuda when a GPU is available (``cuda:<local_rank>`` for one rank of a
    multi-process launch, so each rank has its own GPU), else cpu; anything else as given."""
    if device != "auto":
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return "cuda" if local_rank is None else f"cuda:{local_rank % max(1, torch.cuda.device_count())}"


def load_error_message(run_dir: str | Path, err: BaseException) -> str:
    """One line saying why ``run_dir`` could not be loaded (the run path is not repeated)."""
    msg = (str(err).strip().splitlines() or [type(err).__name__])[0]
    prefix = f"{run_dir}: "
    return f"cannot load run {msg}" if msg.startswith(prefix) else f"cannot load run {run_dir}: {msg}"


def quiet_transformers() -> None:
    """No transformers progress bars or info logs on stderr (a CLI's stderr is for its own messages)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass

