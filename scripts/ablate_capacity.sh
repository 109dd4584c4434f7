#!/bin/bash
# Capacity ablations of the v2 recipe at equal training compute (issue 11, docs/training.md
# "Capacity at equal compute"). Needs FOLDNET_DATA (or data.root) and a built dataset.
# Pilot: 150 steps of each variant, one after another on the same machine; the crops/s of
# steps 100-150 sets each variant's step count so that its run costs what the base recipe's
# 1,000 steps cost (each run keeps its own cosine schedule of that length).
# Usage: bash scripts/ablate_capacity.sh   (writes runs/pilot_*, runs/abl_*, runs/pilot_steps.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
FOLDNET=${FOLDNET:-.venv/bin/foldnet}
PYTHON=${PYTHON:-.venv/bin/python}
COMMON="experiment=foldnet_base_cpu_v2 max_minutes=30 val.train_chains=0 val.raw_params=false"
declare -A EXTRA=( [base]="" [wide1d]="model.channels_1d=192 model.blocks_1d=8" [deep2d]="model.blocks_2d=14" )
VARIANTS="base wide1d deep2d"   # base first: the others' step counts are relative to it
for v in $VARIANTS; do
  echo "== pilot $v ${EXTRA[$v]} $(date)"
  rm -rf "runs/pilot_$v"
  $FOLDNET train $COMMON steps=150 val.every_steps=1000 checkpoint.every_steps=1000 \
    logging.every_steps=50 run_dir="runs/pilot_$v" ${EXTRA[$v]} > "runs/pilot_$v.log" 2>&1
done
$PYTHON - $VARIANTS <<'PY' > runs/pilot_steps.txt
import json, sys
cps = {}
for v in sys.argv[1:]:
    rows = [json.loads(line) for line in open(f"runs/pilot_{v}/metrics.jsonl")]
    cps[v] = [r for r in rows if r.get("kind") == "train"][-1]["crops_per_s"]
for v, c in cps.items():
    print(v, int(round(1000 * c / cps["base"])), c, cps["base"])
PY
cat runs/pilot_steps.txt
while read -r v steps _; do
  echo "== abl_$v steps=$steps ${EXTRA[$v]} $(date)"
  $FOLDNET train $COMMON steps="$steps" val.every_steps="$steps" checkpoint.every_steps=500 \
    run_dir="runs/abl_$v" ${EXTRA[$v]} > "runs/abl_$v.log" 2>&1
done < runs/pilot_steps.txt
