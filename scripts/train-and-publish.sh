#!/usr/bin/env bash
# Train the default recipe (the hybrid of docs/results.md; about 6 minutes on 2
# cores), then publish the run into a model store (and make it current: a running
# service picks it up at its next reload).
#   usage: scripts/train-and-publish.sh DATA_DIR RUN_DIR STORE_DIR [--set key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1 run=$2 store=$3
shift 3
cmr=${CMR:-cmr}
# `--config configs/bert4cmr-tuned.json` trains the paper's model instead (over an hour
# on 2 cores; docs/results.md).
"$cmr" train --data "$data" --out "$run" "$@"
"$cmr" export --run "$run" --store "$store"
