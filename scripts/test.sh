#!/usr/bin/env bash
# Install the project, its test tools and redis-server, then run the checks:
# ruff (lint), mypy (types), pytest (behaviour). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
install_project "train,serve,dev"
# The service tests run a real redis-server.
if ! command -v redis-server >/dev/null; then
    echo "== installing redis-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
echo "== ruff"
.venv/bin/ruff check training model_store service tests benchmarks
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"
