#!/usr/bin/env bash
# Install the project, its test tools, redis-server and the deployment validators,
# then run the checks:
# ruff (lint), mypy (types), pytest (behaviour). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
install_project "train,serve,dev"
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
