#!/usr/bin/env bash
# Warm-start retraining and onboarding measured on XMarket (docs/results.md, "Closing the
# loop"), per seed, with the temporal split (each user's latest item is the test item,
# the one before the validation item), so no model has trained on an item that another
# data set holds out:
#   warm start   each market's newest 10% of rows dropped ("old"), the recipe trained on
#                that and exported, then retrained from that version on all the data
#                (`cmr train --init-from`); beside it a cold run on all the data.
#   onboarding   each of MARKETS left out entirely, the rest trained and exported, then
#                the market onboarded from its own file (`cmr onboard`); the onboarded
#                version and the cold run (trained with the market from the start) are
#                evaluated on that market alone, beside popularity and EASE^R fitted on it
#                alone, on identical candidates (`cmr evaluate --store`).
# Each chain of steps (warm, cold, one per left-out market) of each seed runs as its own
# process, all at once; a finished step is kept, so the script resumes.
#   usage: scripts/reproduce_loop.sh [DATA_DIR] [OUT_DIR] [SEED ...]   (seeds: 0 1 2)
#   env: CMR (the command, default .venv/bin/cmr), THREADS (per process, default 1),
#        MARKETS (default "in jp mx"), SETTINGS and ONBOARD_SETTINGS (extra --set values
#        for training and for onboarding, e.g. small models in smoke tests)
set -uo pipefail
data=${1:-../shared/data/xmarket-electronics}
out=${2:-runs/reproduce-loop}
shift $(( $# > 2 ? 2 : $# ))
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
read -r -a cmr <<< "${CMR:-.venv/bin/cmr}"
read -r -a markets <<< "${MARKETS:-in jp mx}"
read -r -a settings <<< "${SETTINGS:-}"
read -r -a onboard_settings <<< "${ONBOARD_SETTINGS:-}"
threads=${THREADS:-1}
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
sub=$out/data
mkdir -p "$sub"
stamp() { echo "$(date -u +%H:%M:%S) $*"; }

common() { # the --set arguments every step of seed $1 shares, into the array `args`
    args=(--set split_scheme=temporal --set seed="$1" --set threads="$threads")
}
train() { # DATA RUN SEED [ARGS...]: a temporal-split run, test split, two protocols
    local d=$1 run=$2 seed=$3 s
    shift 3
    [ -f "$run/summary.json" ] && return 0
    common "$seed"
    args+=(--set 'eval_protocols=["market","full"]' --set 'eval_splits=["test"]')
    for s in "${settings[@]}"; do args+=(--set "$s"); done
    stamp "train $run"
    "${cmr[@]}" train --data "$d" --out "$run" "${args[@]}" "$@" >"$run.log" 2>&1
}
publish() { # RUN STORE: export the run as the store's current version
    [ -f "$2/current" ] && return 0
    stamp "export $1"
    "${cmr[@]}" export --run "$1" --store "$2" --version "$(basename "$1")" >>"$1.log" 2>&1
}
onboard() { # MARKET SEED DIR: onboard MARKET onto DIR/store-left-MARKET
    local code=$1 seed=$2 dir=$3 s
    [ -f "$dir/onboard-$code.json" ] && return 0
    common "$seed"
    for s in "${onboard_settings[@]}"; do args+=(--set "$s"); done
    stamp "onboard $code, seed $seed"
    local start
    start=$(date +%s%N)
    "${cmr[@]}" onboard --store "$dir/store-left-$code" --market "$code" \
        --data "$sub/only-$code" --new-version "onboarded-$code" "${args[@]}" \
        --json "$dir/onboard-$code.part.json" >"$dir/onboard-$code.log" 2>&1 || return 1
    echo "onboard command: $(( ($(date +%s%N) - start) / 1000000 )) ms" >>"$dir/onboard-$code.log"
    mv "$dir/onboard-$code.part.json" "$dir/onboard-$code.json"
}
baselines() { # SEED DIR: popularity and EASE^R on all the data, the runs' candidates
    [ -f "$2/baselines.json" ] && return 0
    "${cmr[@]}" evaluate --data "$data" --split-scheme temporal --seed "$1" --protocol market \
        --protocol full --model popularity --model ease --json "$2/baselines.json" \
        >"$2/baselines.log" 2>&1
}
evaluate() { # MARKET SEED DIR STORE NAME: the store beside popularity and EASE^R, market alone
    [ -f "$3/eval-$5-$1.json" ] && return 0
    "${cmr[@]}" evaluate --data "$sub/only-$1" --split-scheme temporal --seed "$2" \
        --protocol market --protocol full --model popularity --model ease --store "$4" \
        --json "$3/eval-$5-$1.json" >"$3/eval-$5-$1.log" 2>&1
}

stamp "data subsets in $sub"
[ -d "$sub/old" ] || "${cmr[@]}" data subset --data "$data" --dest "$sub/old" --drop-newest 0.1 >/dev/null
for code in "${markets[@]}"; do
    [ -d "$sub/left-$code" ] || "${cmr[@]}" data subset --data "$data" --dest "$sub/left-$code" \
        --exclude "$code" >/dev/null
    [ -d "$sub/only-$code" ] || "${cmr[@]}" data subset --data "$data" --dest "$sub/only-$code" \
        --markets "$code" >/dev/null
done

pids=()
for seed in "${seeds[@]}"; do
    dir=$out/s$seed
    mkdir -p "$dir"
    { train "$sub/old" "$dir/old" "$seed" && publish "$dir/old" "$dir/store-old" &&
        train "$data" "$dir/warm" "$seed" --init-from "$dir/store-old"; } &
    pids+=($!)
    { train "$data" "$dir/cold" "$seed" && publish "$dir/cold" "$dir/store-cold"; } &
    pids+=($!)
    for code in "${markets[@]}"; do
        { train "$sub/left-$code" "$dir/left-$code" "$seed" &&
            publish "$dir/left-$code" "$dir/store-left-$code" &&
            onboard "$code" "$seed" "$dir"; } &
        pids+=($!)
    done
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
stamp "chains done (failed: $failed)"

for seed in "${seeds[@]}"; do
    dir=$out/s$seed
    baselines "$seed" "$dir" &
    for code in "${markets[@]}"; do
        [ -f "$dir/store-cold/current" ] && evaluate "$code" "$seed" "$dir" "$dir/store-cold" cold &
        [ -f "$dir/onboard-$code.json" ] &&
            evaluate "$code" "$seed" "$dir" "$dir/store-left-$code" onboarded &
    done
done
wait
stamp "done"
exit $failed
