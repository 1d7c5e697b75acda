"""Schemathesis fuzzes the real service (a ``cmr serve`` process, the tiny store, a real
redis-server) from the service's own /openapi.json, with every check: no 5xx; status,
content type, headers and body as documented; invalid input refused, valid input
accepted; the API key enforced.

CI runs ``CMR_FUZZ_EXAMPLES`` (default 25) generated cases per operation and phase,
seed 0, besides schemathesis's coverage cases. A long run raises it, e.g.
``CMR_FUZZ_EXAMPLES=1000 CMR_FUZZ_SEED=random pytest tests/service/test_fuzz.py -s``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.processes import free_port, running_service
from model_store.store import ModelStore

EXAMPLES = int(os.environ.get("CMR_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("CMR_FUZZ_SEED", "0")  # "random": schemathesis picks one, and prints it


def test_the_service_keeps_its_openapi_contract(
    store: ModelStore, flushed_redis: str, tmp_path: Path
) -> None:
    with running_service(store.root, flushed_redis, free_port()) as service:
        command = [
            sys.executable, "-m", "schemathesis.cli", "run", f"{service.url}/openapi.json",
            "--header", "X-API-Key: bench",  # the key running_service gives the service
            "--checks", "all",
            "--max-examples", str(EXAMPLES),
            "--workers", "2",
            "--generation-database", "none",  # no state carried between runs
            "--request-timeout", "30",
            "--no-color",
            *([] if SEED == "random" else ["--seed", SEED]),
        ]  # fmt: skip
        started = time.monotonic()
        # In tmp_path: schemathesis keeps a .schemathesis/ cache in its working folder.
        result = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=tmp_path)
        seconds = time.monotonic() - started
        log = service.log_text()
    output = result.stdout + result.stderr
    found = re.search(r"Test cases:\s+(\d+) generated", output)
    cases = int(found[1]) if found else 0
    print(output[-3000:])
    print(f"fuzz: {cases} cases, exit status {result.returncode}, {seconds:.1f} s; {command}")
    assert result.returncode == 0, f"{output[-8000:]}\nservice log:\n{log[-3000:]}"
    assert cases > 0, output[-3000:]
