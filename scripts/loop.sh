#!/usr/bin/env bash
# The whole loop on one machine, against real data: serve version 1, post a day of
# events through the API, export them, retrain warm from version 1, publish version 2,
# and see the service switch to it under load with no failed request.
#   1. install; a private redis-server and the service (hot reload polling every 2 s)
#      on free ports
#   2. the data as of "yesterday": each market's newest DROP share of rows left out
#      (`cmr data subset --drop-newest`); version 1 trained on the rest (the default
#      recipe), published and served
#   3. through POST /events: the users' histories (the rows version 1 trained on), then
#      the rows left out, "the day", in time order, batches of 1,000 with event ids and
#      the rows' own dates (benchmarks/loop_events.py)
#   4. `cmr events export --since` (the day alone) into per-market files; the retraining
#      data is version 1's rows plus the export, checked against the original data:
#      every row once, none lost
#   5. a load generator (benchmarks/loop_load.py) asks for recommendations of real users
#      of every market, all along: version 2 trained warm (`cmr train --init-from`
#      version 1) on the retraining data, exported, promoted
#   6. the service loads it; the load stops 20 s after the first reply from version 2
#   7. a summary; the exit code is not 0 if a request failed or version 2 is not served
# XMarket's dates are days and its newest day holds a row or two per market, so "the
# day" stands for the newest DROP share (default 2%: months of 2020), said as such.
#   usage: scripts/loop.sh [DATA_DIR] [WORK_DIR]
#          (defaults ../shared/data/xmarket-electronics and runs/loop)
#   env: SETTINGS  extra --set values for both trainings; a quicker run (fewer epochs
#                  and evaluations; the closed-form fits still take minutes):
#                  SETTINGS='max_epochs=1 adapt_max_epochs=1 folds=2 d_model=32
#                  eval_protocols=["market"] eval_splits=["test"]'
#        DROP      share of each market's newest rows that make the day (default 0.02)
#        CLIENTS   load clients, each one request at a time, PAUSE s apart (default 4)
#        PAUSE     (default 0.5: about 7 requests/s in all, beside version 2's training)
# Finished steps are kept (data, training runs, versions, posted events; Redis keeps an
# append-only file in WORK_DIR/redis), so a rerun goes on where it stopped; it makes
# version 1 current again first, so the switch is seen again.
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/.."
data=../shared/data/xmarket-electronics work=runs/loop
if [ $# -ge 1 ]; then data=$(cd "$here" && realpath -m "$1"); fi
if [ $# -ge 2 ]; then work=$(cd "$here" && realpath -m "$2"); fi
drop=${DROP:-0.02}
clients=${CLIENTS:-4}
pause=${PAUSE:-0.5}
read -r -a settings <<< "${SETTINGS:-}"
sets=()
for s in "${settings[@]}"; do sets+=(--set "$s"); done
stamp() { echo "$(date -u +%H:%M:%S) $*"; }
fail() { stamp "FAILED: $*" >&2; exit 1; }
[ -d "$data" ] || fail "no data folder $data"

source scripts/venv.sh
install_project "train,serve,dev"
install_system_packages redis-server=redis-server curl=curl
py=.venv/bin/python
cmr=.venv/bin/cmr
mkdir -p "$work"
store=$work/store

# -- 1. Redis and the service ------------------------------------------------------------
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
read -r redis_port port < <($py -c '
from benchmarks.processes import free_port
a = free_port()
b = free_port()
while b == a:
    b = free_port()
print(a, b)')
redis_url=redis://127.0.0.1:$redis_port/0
url=http://127.0.0.1:$port
mkdir -p "$work/redis"
stamp "redis-server on port $redis_port (append-only file in $work/redis)"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$(realpath "$work/redis")" \
    --save "" --appendonly yes --appendfsync everysec >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null || fail "redis-server did not start: $work/redis.log"

api_key=loop-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
stamp "the service on $url (store $store, log $work/service.log)"
CMR_STORE=$store CMR_REDIS_URL=$redis_url CMR_API_KEY=$api_key CMR_RELOAD_INTERVAL_S=2 \
    $py -m service --port "$port" >"$work/service.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do
    curl -sf "$url/livez" >/dev/null && break
    sleep 0.5
done
curl -sf "$url/livez" >/dev/null || fail "the service did not start: $work/service.log"

served() { # the version the service serves now, per /readyz ("" when none)
    curl -s "$url/readyz" 2>/dev/null |
        $py -c 'import json, sys; print(json.load(sys.stdin).get("model") or "")' 2>/dev/null ||
        true
}
wait_served() { # VERSION SECONDS: until the service serves VERSION
    local deadline=$((SECONDS + $2))
    until [ "$(served)" = "$1" ]; do
        [ $SECONDS -lt $deadline ] || fail "the service does not serve $1 after $2 s: $work/service.log"
        sleep 0.5
    done
}
train() { # DATA RUN [ARGS...]: train unless finished; wall and CPU seconds into RUN.time
    local d=$1 run=$2 TIMEFORMAT='%R %U %S'
    shift 2
    if [ -f "$run/summary.json" ]; then
        stamp "$run: trained already"
        return 0
    fi
    { time "$cmr" train --data "$d" --out "$run" ${sets[@]+"${sets[@]}"} "$@" >"$run.log" 2>&1; } \
        2>"$run.time" || fail "training $run: $run.log, $run/train.log"
}
publish() { # RUN NAME-FILE SUFFIX [ARGS...]: export RUN unless done; its version name in NAME-FILE
    local run=$1 file=$2 suffix=$3
    shift 3
    if [ -f "$file" ] && [ -d "$store/versions/$(cat "$file")" ]; then
        return 0
    fi
    local name
    name=$(date -u +%Y%m%dT%H%M%SZ)-$suffix
    "$cmr" export --run "$run" --store "$store" --version "$name" "$@" >>"$run.log" 2>&1 ||
        fail "exporting $run: $run.log"
    echo "$name" >"$file"
}

# -- 2. version 1: the data without its newest rows --------------------------------------
if [ ! -d "$work/data-v1" ]; then
    stamp "data as of the day before: each market's newest $drop of rows left out"
    rm -rf "$work/data-v1.part"
    "$cmr" data subset --data "$data" --dest "$work/data-v1.part" --drop-newest "$drop" >/dev/null
    mv "$work/data-v1.part" "$work/data-v1"
fi
stamp "version 1: cmr train --data $work/data-v1 (log $work/run-v1.log)"
train "$work/data-v1" "$work/run-v1"
publish "$work/run-v1" "$work/v1.version" loop-v1
v1=$(cat "$work/v1.version")
if [ "$(cat "$store/current")" != "$v1" ]; then  # a rerun after the switch: back to v1
    stamp "making $v1 current again"
    "$cmr" store promote --store "$store" "$v1" >/dev/null
fi
wait_served "$v1" 120
stamp "serving $v1"

# -- 3. the day's events through POST /events --------------------------------------------
if [ ! -f "$work/posted.json" ]; then
    stamp "POST /events: the users' histories, then the day"
    $py -m benchmarks.loop_events post --url "$url" --api-key "$api_key" \
        --redis-url "$redis_url" --data "$data" --old "$work/data-v1" --out "$work/posted.json"
else
    stamp "events posted already ($work/posted.json)"
fi
since=$($py -c 'import json, sys; print(json.load(open(sys.argv[1]))["since_ms"])' "$work/posted.json")

# -- 4. export, the retraining data, the check -------------------------------------------
stamp "cmr events export --since $since (the day alone) into $work/events"
"$cmr" events export --redis-url "$redis_url" --dest "$work/events" --since "$since" |
    tail -n 1
if [ ! -d "$work/data-v2" ]; then
    rm -rf "$work/data-v2.part"
    mkdir -p "$work/data-v2.part"
    for file in "$work/events"/*.tsv; do  # a market the old data lacks: its events alone
        [ -f "$work/data-v1/$(basename "$file")" ] || cp "$file" "$work/data-v2.part/"
    done
    for file in "$work/data-v1"/*.tsv; do
        market=$(basename "$file")
        cp "$file" "$work/data-v2.part/$market"
        if [ -f "$work/events/$market" ]; then  # its rows without the header
            tail -n +2 "$work/events/$market" >>"$work/data-v2.part/$market"
        fi
    done
    mv "$work/data-v2.part" "$work/data-v2"
fi
stamp "the retraining data ($work/data-v2: version 1's rows + the export) against $data"
$py -m benchmarks.loop_events check --data "$data" --merged "$work/data-v2" ||
    fail "the retraining data is not the original data"

# -- 5, 6. version 2 trained warm and published, under load ------------------------------
stamp "load: $clients clients asking for recommendations until 20 s after the switch"
rm -f "$work/load.started"
$py -m benchmarks.loop_load --url "$url" --data "$data" --clients "$clients" --pause "$pause" \
    --out "$work/load.json" --started "$work/load.started" > >(tee "$work/load.log") 2>&1 &
load=$!
pids+=("$load")
for _ in $(seq 120); do  # its first reply, so it sees version 1 before anything changes
    [ -s "$work/load.started" ] && break
    kill -0 "$load" 2>/dev/null || break
    sleep 0.5
done
[ "$(cat "$work/load.started" 2>/dev/null)" = "$v1" ] ||
    fail "the load generator got no reply from $v1: $work/load.log"
stamp "version 2: cmr train --data $work/data-v2 --init-from $store:$v1 (log $work/run-v2.log)"
train "$work/data-v2" "$work/run-v2" --init-from "$store:$v1"
publish "$work/run-v2" "$work/v2.version" loop-v2 --no-promote
v2=$(cat "$work/v2.version")
kill -0 "$load" 2>/dev/null || fail "the load generator stopped before the switch: $work/load.log"
promoted=$(date +%s.%N)
"$cmr" store promote --store "$store" "$v2" >/dev/null
stamp "promoted $v2; the service polls the store every 2 s"
deadline=$((SECONDS + 300))
while kill -0 "$load" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 1; done
if kill -0 "$load" 2>/dev/null; then
    stamp "no switch seen within 300 s: stopping the load"
    kill -TERM "$load"
fi
load_rc=0
wait "$load" || load_rc=$?
now=$(served)

# -- 7. summary ---------------------------------------------------------------------------
$py - "$work" "$promoted" "$drop" "$v1" "$v2" "$now" <<'PY'
import json, sys
from datetime import UTC, datetime
from pathlib import Path

work, promoted, drop = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
v1, v2, now = sys.argv[4:]
posted = json.loads((work / "posted.json").read_text())
load = json.loads((work / "load.json").read_text())
exported = sum(
    len(f.read_text().splitlines()) - 1 for f in sorted((work / "events").glob("*.tsv"))
)
def took(run: str) -> str:
    """The training command's wall and CPU time, and its pre-training epochs."""
    path, summary = work / f"{run}.time", json.loads((work / run / "summary.json").read_text())
    epochs = f"pre-training {summary['pretrain']['epochs']} epochs"
    if not path.is_file() or not path.read_text().strip():
        return f"time unknown (an earlier start trained it), {epochs}"
    wall, user, system = map(float, path.read_text().split())
    return f"{wall:,.0f} s wall, {user + system:,.0f} s CPU, {epochs}"
day = posted["day"]
at = load["switch_at"]
clock = lambda t: datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]
versions = ", ".join(f"{v} {n:,}" for v, n in load["versions"].items())
print(f"""
== summary
version 1           {v1}: trained on each market's rows but the newest {drop:.0%}: {took("run-v1")}
the day             each market's newest {drop:.0%} of rows, dated {day["first"]} .. {day["last"]} (XMarket's dates are days)
events posted       {day["events"]:,} of the day: accepted {day["accepted"]:,}, duplicates {day["duplicates"]:,}, items version 1 does not know {day["unknown_items"]:,} (before them, {posted.get("past", {}).get("events", 0):,} of the users' histories)
events exported     {exported:,}
version 2           {v2}: warm from version 1 on its rows + the export, beside the load: {took("run-v2")}
switch              promoted {clock(promoted)} UTC, first reply from version 2 {clock(at) if at else "never"} UTC{f" (+{at - promoted:.1f} s)" if at else ""}
requests            {load["requests"]:,} in {load["seconds"]:.0f} s, failed {load["failed"]}; {versions}
serving now         {now or "nothing"}""")
PY
[ "$load_rc" -eq 0 ] || fail "the load: a request failed or no switch was seen ($work/load.json)"
[ "$now" = "$v2" ] || fail "the service serves '$now', not $v2"
stamp "done: $v2 serving, no request failed"
