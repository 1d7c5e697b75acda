#!/usr/bin/env bash
# Install the project and its test tools into .venv, then run the checks:
# ruff (lint), mypy (types), pytest (behaviour). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
install_project "train,dev"
echo "== ruff"
.venv/bin/ruff check training model_store service tests benchmarks
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"
