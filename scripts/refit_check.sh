#!/usr/bin/env bash
# What the refit is worth (docs/results.md, "The refit"): each user's newest item is
# taken out of the data, the default recipe is trained on the rest (its usual random
# split inside it), published twice, with the closed form refitted on every row and
# without (--no-refitted: the held-out run's), and both are scored on the items taken
# out: `cmr evaluate --split-scheme temporal` over the whole data tests each user's
# newest item, with every older one as the history, beside popularity and EASE^R
# (fitted on the whole data's temporal training rows) on identical candidates.
# A finished step is kept, so the script can be stopped and started again.
#   usage: scripts/refit_check.sh [DATA_DIR] [OUT_DIR] [SEED]
set -euo pipefail
data=${1:-../shared/data/xmarket-electronics}
out=${2:-runs/refit-check}
seed=${3:-0}
cmr=${CMR:-.venv/bin/cmr}
mkdir -p "$out"
if [ ! -d "$out/rest" ]; then
    echo "== the data without each user's newest item: $out/rest"
    "$cmr" data subset --data "$data" --dest "$out/rest" --drop-user-newest >/dev/null
fi
if [ ! -f "$out/run/summary.json" ]; then
    echo "== training the default recipe on it: $out/run"
    "$cmr" train --data "$out/rest" --out "$out/run" --set seed="$seed" \
        --set 'eval_splits=["test"]' >"$out/train.log" 2>&1
fi
rm -rf "$out/store"
"$cmr" export --run "$out/run" --store "$out/store" --version refitted
"$cmr" export --run "$out/run" --store "$out/store" --version held-out --no-refitted --no-promote
models=(--model popularity --model ease)  # the baselines once: the same for both
for version in refitted held-out; do
    echo "== $version, on each user's newest item"
    "$cmr" evaluate --data "$data" --split-scheme temporal --seed "$seed" \
        --protocol market --protocol full "${models[@]}" \
        --store "$out/store" --version "$version" --json "$out/$version.json"
    models=(--model popularity)
done
