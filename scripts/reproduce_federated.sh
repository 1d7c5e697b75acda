#!/usr/bin/env bash
# Federated training (FeCoSR-style, docs/federated.md) against the same model trained
# centrally, against each market alone, and beside popularity and EASE^R, on identical
# candidates (a seed fixes the split and the negatives of every row), per seed:
#   baselines-s<seed>.json         popularity and EASE^R (cmr evaluate)
#   central-s<seed>/               the hybrid without the shared EASE^R block (cmr train)
#   fedavg-s<seed>/                FedAvg + S2CE; metrics/ adapted, metrics/no-adapt/ not
#   fedavg-ce-s<seed>/             FedAvg, plain cross-entropy (the S2CE ablation)
#   fedprox-s<seed>/               FedProx + S2CE
#   alone-s<seed>/                 each market alone, same model, rounds and epochs
# then comparison.md (cmr compare: mean ± std over seeds) and costs.md (rounds, bytes
# over the wire, wall times, from each federated run's summary.json). Finished runs
# are kept, so the script can be stopped and started again.
#   usage: scripts/reproduce_federated.sh [--data DIR] [--out DIR] [--seeds 0,1,2]
#          [--protocols market,full] [--device auto|cpu|cuda] [--rounds 20]
#          [--local-epochs 1] [--runs central,fedavg,fedavg-ce,fedprox,alone]
#          [--set KEY=VALUE ...]   (--set: every run's settings; --runs: which rows)
set -euo pipefail
data=../shared/data/xmarket-electronics
out=runs/reproduce-federated
seeds=0,1,2
protocols=market,full
device=auto
rounds=20
local_epochs=1
runs=central,fedavg,fedavg-ce,fedprox,alone
extra=()
while [ $# -gt 0 ]; do
    case $1 in
        --data) data=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --seeds) seeds=$2; shift 2 ;;
        --protocols) protocols=$2; shift 2 ;;
        --device) device=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --local-epochs) local_epochs=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --set) extra+=(--set "$2"); shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
cmr=${CMR:-.venv/bin/cmr}
mkdir -p "$out"
as_json() { printf '["%s"]' "${1//,/\",\"}"; }
common=(--set "device=$device" --set "eval_protocols=$(as_json "$protocols")"
        --set 'eval_splits=["test"]' "${extra[@]}")
protocol_args=()
for p in ${protocols//,/ }; do protocol_args+=(--protocol "$p"); done

run() {  # run NAME COMMAND...: skipped when NAME's summary exists or --runs omits it
    local name=$1; shift
    [[ ",$runs," == *",${name%-s*},"* ]] || return 0
    if [ -f "$out/$name/summary.json" ]; then echo "== kept $out/$name"; return; fi
    echo "== $name"
    local start=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    echo "   $((SECONDS - start)) s"
}
for seed in ${seeds//,/ }; do
    if [ ! -f "$out/baselines-s$seed.json" ]; then
        echo "== baselines-s$seed"
        "$cmr" evaluate --data "$data" --model popularity --model ease "${protocol_args[@]}" \
            --seed "$seed" --json "$out/baselines-s$seed.json" >"$out/baselines-s$seed.log"
    fi
    run "central-s$seed" "$cmr" train --data "$data" --out "$out/central-s$seed" \
        --set seed="$seed" --set global_ease=false "${common[@]}"
    fed=("$cmr" federate --data "$data" --rounds "$rounds" --local-epochs "$local_epochs"
         --set seed="$seed" "${common[@]}")
    run "fedavg-s$seed" "${fed[@]}" --out "$out/fedavg-s$seed"
    run "fedavg-ce-s$seed" "${fed[@]}" --out "$out/fedavg-ce-s$seed" --semantics none
    run "fedprox-s$seed" "${fed[@]}" --out "$out/fedprox-s$seed" --strategy fedprox
    run "alone-s$seed" "${fed[@]}" --out "$out/alone-s$seed" --strategy alone
done
shopt -s nullglob
"$cmr" compare "$out"/*/metrics/*-test.json "$out"/*/metrics/no-adapt/*-test.json \
    "$out"/baselines-s*.json --markdown "$out/comparison.md"
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
lines = ["| run | rounds | MB over the wire | MB per round per client (up) | setup s | rounds s | publish s | total s |",
         "|---|---|---|---|---|---|---|---|"]
for summary in sorted(out.glob("*/summary.json")):
    s = json.loads(summary.read_text())
    if "strategy" not in s:
        continue  # a central run
    t = json.loads((summary.parent / "traffic.json").read_text())
    up = [r["received_per_client"] for r in t["per_round"] if r["stage"] == "train"]
    per = f"{up[0] / 1e6:.2f}" if up else "-"
    sec = s["seconds"]
    lines.append(f"| {summary.parent.name} | {s['rounds']} | {s['bytes_total'] / 1e6:.1f} | {per} | "
                 f"{sec['setup']:.0f} | {sec['rounds']:.0f} | {sec['publish']:.0f} | {sec['total']:.0f} |")
(out / "costs.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
