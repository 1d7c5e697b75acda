#!/usr/bin/env bash
# Install the project, its test tools, redis-server and the deployment validators,
# then run the checks:
# ruff (lint), mypy (types), pytest (behaviour); without arguments, then the service
# alone in a venv with only the `serve` extra. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
install_project "train,serve,dev,federated"
# System tools the tests use: a real redis-server for the service tests, and the
# validators of the deployment files (docker-compose config, promtool).
install_system_packages redis-server=redis-server docker-compose=docker-compose \
    promtool=prometheus
echo "== ruff"
.venv/bin/ruff check cmr training model_store service tests benchmarks
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"
if [ $# -eq 0 ]; then  # the whole suite: also the service alone, in a serve-only venv
    echo "== the service alone (only the serve extra installed)"
    bash scripts/check_serve_only.sh
fi
