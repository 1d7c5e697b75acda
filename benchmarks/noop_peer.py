"""A recommend endpoint that does no work: the HTTP floor of the benchmarks' machine.

``POST /markets/<market>/recommend`` under uvicorn as the service runs (one process,
uvloop and httptools where installed, no access log), an ordinary FastAPI route whose
body FastAPI parses and validates with the service's ``RecommendIn``; the reply is a
small fixed JSON. No Redis, no graph: what is left of a request's cost is the HTTP
server's, FastAPI's and the load generator's.

    python -m benchmarks.noop_peer --port 8801
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI

from service.schemas import RecommendIn

REPLY: dict[str, Any] = {"items": [], "fallback": None}


def create_app() -> FastAPI:
    app = FastAPI(title="no-op recommend (benchmarks.noop_peer)")

    @app.post("/markets/{market}/recommend")
    async def recommend(market: str, body: RecommendIn) -> dict[str, Any]:
        return REPLY

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.noop_peer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    args = parser.parse_args(argv)
    import uvicorn  # as service/cli.py: the same server, the same settings

    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="info", access_log=False)


if __name__ == "__main__":
    main()
