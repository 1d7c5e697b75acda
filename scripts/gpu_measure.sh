#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md, measured in one call on the device machine
# (its image: Python 3.12 with torch and CUDA, no service packages, no Redis), right
# after the call that brought the first part of the onnxruntime-gpu bundle
# (benchmarks/gpu/README.md, "Run it on the device"). This call carries the rest:
#   $BUNDLE/ort_gpu_rest.tar.xz, $BUNDLE/SHA256SUMS  onnxruntime-gpu's rest (BUNDLE:
#       benchmarks.gpu.pack's output, default build/gpu-bundle; on 2026-11-29, build/gpu-prep)
#   build/gpu-serve/wheels      the service's packages for the device's Python 3.12:
#       pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64
#       --platform manylinux_2_28_x86_64 --platform any --dest build/gpu-serve/wheels
#       fastapi "uvicorn[standard]" pydantic-settings "redis[hiredis]" prometheus-client httpx
#   build/gpu-serve/redis.tar.xz  redis-server and the libraries `ldd` lists for it, as
#       redis/redis-server and redis/lib/ (tar -cJf, from this machine's Debian package)
#   data/xmarket-electronics    the real data (the store is trained here: too big to carry)
# Each step has its own time limit and writes to $OUT as it goes, so a step that fails
# or runs out of time leaves the others' results.
#   usage: OUT=DIR scripts/gpu_measure.sh [STEP ...]   (default: every step, in order)
set -uo pipefail
out=${OUT:-/tmp/gpu-out}
py=${PY:-/opt/torch/.venv/bin/python3}
store=runs/gpu/store
mkdir -p "$out" runs/gpu
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(setup train graph binding serve ddp)
stamp() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$out/steps.txt"; }
run() { # STEP LIMIT_S: the step's function in its own shell, output to $OUT/STEP.txt
    stamp "start $1"
    timeout "$2" bash -c "$1" >"$out/$1.txt" 2>&1
    stamp "end $1: exit $?"
}

sp=$($py -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export LD_LIBRARY_PATH=$(ls -d "$sp"/nvidia/*/lib | paste -sd:):/tmp/redis/lib
export PYTHONPATH=/tmp/site:$PWD:/tmp/site-serve
export PATH=/tmp/redis:$PATH

setup() {
    $py -m benchmarks.gpu.unpack --bundle "${BUNDLE:-build/gpu-bundle}" /tmp/site \
        || { echo "the bundle's first part is gone: the machine went cold"; return 3; }
    $py -m pip install --quiet --no-index --find-links build/gpu-serve/wheels \
        --target /tmp/site-serve fastapi "uvicorn[standard]" pydantic-settings \
        "redis[hiredis]" prometheus-client httpx
    tar -xJf build/gpu-serve/redis.tar.xz -C /tmp
    redis-server --port 6390 --save "" --appendonly no --daemonize yes
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    nproc
    $py -c 'import onnxruntime, torch; print(onnxruntime.__file__, onnxruntime.get_available_providers(), torch.__version__)'
    $py -m benchmarks.gpu.check
}
train() { # the default recipe on all markets, exported: the store every step below serves
    $py -m cmr train --data data/xmarket-electronics --out runs/gpu/run --set threads=8 \
        && $py -m cmr export --run runs/gpu/run --store "$store"
}
graph() { $py -m benchmarks.batch_sizes --store "$store" --provider cuda; }
binding() { $py -m benchmarks.gpu.binding --store "$store" --provider cuda; }
serve() { # the service end to end on the GPU: one process, then four side by side
    for replicas in 1 4; do
        $py -m benchmarks.compare --store "$store" --redis-url redis://127.0.0.1:6390/0 \
            --provider cuda --clients 64 --runs ceiling on off --replicas $replicas \
            --workloads given whole --rounds 1 --seconds 8
    done
}
ddp() {
    $py -m benchmarks.ddp --data data/xmarket-electronics --device cuda --config 1x8 \
        --config 2x4 --rounds 2 --steps 30
}

export py store BUNDLE
export -f setup train graph binding serve ddp
for step in "${steps[@]}"; do
    case $step in
        setup) run setup 180 ;;
        train) run train 300 ;;
        graph | binding) run "$step" 120 ;;
        serve) run serve 300 ;;
        ddp) run ddp 180 ;;
        *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
cp -r runs/gpu/run/summary.json runs/gpu/run/train.log "$out/" 2>/dev/null
