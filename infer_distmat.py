"""Predict Cα structures from sequences with a trained ProteinMTP run.

    python infer_distmat.py --model_path runs/demo --sequence MKTAYIAKQRQISFVKSHFSRQ --output pred.pdb
    python infer_distmat.py --model_path runs/demo --fasta seqs.fasta --output preds/ --save_distmat

With ``--fasta`` the output is a directory receiving one ``<record id>.pdb`` (or ``.cif``) per record and
``manifest.jsonl``; per-residue confidence (0–100) is in the B-factor column. An interrupted batch keeps
every finished record and a rerun resumes. Exit status 0; 1 when a record failed; 2 for a bad option or a
missing/corrupt run or FASTA (one line, nothing written); 130 when interrupted (SIGINT or SIGTERM).
The pipeline and its rules (resume, sharding, workers, manifest) are in ``proteinmtp.inference``.
"""

from __future__ import annotations

import argparse
import signal
import sys

from proteinmtp.config import HelpFormatter
from proteinmtp.inference import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_RESIDUES2,
    DEFAULT_SORT_WINDOW,
    run_inference,
)
from proteinmtp.runcli import add_prediction_arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--model_path", required=True, help="run directory written by train_distmat.py")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sequence", help="one protein sequence (one-letter codes, case-insensitive)")
    src.add_argument("--fasta", help="FASTA file (plain or .gz; UTF-8, a byte-order mark is ignored, other bytes "
                                     "are read as Latin-1); one output structure per record")
    p.add_argument("--output", required=True,
                   help="output structure file with --sequence (its extension .pdb/.cif chooses the format); "
                        "output directory with --fasta (receives <id>.<format> per record and manifest.jsonl)")
    p.add_argument("--output_format", choices=("pdb", "cif"), default=None,
                   help="structure file format: pdb or cif (mmCIF); when not given, the --output extension "
                        "decides (.pdb/.ent: pdb, .cif/.mmcif: cif; anything else: pdb)")
    p.add_argument("--overwrite", action="store_true",
                   help="predict again and replace records whose output files already exist (without it they "
                        "are skipped, so a rerun resumes an interrupted batch)")
    p.add_argument("--save_distmat", action="store_true",
                   help="also save the predicted distance matrix [L, L] in Å as <name>_distmat.npy")
    p.add_argument("--save_distogram", action="store_true",
                   help="also save distogram probabilities, bin edges (Å), contact probability and pair/residue "
                        "confidence as <name>_distogram.npz")
    add_prediction_arguments(p, "how coordinates are rebuilt from the prediction")
    p.set_defaults(batch_size=DEFAULT_BATCH_SIZE)
    scale = p.add_argument_group("scale (large FASTA files, several processes or GPUs)")
    scale.add_argument("--max_batch_residues2", type=int, default=DEFAULT_MAX_BATCH_RESIDUES2, metavar="N",
                       help="residue² budget of one forward pass: (sequences in the batch) × (its longest "
                            "length)², the padded pair positions of the [B, L, L] pair tensors; batches are "
                            "length-sorted and also hold at most --batch_size sequences; a longer sequence runs "
                            "alone. 2^22 (64 × 256²) is ≈ 5.5 GB of pair activations for the standard head (pair_dim 64, "
                            "float32; 1.3 kB per pair position measured), sized for a 24 GB GPU; lower it on "
                            "smaller GPUs or on CPU")
    scale.add_argument("--sort_window", type=int, default=DEFAULT_SORT_WINDOW, metavar="RECORDS",
                       help="records read ahead and sorted by length before batching (only their sequences are "
                            "held; memory does not grow with the FASTA)")
    scale.add_argument("--workers", type=int, default=1,
                       help="processes rebuilding and writing structures (MDS + refinement, CPU) while the "
                            "model predicts the next batch; 1: in this process, one record after another; "
                            "each worker uses one BLAS thread")
    scale.add_argument("--num_shards", type=int, default=1, metavar="K",
                       help="split --fasta into K shards (e.g. a job array): record n (1-based position in the "
                            "file) belongs to shard (n - 1) mod K; each shard writes its own "
                            "manifest.shard-I-of-K.jsonl into the shared --output directory. Under torchrun / "
                            "accelerate launch (WORLD_SIZE > 1) every rank also takes its share automatically "
                            "(shard I + K·RANK of K·WORLD_SIZE, on cuda:LOCAL_RANK with --device auto)")
    scale.add_argument("--shard_index", type=int, default=0, metavar="I",
                       help="which of the --num_shards shards this process predicts (0 … K-1)")
    return p



def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_inference(args)
    except KeyboardInterrupt:  # before the second pass (checking the FASTA, loading the weights)
        print("\ninterrupted before any record was written", file=sys.stderr)
        return 130


def _sigterm(signum, frame):  # noqa: ARG001 - a kill is handled like Ctrl-C: finished records are kept
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    # SIGINT always means "stop and keep what is finished", even when started with SIGINT ignored (a
    # background job of a non-interactive shell): the batch then exits 130 as documented
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
