#!/usr/bin/env bash
# Train the default recipe (the hybrid, docs/results.md) on DATA, print its test
# metrics beside popularity and EASE^R on the same candidates, export it into a model
# store, start Redis and the service, post a user's events and print a
# recommendation; everything stops after.
#   usage: scripts/demo.sh DATA_DIR [RUNS_DIR] [BASELINES_JSON]   (run by scripts/run.sh)
# BASELINES_JSON: `cmr evaluate --json` of popularity and EASE^R (seed 0, test split);
# computed here when not given.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
data=$1
runs=${2:-runs}
baselines=${3:-$runs/demo-baselines.json}
cmr=.venv/bin/cmr
echo "== the default recipe (about 6 minutes on 2 cores), then export"
run=$runs/demo
$cmr train --data "$data" --out "$run" --set 'eval_splits=["test"]'
if [ ! -f "$baselines" ]; then
    echo "== popularity and EASE^R on the same candidates"
    $cmr evaluate --data "$data" --model popularity --model ease --protocol paper \
        --protocol market --protocol full --json "$baselines" >/dev/null
fi
echo "== the default recipe beside popularity and EASE^R (test split, seed 0)"
$cmr compare "$run"/metrics/*-test.json "$baselines"
store=$runs/demo-store
[ -f "$store/current" ] || $cmr export --run "$run" --store "$store"

echo "== Redis and the service"
# redis-server, and curl to talk to the service, from the system's packages when missing.
install_system_packages redis-server=redis-server curl=curl
redis_port=6391
redis-server --port "$redis_port" --save "" --appendonly no --daemonize yes >/dev/null
export CMR_STORE=$store CMR_REDIS_URL=redis://127.0.0.1:$redis_port/0 CMR_API_KEY=demo-key
$cmr serve --port 8077 >$runs/demo-serve.log 2>&1 &
service=$!
trap 'kill $service; redis-cli -p $redis_port shutdown nosave >/dev/null 2>&1 || true' EXIT
for _ in $(seq 100); do
    curl -sf localhost:8077/readyz >/dev/null && break
    sleep 0.5
done
curl -sf localhost:8077/readyz && echo
market=$(.venv/bin/python -c 'import json,sys; print(min(json.load(open(sys.argv[1]))["markets"]))' "$run/config.json")
items=$(.venv/bin/python - "$store" "$market" <<'PY'
import json, sys
from model_store.store import ModelStore
version = ModelStore(__import__("pathlib").Path(sys.argv[1])).open()
ids = json.loads(version.file("items.json").read_text())["items"]
top = json.loads(version.file("catalogues.json").read_text())[sys.argv[2]]["items"]
print(" ".join(ids[i - 1] for i in top[5:8]))
PY
)
events=$(for item in $items; do printf '{"market":"%s","user_id":"demo-user","item_id":"%s"},' "$market" "$item"; done)
echo "== POST /events: demo-user in $market bought $items"
curl -sf -H "X-API-Key: demo-key" -H "Content-Type: application/json" \
    -d "{\"events\":[${events%,}]}" localhost:8077/events && echo
echo "== POST /markets/$market/recommend"
curl -sf -H "Content-Type: application/json" -d '{"user_id":"demo-user","k":5}' \
    "localhost:8077/markets/$market/recommend" && echo
