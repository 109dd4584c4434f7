#!/bin/bash
# Capacity ablations of the v2 recipe at equal training compute (issue 11, docs/training.md
# "Capacity at equal compute"). Needs FOLDNET_DATA (or data.root) and a built dataset.
# Step counts: scripts/bench_variants.py times every variant's real training step in one
# process, alternating, against the base recipe's; each variant then trains for
# BUDGET x (base step time / its step time) steps, so that its run costs what the base
# recipe's BUDGET steps cost (each run keeps its own cosine schedule of that length).
# Usage: [VARIANTS="base bn64x10"] [BUDGET=1000] bash scripts/ablate_capacity.sh
#   (writes runs/variants.json, runs/abl_<variant>/ and runs/abl_<variant>.log)
set -euo pipefail
cd "$(dirname "$0")/.."
FOLDNET=${FOLDNET:-.venv/bin/foldnet}
PYTHON=${PYTHON:-.venv/bin/python}
BUDGET=${BUDGET:-1000}
COMMON="experiment=foldnet_base_cpu_v2 max_minutes=60 val.train_chains=0 val.raw_params=false"
declare -A EXTRA=(
  [base]=""
  [wide1d]="model.channels_1d=192 model.blocks_1d=8"
  [deep2d]="model.blocks_2d=14"
  [bn64x10]="model.channels_2d=64 model.bottleneck_2d=32"
  [bn64x8]="model.channels_2d=64 model.bottleneck_2d=32 model.blocks_2d=8"
  [wide2d]="model.channels_2d=48"
)
VARIANTS=${VARIANTS:-"base bn64x10 bn64x8"}
ARGS=(--common "$COMMON" --budget_steps "$BUDGET" --out runs/variants.json --variant base=)
for v in $VARIANTS; do
  [ "$v" = base ] || ARGS+=(--variant "$v=${EXTRA[$v]}")
done
$PYTHON scripts/bench_variants.py "${ARGS[@]}"
for v in $VARIANTS; do
  steps=$($PYTHON -c "import json,sys; print({r['variant']: r['steps_equal_compute'] for r in json.load(open('runs/variants.json'))['variants']}['$v'])")
  echo "== abl_$v steps=$steps ${EXTRA[$v]} $(date)"
  # Checkpoints every 100 steps, the last 5 kept: the checkpoint average is scored from them.
  $FOLDNET train $COMMON steps="$steps" val.every_steps="$steps" checkpoint.every_steps=100 \
    checkpoint.keep_last=5 run_dir="runs/abl_$v" ${EXTRA[$v]} > "runs/abl_$v.log" 2>&1
done
