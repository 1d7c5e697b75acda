#!/usr/bin/env bash
# The main job on a fresh machine: install, obtain the XMarket data, evaluate the
# baselines under every protocol, print the tables.
#   CMR_DATA   where the data folder goes (default data/xmarket-electronics)
#   CMR_MIRROR a local copy to fill it from (default ../shared/data/xmarket-electronics
#              when present; otherwise the files are downloaded)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
install_project "train"
data=${CMR_DATA:-data/xmarket-electronics}
mirror=${CMR_MIRROR:-../shared/data/xmarket-electronics}
echo "== data into $data"
if [ -d "$mirror" ]; then
    .venv/bin/cmr data download --dest "$data" --base-url "file://$(cd "$mirror" && pwd)"
else
    .venv/bin/cmr data download --dest "$data"
fi
.venv/bin/cmr data stats --data "$data"
echo "== baselines (EASE^R's lambda is chosen on validation; takes a few minutes on 2 cores)"
.venv/bin/cmr evaluate --data "$data" \
    --model popularity --model global-popularity --model ease --model ease-per-market \
    --protocol paper --protocol market --protocol full
