#!/usr/bin/env bash
# Train with the recipe of docs/results.md, then publish the run into a model store
# (and make it current: a running service picks it up at its next reload).
#   usage: scripts/train-and-publish.sh DATA_DIR RUN_DIR STORE_DIR [--set key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1 run=$2 store=$3
shift 3
cmr=${CMR:-cmr}
"$cmr" train --data "$data" --out "$run" --set history_sees_candidate=false \
    --set d_model=64 --set n_layers=2 --set n_heads=4 --set dropout=0.2 \
    --set batch_size=512 --set finetune_lr=0.0001 "$@"
"$cmr" export --run "$run" --store "$store"
