#!/usr/bin/env bash
# The seed papers' other systems on XMarket Electronics, 3 seeds, as one command:
# single-market NMF and FOREC (the XMarket paper), M3Rec (the M3Rec paper), each
# fitted on the training split with its settings chosen on validation, evaluated
# under every protocol on the test split, then compared on identical candidates
# (the seed sets split and negatives) with
#   popularity and EASE^R of each seed  docs/results/bert4cmr/baselines-s<seed>.json
#   Bert4CMR, 3 seeds (H100)             docs/results/bert4cmr-h100/*/metrics/*-test.json
#   the hybrid (the served model)        docs/results/hybrid/*/metrics/*-test.json
# A finished file is kept, so the script can be stopped and started again.
#   usage: scripts/reproduce_comparators.sh [DATA_DIR] [OUT_DIR] [STEP ...]
#   steps, in their default order: neumf-s0 neumf-s1 neumf-s2 m3rec-s0 m3rec-s1 m3rec-s2 compare
#   (neumf = nmf and forec together)
set -euo pipefail
data=${1:-../shared/data/xmarket-electronics}
out=${2:-runs/reproduce-comparators}
shift $(( $# > 2 ? 2 : $# ))
cmr=${CMR:-.venv/bin/cmr}
mkdir -p "$out"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(neumf-s0 neumf-s1 neumf-s2 m3rec-s0 m3rec-s1 m3rec-s2 compare)
for step in "${steps[@]}"; do
    case $step in
        neumf-s[0-9]|m3rec-s[0-9])
            name=${step%-s*}; seed=${step##*-s}
            file="$out/$step.json"
            if [ -f "$file" ]; then echo "== kept $file"; continue; fi
            models=(--model nmf --model forec)
            [ "$name" = m3rec ] && models=(--model m3rec)
            echo "== $step"
            "$cmr" evaluate --data "$data" "${models[@]}" --protocol paper --protocol market \
                --protocol full --seed "$seed" --json "$file.part" >"$out/$step.log" 2>&1
            mv "$file.part" "$file" ;;
        compare)
            "$cmr" compare "$out"/*-s[0-9].json docs/results/hybrid/*/metrics/*-test.json \
                docs/results/bert4cmr-h100/*/metrics/*-test.json \
                docs/results/bert4cmr/baselines-s*.json --markdown "$out/comparison.md" ;;
        *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
