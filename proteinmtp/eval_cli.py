"""Model mode of ``evaluate_distmat_model.py``: its flags, the nearest-neighbour search of the run's
training split, and the evaluation from parsed arguments to the written reports."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from proteinmtp import experiments
from proteinmtp.dataio import open_dataset
from proteinmtp.eval_report import CSV_FILE, RESULTS_FILE, format_summary, write_figures, write_results
from proteinmtp.evaluation import evaluate_run, nothing_to_score, skip_reason
from proteinmtp.neighbour import find_neighbours
from proteinmtp.runcli import (
    add_prediction_arguments,
    load_error_message,
    quiet_transformers,
    resolve_device,
    run_description,
)
from proteinmtp.rundir import RunLoadError, train_data_path
from proteinmtp.splits import MMseqsError

if TYPE_CHECKING:  # pragma: no cover
    from proteinmtp.dataset import Sample
    from proteinmtp.neighbour import NeighbourSet


def add_model_arguments(parser) -> None:
    """Flags of the model-evaluation mode of evaluate_distmat_model.py."""
    g = parser.add_argument_group("model evaluation (--model_path + --test_data)")
    g.add_argument("--model_path", help="run directory written by train_distmat.py")
    g.add_argument("--test_data", help="dataset split to evaluate on, from create_distmat_data.py: a JSON / .json.gz file or a sharded "
                        "binary directory (*.shards, --format binary), read as training reads it")
    g.add_argument("--num_samples", type=int, default=None,
                   help="evaluate only the first N proteins of the split (None = all)")
    g.add_argument("--output_dir", default=None,
                   help="where eval_results.json, eval_per_protein.csv and visualizations/ go "
                        "(None = the experiment record directory)")
    g.add_argument("--save_pdbs", action="store_true",
                   help="also write <id>_model.pdb (confidence in B-factor) and <id>_native.pdb into OUTPUT_DIR/pdbs/")
    g.add_argument("--experiment_name", default=None,
                   help="record the run in EXPERIMENTS_ROOT/<YYYY-MM-DD>_<name>/ (None: OUTPUT_DIR is the record "
                        "when given, else EXPERIMENTS_ROOT/<YYYY-MM-DD>_<run directory name>/); a record of another "
                        "run is never reused: the first free <name>_2, _3, ... is taken, while the same run "
                        "(re-evaluated, or recorded by its training) keeps its record")
    g.add_argument("--experiments_root", default="experiments", help="root directory of experiment records")
    add_prediction_arguments(g, "reconstruction used for model, prior and oracle")
    g.add_argument("--no_figures", action="store_true", help="skip the figures and HTML views")
    g.add_argument("--workers", type=int, default=1,
                   help="processes scoring proteins (reconstruction, metrics) while the model's forward pass runs "
                        "in the main process; 1 = score in the main process. Results are identical for any N")
    g.add_argument("--train_data", default=None,
                   help="training split searched for each chain's nearest neighbour (JSON, .json.gz or a *.shards directory; "
                        "None = train_data of the run's training_config.json; a missing file there skips the "
                        "neighbour with a warning, a missing file given here is an error)")
    g.add_argument("--no_neighbour", action="store_true",
                   help="skip the nearest-training-neighbour baseline (its block in eval_results.json is null)")


class EvaluationInputError(ValueError):
    """Bad arguments or input files for the model evaluation (reported as one line)."""


def open_split(path: str | Path):
    """A dataset split exactly as training opens it: JSON (.json / .json.gz) or a sharded binary directory
    (``*.shards``, from ``create_distmat_data.py --format binary``). The one call site of the dataset front
    door here (``proteinmtp.dataio.open_dataset``)."""
    return open_dataset(path)


def run_neighbours(args, run_dir: str | Path, run_config: dict,
                   samples: Sequence[Sample]) -> tuple[NeighbourSet | None, dict]:
    """Nearest training neighbours of ``samples`` for the CLI: (NeighbourSet or None, info for the results).

    The training split is ``args.train_data``, else the run's own (``rundir.train_data_path``: the stored
    absolute path, or the stored path resolved against the run directory, from any working directory). A
    baseline the user expects but that cannot be computed is an :class:`EvaluationInputError` naming what to
    pass (``--train_data PATH`` or ``--no_neighbour``); only ``--no_neighbour`` skips it. An MMseqs2 failure
    on readable data is a one-line warning and a null block with the reason.
    """
    if args.no_neighbour:
        return None, {"status": "skipped", "reason": "--no_neighbour"}
    if args.train_data:
        path, where = Path(args.train_data), "--train_data"
        if not path.exists():
            raise EvaluationInputError(f"--train_data {path} does not exist")
    else:
        try:
            path, where = train_data_path(run_dir, run_config), "the run's train_data"
        except RunLoadError as e:
            raise EvaluationInputError(f"{e}; the nearest-neighbour baseline needs it: pass --train_data PATH "
                                       "or --no_neighbour".splitlines()[0]) from None
    try:
        train = open_split(path)
    except (ValueError, OSError) as e:
        raise EvaluationInputError(f"cannot read training data {path} ({where}): {e}".splitlines()[0]) from None
    try:
        nbs = find_neighbours(train.samples, samples)
    except MMseqsError as e:
        reason = f"MMseqs2 search failed: {e}".splitlines()[0]
        print(f"warning: nearest-neighbour baseline skipped: {reason}", file=sys.stderr)
        return None, {"status": "skipped", "reason": reason}
    nbs.info["train_data"] = str(path)
    return nbs, {"status": "ok", **nbs.info}


def run_model_mode(args) -> int:
    """Model evaluation from parsed ``args`` (see :func:`add_model_arguments`). Prints the summary table.

    Raises :class:`EvaluationInputError` (one-line message) for a missing/corrupt run directory or
    dataset, before anything is written.
    """
    if not args.model_path or not args.test_data:
        raise EvaluationInputError("model evaluation needs both --model_path and --test_data")
    if args.num_samples is not None and args.num_samples < 1:
        raise EvaluationInputError(f"--num_samples must be ≥ 1, got {args.num_samples}")
    if args.batch_size < 1:
        raise EvaluationInputError(f"--batch_size must be ≥ 1, got {args.batch_size}")
    if getattr(args, "workers", 1) < 1:
        raise EvaluationInputError(f"--workers must be ≥ 1, got {args.workers}")
    run_dir = Path(args.model_path)
    if not run_dir.is_dir():
        raise EvaluationInputError(f"run directory {run_dir} does not exist; pass the --output_dir of train_distmat.py")
    if not Path(args.test_data).exists():
        raise EvaluationInputError(f"test data {args.test_data} does not exist")
    try:
        data = open_split(args.test_data)
    except (ValueError, OSError) as e:
        raise EvaluationInputError(f"cannot read test data {args.test_data}: {e}".splitlines()[0]) from None
    samples = list(data.samples)[: args.num_samples] if args.num_samples else list(data.samples)
    if not samples:
        raise EvaluationInputError(f"test data {args.test_data} holds no protein")
    device = resolve_device(args.device)
    from proteinmtp.model import load_run  # torch and the backbone

    quiet_transformers()
    try:
        run = load_run(run_dir, device=device, trust_remote_code=args.trust_remote_code,
                       template_db=args.template_db, templates=args.templates)
    except Exception as e:  # noqa: BLE001 - any failure to load is reported as one line
        raise EvaluationInputError(load_error_message(run_dir, e)) from None
    if getattr(run, "prior", None) is None:
        raise EvaluationInputError(f"run {run_dir} has no prior.json (the separation prior); retrain it")
    if all(skip_reason(s, getattr(run, "max_len", None)) is not None for s in samples):
        skipped = {s.id: skip_reason(s, getattr(run, "max_len", None)) for s in samples}
        raise EvaluationInputError(f"{args.test_data}: {nothing_to_score(skipped)}; nothing written")
    neighbours, neighbour_info = run_neighbours(args, run_dir, run.config, samples)

    # The record: EXPERIMENTS_ROOT/<date>_<name>/ when named; else OUTPUT_DIR itself; else <date>_<run name>.
    if args.experiment_name or not args.output_dir:
        exp_dir = experiments.experiment_dir(args.experiment_name or run_dir.resolve().name, root=args.experiments_root,
                                      run_dir=run_dir)
    else:
        exp_dir = Path(args.output_dir)
    out = Path(args.output_dir) if args.output_dir else exp_dir
    out.mkdir(parents=True, exist_ok=True)
    ev = evaluate_run(run, samples, method=args.mds_method, batch_size=args.batch_size,
                      pdb_dir=(out / "pdbs") if args.save_pdbs else None, run_dir=run_dir,
                      progress=not getattr(args, "quiet", False), neighbours=neighbours,
                      workers=getattr(args, "workers", 1))
    ev.neighbour_info = neighbour_info
    config = {"model_path": str(run_dir), "test_data": str(args.test_data), "num_samples": args.num_samples,
              "mds_method": args.mds_method, "n_in_split": len(data.samples), "workers": getattr(args, "workers", 1),
              **run_description(run.config), "max_len": getattr(run, "max_len", None),
              "git_commit": run.config.get("git_commit"), "max_steps": run.config.get("max_steps")}
    results = write_results(ev, out, config)
    if not args.no_figures:
        write_figures(ev, out / experiments.VIS_DIR, run_dir=run_dir)
    else:
        experiments.replace_written(out / experiments.VIS_DIR, [])   # figures of an earlier evaluation would not match these results
    experiments.record_training(run_dir, exp_dir)
    experiments.record_evaluation(exp_dir, out)
    print(format_summary(results))
    print(f"wrote {out / RESULTS_FILE} and {out / CSV_FILE}; experiment record {exp_dir}")
    return 0
