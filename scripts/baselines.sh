#!/usr/bin/env bash
# Evaluate every baseline under every protocol on a data folder and write the
# tables that docs/results.md quotes, with the date, the machine and the timings.
#   usage: scripts/baselines.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
data=${1:-../shared/data/xmarket-electronics}
out=${2:-docs/results}
cmr=${CMR:-.venv/bin/cmr}
mkdir -p "$out"
stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m)"

# EASE^R alone first, to time it: every lambda of the default grid fitted on all
# seven markets and scored on validation, the best one then on the test split.
SECONDS=0
"$cmr" evaluate --data "$data" --model ease --protocol market >/dev/null 2>"$out/ease-timing.log"
ease_seconds=$SECONDS
lambdas=$(grep -c 'lambda [0-9.]*: valid' "$out/ease-timing.log")

SECONDS=0
"$cmr" evaluate --data "$data" \
    --model popularity --model global-popularity --model ease --model ease-per-market \
    --protocol paper --protocol market --protocol full \
    --json "$out/baselines-test.json" --markdown "$out/baselines-test.md.body"
all_seconds=$SECONDS

{
    echo "Generated $(stamp) on $machine by \`scripts/baselines.sh $data $out\`."
    echo
    echo "EASE^R (global), market protocol, lambda chosen on validation from the default grid ($lambdas values), load + fit + evaluation: ${ease_seconds} s."
    echo "All four baselines under all three protocols: ${all_seconds} s."
    echo
    cat "$out/baselines-test.md.body"
} > "$out/baselines-test.md"
rm "$out/baselines-test.md.body" "$out/ease-timing.log"
echo "wrote $out/baselines-test.md and $out/baselines-test.json"
