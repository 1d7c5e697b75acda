#!/usr/bin/env bash
# The main job on a fresh machine, end to end: install; obtain the XMarket data
# (synthetic markets when it cannot be had); evaluate the baselines under every
# protocol; train the default recipe (the hybrid) and print it beside the baselines;
# export it into a model store; start Redis and the service; post a user's events;
# print a recommendation.
#   CMR_DATA   where the data folder goes (default data/xmarket-electronics)
#   CMR_MIRROR a local copy to fill it from (default ../shared/data/xmarket-electronics
#              when present; otherwise the files are downloaded)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
install_project "train,serve"
cmr=.venv/bin/cmr
data=${CMR_DATA:-data/xmarket-electronics}
mirror=${CMR_MIRROR:-../shared/data/xmarket-electronics}
echo "== data into $data"
if [ -d "$mirror" ]; then
    $cmr data download --dest "$data" --base-url "file://$(cd "$mirror" && pwd)"
elif ! $cmr data download --dest "$data"; then
    data=data/synth
    echo "== no XMarket data to be had: synthetic markets in $data instead"
    $cmr data synth --dest "$data"
fi
$cmr data stats --data "$data"

mkdir -p runs
echo "== baselines (EASE^R's lambda is chosen on validation; takes a few minutes on 2 cores)"
$cmr evaluate --data "$data" \
    --model popularity --model global-popularity --model ease --model ease-per-market \
    --protocol paper --protocol market --protocol full --json runs/baselines-test.json

bash scripts/demo.sh "$data" runs runs/baselines-test.json
