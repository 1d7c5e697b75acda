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

# EASE^R alone first, to time it: seven lambdas fitted and chosen on validation,
# per protocol, then the test split; all seven markets.
SECONDS=0
"$cmr" evaluate --data "$data" --model ease --protocol market --json "$out/ease-market-timing.json" >/dev/null
ease_seconds=$SECONDS

SECONDS=0
"$cmr" evaluate --data "$data" \
    --model popularity --model global-popularity --model ease --model ease-per-market \
    --protocol paper --protocol market --protocol full \
    --json "$out/baselines-test.json" --markdown "$out/baselines-test.md.body"
all_seconds=$SECONDS

{
    echo "Generated $(stamp) on $machine by \`scripts/baselines.sh $data $out\`."
    echo
    echo "EASE^R (global), market protocol, lambda chosen on validation among 7 values, load + fit + evaluation: ${ease_seconds} s."
    echo "All four baselines under all three protocols: ${all_seconds} s."
    echo
    cat "$out/baselines-test.md.body"
} > "$out/baselines-test.md"
rm "$out/baselines-test.md.body"
echo "wrote $out/baselines-test.md and $out/baselines-test.json"
