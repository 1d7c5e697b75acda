#!/usr/bin/env bash
# The serving half on its own: a venv with only the `serve` extra (no torch, no
# training dependencies) starts `python -m service --help`, and runs the service's unit
# tests, which use in-memory fakes for Redis and the graphs (tests/service/fakes.py).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-serve
[ -x $venv/bin/python ] || python3 -m venv $venv
# setuptools' build folders would carry modules deleted since into the wheel (build/
# itself may hold other things: the GPU bundles of benchmarks/gpu/README.md)
rm -rf build/lib build/bdist.*
echo "== installing .[serve] (and pytest) into $venv"
source scripts/venv.sh
uv_install $venv/bin/python ".[serve]" "pytest>=8.0" "pytest-timeout>=2.3" "httpx>=0.27"
if $venv/bin/python -c "import torch" 2>/dev/null; then
    echo "torch is importable in the serve-only venv" >&2
    exit 1
fi
$venv/bin/python -m service --help >/dev/null
echo "python -m service --help: ok"
# Every service test module but those that need redis-server, trained graphs or
# other processes (test_integration, test_onboarding, the event log's, and the system
# tests beside it).
mapfile -t unit < <(ls tests/service/test_*.py tests/service/routes/test_*.py |
    grep -v -E "test_(integration|onboarding|event_log|event_export|deploy|fuzz|prometheus|api)\.py$")
$venv/bin/python -m pytest -q -p no:cacheprovider "${unit[@]}"
