#!/usr/bin/env bash
# Tuning trials for Bert4CMR, decided on validation only. Finished trials are kept.
#   usage: scripts/tune.sh [DATA_DIR] [RUNS_DIR] [TRIAL ...]   (default: every trial)
# Two modes (TUNE_MODE):
#   proxy (default, for 2 cores): each trial pre-trains the recipe of
#     scripts/reproduce.sh with one change for at most 15 epochs (no fine-tuning, no
#     test evaluation) and reports its best validation NDCG@5 (market protocol).
#   full (for a GPU): the whole recipe (pre-training up to 50 epochs, fine-tuning),
#     evaluated under the market protocol on validation (which decides) and test.
set -euo pipefail
data=${1:-../shared/data/xmarket-electronics}
runs=${2:-runs/tune}
shift $(( $# > 2 ? 2 : $# ))
cmr=${CMR:-.venv/bin/cmr}
python=${PYTHON:-.venv/bin/python}
mode=${TUNE_MODE:-proxy}
mkdir -p "$runs"
# The reference recipe of scripts/reproduce.sh; each trial changes it.
base=(--config configs/bert4cmr.json)
case $mode in
    proxy) base+=(--set finetune=false --set max_epochs=15 --set 'eval_protocols=[]') ;;
    full) base+=(--set 'eval_protocols=["market"]') ;;
    *) echo "TUNE_MODE=$mode: expected proxy or full" >&2; exit 2 ;;
esac
declare -A trials=(
    [reference]=""
    [negatives-16]="--set negatives=16"
    [lr-3e-3]="--set lr=0.003"
    [d-128]="--set d_model=128"
    [layers-4-heads-8]="--set n_layers=4 --set n_heads=8"
    [dropout-0.1]="--set dropout=0.1"
    # From the ablations: without the market embedding the recipe ranks better.
    [no-market-embedding]="--set market_embedding=false"
    [no-market-embedding-lr-3e-3]="--set market_embedding=false --set lr=0.003"
    [no-market-embedding-lr-3e-3-d-128]="--set market_embedding=false --set lr=0.003 --set d_model=128"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(reference negatives-16 lr-3e-3 d-128 layers-4-heads-8 dropout-0.1)
for name in "${names[@]}"; do
    [ -n "${trials[$name]+set}" ] || { echo "unknown trial $name" >&2; exit 2; }
    out="$runs/$name"
    if [ -f "$out/summary.json" ]; then echo "== kept $out"; continue; fi
    echo "== trial $name"
    # shellcheck disable=SC2086  # the trial's words are separate arguments
    "$cmr" train --data "$data" --out "$out" "${base[@]}" ${trials[$name]} >"$out.log" 2>&1
done
{
    if [ "$mode" = proxy ]; then
        echo "| trial | change | best valid NDCG@5 (market) | at epoch | epochs run | s/epoch | samples/s |"
        echo "|---|---|---|---|---|---|---|"
    else
        echo "| trial | change | pre-training epochs (best) | valid NDCG@10 (market) | test NDCG@10 (market) | training s |"
        echo "|---|---|---|---|---|---|"
    fi
    for name in "${names[@]}"; do
        [ -f "$runs/$name/summary.json" ] || continue
        "$python" - "$runs/$name" "$name" "${trials[$name]:-(none)}" "$mode" <<'PY'
import json, sys
from pathlib import Path
run, name, change, mode = Path(sys.argv[1]), *sys.argv[2:]
summary = json.loads((run / "summary.json").read_text())
s = summary["pretrain"]
if mode == "proxy":
    print(f"| {name} | `{change}` | {s['best']:.4f} | {s['best_epoch']} | {s['epochs']} "
          f"| {s['seconds'] / s['epochs']:.0f} | {s['samples_per_s']:.0f} |")
else:
    ndcg = {split: json.loads((run / f"metrics/market-{split}.json").read_text())["mean"]["ndcg@10"]
            for split in ("valid", "test")}
    seconds = sum(stage["seconds"] for stage in summary.values())
    print(f"| {name} | `{change}` | {s['epochs']} ({s['best_epoch']}) | {ndcg['valid']:.4f} "
          f"| {ndcg['test']:.4f} | {seconds:.0f} |")
PY
    done
} | tee "$runs/trials.md"
