#!/usr/bin/env bash
# The default recipe (the hybrid) on XMarket Electronics, 3 seeds, as one command:
# trained with seeds 0, 1, 2 (each about 6 minutes on 2 cores), evaluated under every
# protocol on the test split, then compared with popularity, EASE^R and the paper's
# Bert4CMR on identical candidates (the seed sets split and negatives):
#   the baselines of each seed   docs/results/bert4cmr/baselines-s<seed>.json
#   Bert4CMR, 3 seeds (H100)      docs/results/bert4cmr-h100/*/metrics/*-test.json
#     (the paper variant, the history-once recipe and the tuned recipe)
# A finished run is kept, so the script can be stopped and started again.
#   usage: scripts/reproduce_hybrid.sh [DATA_DIR] [RUNS_DIR] [STEP ...]
#   steps, in their default order: seed0 seed1 seed2 compare
set -euo pipefail
data=${1:-../shared/data/xmarket-electronics}
runs=${2:-runs/reproduce-hybrid}
shift $(( $# > 2 ? 2 : $# ))
cmr=${CMR:-.venv/bin/cmr}
mkdir -p "$runs"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(seed0 seed1 seed2 compare)
for step in "${steps[@]}"; do
    case $step in
        seed[0-9])
            out="$runs/hybrid-s${step#seed}"
            if [ -f "$out/summary.json" ]; then echo "== kept $out"; continue; fi
            echo "== training $out"
            "$cmr" train --data "$data" --out "$out" --set seed="${step#seed}" \
                --set 'eval_splits=["test"]' >"$out.log" 2>&1 ;;
        compare)
            "$cmr" compare "$runs"/hybrid-s*/metrics/*-test.json \
                docs/results/bert4cmr-h100/*/metrics/*-test.json \
                docs/results/bert4cmr/baselines-s*.json --markdown "$runs/comparison.md" ;;
        *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
