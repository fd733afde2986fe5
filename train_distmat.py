"""Train a ProteinMTP distance model: an LLM backbone + pairwise head on a dataset JSON.

One CPU/GPU:
    python -m proteinmtp.tiny runs/tiny_backbone
    python train_distmat.py --train_data data/demo/dataset/train.json.gz --val_data data/demo/dataset/val.json.gz \
        --model_name runs/tiny_backbone --finetune full --output_dir runs/demo --max_steps 2000
Real backbone (LoRA):
    python train_distmat.py --train_data ... --val_data ... --model_name Qwen/Qwen2.5-0.5B --output_dir runs/qwen
Several processes (DDP through the Trainer; gloo on CPU):
    torchrun --nproc_per_node 2 train_distmat.py ... (same arguments)

Re-running the same command on the same --output_dir resumes from the latest complete checkpoint; once the
run is complete (RUN_DIR/training_complete.json) it does nothing. Resuming refuses any changed flag except
proteinmtp.rundir.RESUME_MAY_CHANGE, and any change of the model spec, before writing anything. One process
trains in a run directory at a time (RUN_DIR/train.lock; a killed process leaves no lock behind).
SIGINT or SIGTERM (kill, Ctrl-C, a scheduler's pre-emption; also for a background job) stops training at
the end of the current step with a checkpoint and exits 130 / 143; a second one exits at once. The logic
is proteinmtp.train_command.
"""

from __future__ import annotations

import argparse


def parse_args(argv=None) -> argparse.Namespace:
    from proteinmtp.config import HelpFormatter, add_flags
    from proteinmtp.heads import HeadConfig
    from proteinmtp.model import ModelSpec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--train_data", required=True,
                   help="training split: dataset .json / .json.gz, or a sharded binary directory "
                        "(create_distmat_data.py --format binary; memory-mapped, pages shared by all ranks)")
    d.add_argument("--val_data", default=None,
                   help="validation split (either format) evaluated every --eval_steps, each rank scoring its "
                        "share of the chains (optional)")
    d.add_argument("--dataloader_workers", type=int, default=0,
                   help="DataLoader worker processes per rank that crop training chains (0 = in the training "
                        "process); workers draw crops from their own torch seeds, so the crop stream differs "
                        "from 0 workers")
    d.add_argument("--max_seq_len", type=int, default=256,
                   help="training crop length in residues (longer chains train on random contiguous crops)")
    d.add_argument("--long_crop_len", type=int, default=0,
                   help="residues of the occasional longer training crop (0 = off, else longer than --max_seq_len); "
                        "separations up to it get trained")
    d.add_argument("--long_crop_fraction", type=float, default=0.25,
                   help="fraction (0 to 1) of training items cropped at --long_crop_len instead of --max_seq_len")
    d.add_argument("--max_eval_len", type=int, default=1024,
                   help="longest chain in residues the trained run accepts (capped at what the backbone's positions "
                        "fit): infer_distmat.py refuses longer sequences and evaluate_distmat_model.py skips them, "
                        "listed in its report; during training, longer validation chains are scored on their "
                        "central crop of this length")
    d.add_argument("--max_eval_samples", type=int, default=0,
                   help="evaluate on at most this many validation chains (0 = all)")
    m = p.add_argument_group("model")
    m.add_argument("--trust_remote_code", action="store_true", help="allow the backbone's own Python code")
    add_flags(m, HeadConfig)                         # the head's flags: one source, proteinmtp.heads.HeadConfig
    # --templates: 4 for a new run, the stored value for a resumed one (a run stored before templates: 0)
    p.set_defaults(templates=None)
    tm = p.add_argument_group("templates (homologous structures as input; distance head only)")
    from proteinmtp.templates import TemplateOptions

    tm.add_argument("--template_db", default=None,
                    help="template database: a dataset create_distmat_data.py built (JSON or shards) holding "
                         "training chains only (default: --train_data, the run's own training split); recorded "
                         "in the run by absolute path and SHA-256")
    add_flags(tm, TemplateOptions)
    f = p.add_argument_group("backbone and fine-tuning")
    add_flags(f, ModelSpec)                          # the backbone's flags: one source, proteinmtp.model.ModelSpec
    f.add_argument("--use_4bit", action="store_true", help="QLoRA: NF4 4-bit backbone (CUDA + bitsandbytes only)")
    f.add_argument("--gradient_checkpointing", action="store_true", help="recompute backbone activations")
    f.add_argument("--feature_cache", action=argparse.BooleanOptionalAction, default=True,
                   help="with --finetune frozen: run the backbone once per WHOLE chain (as inference reads it), "
                        "cache the features on disk (float16) and train on crops of them, so a step costs "
                        "what the head costs; --no-feature_cache runs the backbone on every crop instead")
    f.add_argument("--feature_cache_dir", default=None,
                   help="directory of the frozen feature cache (default: OUTPUT_DIR/feature_cache); entries are "
                        "keyed by the backbone's weights, init, layout and layers, so runs may share one; safe "
                        "to delete")
    t = p.add_argument_group("training")
    t.add_argument("--output_dir", required=True,
                   help="run directory (checkpoints, logs, final weights); the same command again resumes from its "
                        "latest complete checkpoint, or does nothing once the run is complete; one training "
                        "process at a time (RUN_DIR/train.lock)")
    t.add_argument("--max_steps", type=int, default=0,
                   help="optimizer steps in total (0 = use --num_epochs); raise it to train a complete run further")
    t.add_argument("--num_epochs", type=float, default=1.0, help="epochs when --max_steps is 0")
    t.add_argument("--per_device_train_batch_size", type=int, default=1, help="chains per batch per process")
    t.add_argument("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    t.add_argument("--learning_rate", type=float, default=2e-4, help="peak LR of the backbone (LoRA/full)")
    t.add_argument("--head_learning_rate", type=float, default=1e-3, help="peak LR of the head")
    t.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay (not on norms/biases)")
    t.add_argument("--warmup_steps", type=int, default=100, help="linear warmup steps before the cosine decay")
    t.add_argument("--max_grad_norm", type=float, default=1.0,
                   help="clip the gradients' global L2 norm to this (0 = no clipping)")
    t.add_argument("--seed", type=int, default=0, help="random seed (init, crops, order)")
    t.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto",
                   help="bf16 mixed precision; auto = on where the GPU supports it")
    t.add_argument("--logging_steps", type=int, default=10, help="log every N steps")
    t.add_argument("--eval_steps", type=int, default=200, help="evaluate on --val_data every N steps")
    t.add_argument("--save_steps", type=int, default=200, help="write checkpoint-<step>/ every N steps")
    t.add_argument("--save_total_limit", type=int, default=3, help="keep at most N checkpoints (older ones are deleted)")
    t.add_argument("--max_train_minutes", type=float, default=0.0,
                   help="stop gracefully with a checkpoint after this many minutes in this process (0 = no limit); "
                        "the run is then not complete: the same command continues it")
    t.add_argument("--experiment_name", default=None,
                   help="also record the run (config, text log, training curves) under experiments/<UTC date>_<NAME>/"
                        "; a record of another run is never reused: the first free <NAME>_2, _3, ... is taken, "
                        "while this run, resumed, keeps its record (default: no record)")
    t.add_argument("--no_tqdm", action="store_true", help="no progress bar on the console")
    args = p.parse_args(argv)
    if args.templates is None:
        from pathlib import Path

        from proteinmtp.train_command import stored_templates

        args.templates = stored_templates(Path(args.output_dir))
    return args


def main(argv=None) -> int:
    """Parse the flags and train (``proteinmtp.train_command.run``); returns the exit code."""
    from proteinmtp.train_command import run

    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
