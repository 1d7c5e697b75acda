"""Real redis-server processes and the real service, for the fault tests.

``CMR_RELIABILITY=full`` runs the long forms (docs/reliability.md); the default is
the short form CI runs. ``CMR_RELIABILITY_REPORT=FILE`` appends every figure to FILE
(JSON lines); the figures are printed either way (``pytest -s`` shows them)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.processes import RedisProcess

FULL = os.environ.get("CMR_RELIABILITY", "short") == "full"

Report = Callable[..., None]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    def write(**figures: object) -> None:
        line = {
            "test": request.node.name,
            "form": "full" if FULL else "short",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            **figures,
        }
        print(json.dumps(line))
        path = os.environ.get("CMR_RELIABILITY_REPORT")
        if path:
            with open(path, "a") as out:
                out.write(json.dumps(line) + "\n")

    return write


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server with ``appendfsync always``, started; stopped after the test."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
