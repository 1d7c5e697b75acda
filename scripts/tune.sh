#!/usr/bin/env bash
# Tuning trials for Bert4CMR, decided on validation only. Each trial pre-trains on
# all markets for at most 15 epochs (a cheap proxy for the whole recipe: no
# fine-tuning, no test evaluation) and reports its best validation NDCG@5
# (market protocol, mean over markets). Finished trials are kept.
#   usage: scripts/tune.sh [DATA_DIR] [RUNS_DIR] [TRIAL ...]   (default: every trial)
set -euo pipefail
data=${1:-../shared/data/xmarket-electronics}
runs=${2:-runs/tune}
shift $(( $# > 2 ? 2 : $# ))
cmr=${CMR:-.venv/bin/cmr}
mkdir -p "$runs"
# The reference recipe of scripts/reproduce.sh; each trial changes one thing.
base=(--set history_sees_candidate=false --set d_model=64 --set n_layers=2 --set n_heads=4
      --set dropout=0.2 --set batch_size=512 --set finetune=false --set max_epochs=15
      --set 'eval_protocols=[]')
declare -A trials=(
    [reference]=""
    [negatives-16]="--set negatives=16"
    [lr-3e-3]="--set lr=0.003"
    [d-128]="--set d_model=128"
    [layers-4-heads-8]="--set n_layers=4 --set n_heads=8"
    [dropout-0.1]="--set dropout=0.1"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(reference negatives-16 lr-3e-3 d-128 layers-4-heads-8 dropout-0.1)
for name in "${names[@]}"; do
    out="$runs/$name"
    if [ -f "$out/summary.json" ]; then echo "== kept $out"; continue; fi
    echo "== trial $name"
    # shellcheck disable=SC2086  # the trial's words are separate arguments
    "$cmr" train --data "$data" --out "$out" "${base[@]}" ${trials[$name]} >"$out.log" 2>&1
done
{
    echo "| trial | change | best valid NDCG@5 (market) | at epoch | epochs run | s/epoch | samples/s |"
    echo "|---|---|---|---|---|---|---|"
    for name in "${names[@]}"; do
        [ -f "$runs/$name/summary.json" ] || continue
        .venv/bin/python - "$runs/$name/summary.json" "$name" "${trials[$name]:-(none)}" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["pretrain"]
print(f"| {sys.argv[2]} | `{sys.argv[3]}` | {s['best']:.4f} | {s['best_epoch']} | {s['epochs']} "
      f"| {s['seconds'] / s['epochs']:.0f} | {s['samples_per_s']:.0f} |")
PY
    done
} | tee "$runs/trials.md"
