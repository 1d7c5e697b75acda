#!/usr/bin/env bash
# Trials of the hybrid (the default recipe, training/hybrid.py), decided on validation
# only: each trial is the default recipe with one change, seed 0, evaluated under
# `market` and `full` on the validation split, beside popularity and EASE^R on the
# same candidates (EASE^R's lambda chosen per protocol on validation). Finished
# trials are kept; each takes about 5 minutes on 2 cores.
#   usage: scripts/tune_hybrid.sh [DATA_DIR] [RUNS_DIR] [TRIAL ...]   (default: every trial)
set -euo pipefail
data=${1:-../shared/data/xmarket-electronics}
runs=${2:-runs/tune-hybrid}
shift $(( $# > 2 ? 2 : $# ))
cmr=${CMR:-.venv/bin/cmr}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$runs"
# The reference is the default recipe as it was before these trials, lr 1e-3; lr-3e-4
# was best on validation and became the default (docs/results.md).
base=(--set seed=0 --set lr=0.001 --set 'eval_splits=["valid"]'
      --set 'eval_protocols=["market","full"]')
declare -A trials=(
    [default]=""
    # Ablations: what each part of the hybrid is worth.
    [no-network]="--set neural=false"
    [no-market-ease]="--set market_ease=false"
    [no-shared-ease]="--set global_ease=false"
    [plain-cooccurrence]="--set cooccurrence_days=0"
    [no-adapt]="--set adapt=false"
    # The loss: binary cross-entropy with 4 sampled negatives against the softmax.
    [bce-4]="--set loss=bce --set negatives=4"
    # The network's settings.
    [lr-3e-4]="--set lr=0.0003"
    [dropout-0.5]="--set dropout=0.5"
    [mask-0.5]="--set mask_rate=0.5"
    [d-64]="--set d_model=64"
    # About 3.5 times slower an epoch than the default on 2 cores: capped at 6 epochs.
    [attention-1-layer]="--set n_layers=1 --set max_epochs=6"
)
order=(default no-network no-market-ease no-shared-ease plain-cooccurrence no-adapt bce-4
       lr-3e-4 dropout-0.5 mask-0.5 d-64 attention-1-layer)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${order[@]}")
baselines=$runs/baselines-valid.json
if [ ! -f "$baselines" ]; then
    echo "== baselines on validation"
    "$cmr" evaluate --data "$data" --split valid --seed 0 --model popularity --model ease \
        --protocol market --protocol full --json "$baselines" >"$runs/baselines-valid.log" 2>&1
fi
for name in "${names[@]}"; do
    [ -n "${trials[$name]+set}" ] || { echo "unknown trial $name" >&2; exit 2; }
    out="$runs/$name"
    if [ -f "$out/summary.json" ]; then echo "== kept $out"; continue; fi
    echo "== trial $name"
    # shellcheck disable=SC2086  # the trial's words are separate arguments
    "$cmr" train --data "$data" --out "$out" "${base[@]}" ${trials[$name]} >"$out.log" 2>&1
done
"$python" - "$runs" "$baselines" "${names[@]}" <<'PY' | tee "$runs/trials.md"
import json, re, shlex, sys
from pathlib import Path
runs, baselines, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
changes = dict(
    line.strip().removeprefix("[").split("]=", 1)
    for line in Path("scripts/tune_hybrid.sh").read_text().splitlines()
    if re.match(r"\s+\[[\w.-]+\]=", line)
)
ease = {}
print("| trial | change | market NDCG@10 | x EASE^R | full NDCG@10 | x EASE^R "
      "| pre-training epochs (best) | training s |")
print("|---|---|---|---|---|---|---|---|")
for r in json.loads(baselines.read_text()):
    ease.setdefault(r["model"], {})[r["protocol"]] = r["mean"]["ndcg@10"]
for name in names:
    run = runs / name
    if not (run / "summary.json").is_file():
        continue
    cells = []
    for protocol in ("market", "full"):
        result = json.loads((run / f"metrics/{protocol}-valid.json").read_text())
        ndcg = result["mean"]["ndcg@10"]
        cells += [f"{ndcg:.4f}", f"{ndcg / ease['ease'][protocol]:.3f}"]
    pre = json.loads((run / "summary.json").read_text())["pretrain"]
    seconds = re.findall(r"trained \d+ markets .* in (\d+) s", (run / "train.log").read_text())
    change = " ".join(shlex.split(changes.get(name, '""'))) or "(none)"
    print(f"| {name} | `{change}` | {' | '.join(cells)} | {pre['epochs']} ({pre['best_epoch']}) "
          f"| {seconds[-1] if seconds else '?'} |")
for model, by_protocol in ease.items():
    cells = [f"{by_protocol[p]:.4f} | {by_protocol[p] / ease['ease'][p]:.3f}" for p in ("market", "full")]
    print(f"| {model} (baseline) | | {' | '.join(cells)} | | |")
PY
