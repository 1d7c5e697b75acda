"""The recommend endpoint served by Ray Serve with ``@serve.batch``: the benchmarks' peer.

``POST /markets/<market>/recommend`` does the service's work per request, with the
service's own building blocks: the body validated by ``RecommendIn``, the user's
history read from the same Redis keys by ``RedisHistory`` (service/history.py), the
candidates chosen and the top k taken by the served ``LoadedVersion``
(service/graphs.py), the graph loaded, checked and warmed by ``load_version`` with the
service's session settings (service/sessions.py), and the same JSON reply. Only the
serving around it is Ray Serve's: its HTTP ingress, its replicas, and
``@serve.batch`` gathering concurrent requests into one onnxruntime call.

Configured as Ray Serve's docs advise (``RAY_SETTINGS`` below; docs/benchmarks.md):
its high-throughput mode (HAProxy in front of replicas that serve HTTP themselves);
one replica per core, each reserving it (``num_cpus=1``) and calling onnxruntime with
one thread, as the service runs two calls of one thread on 2 cores; a batch bounded,
as in the service, by padded candidate rows (``batch_size_fn``; 1,024 on CPU) and a
2 ms wait; ``max_ongoing_requests`` high enough that every client's request can wait
in a replica's batch queue; no access log (the service has none). Ray's node address
is 127.0.0.1: clients reach it, and its processes one another, over the loopback.

Ray is imported only in ``main`` (``pip install -e '.[bench]'``): CI never needs it.

    python -m benchmarks.ray_peer --store runs/store --redis-url redis://localhost:6390/0 \\
        --port 8800 --ready-file /tmp/ray-ready
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import signal
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, get_args

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from model_store.store import ModelStore
from model_store.vocab import IntArray
from service import redis_client
from service.errors import ServiceError
from service.event_log import EventLog
from service.graphs import Graph, MarketModel, Scores
from service.history import RedisHistory
from service.loading import load_version
from service.ranking import rank, reply
from service.schemas import RecommendIn
from service.scorer import DEFAULT_ROWS, score_call
from service.sessions import Provider
from service.settings import Settings

# Ray Serve's high-throughput mode, as its docs advise from Ray 2.55 on ("Enable High
# Throughput on Ray Serve"): HAProxy as the HTTP ingress, balancing over replicas that
# serve HTTP themselves (direct ingress), and the throughput-optimized flags (user code
# and router on the replica's own event loop, gRPC between Serve's processes, buffered
# request logs). Through Ray's Python proxy instead, each request cost the proxy and
# the replica several times the service's whole work here. A variable already set in
# the environment wins, e.g. RAY_SERVE_ENABLE_HA_PROXY=0 for the classic proxy.
RAY_SETTINGS = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # Ray starts its workers (the replicas) at nice 15, below the service and the load
    # generator at 0 on the same 2 cores: the servers compete on equal terms.
    "RAY_worker_niceness": "0",
    # A bench stops its servers with no request in flight: no 30 s drain at each stop.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    "RAY_DEDUP_LOGS": "0",
}
_PATH = re.compile(r"/markets/([^/]+)/recommend")


def _service_default(name: str) -> Any:
    """A setting's default in the service (service/settings.py), so the peer follows it."""
    return Settings.model_fields[name].default


class Job(NamedTuple):
    """One request's scoring: what the service's scorer queues (service/scorer.py)."""

    graph: Graph
    history: IntArray  # (N,) item indices, oldest first
    candidates: IntArray  # (C,)
    market: int


def padded_rows(jobs: Sequence[Job]) -> int:
    """``@serve.batch``'s batch size: the padded candidate rows of one call, as the
    service counts them. A lone request counts as 1, so one wider than the limit (a
    whole catalogue) is scored alone, as the service does, rather than refused."""
    if len(jobs) < 2:
        return 1
    return len(jobs) * max(len(j.candidates) for j in jobs)


def score_jobs(jobs: Sequence[Job]) -> list[Scores]:
    """Each job's scores, one padded call per graph (a worker thread's part in the service)."""
    out: list[Scores | None] = [None] * len(jobs)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        groups[id(job.graph)].append(i)
    for rows in groups.values():
        part = [jobs[i] for i in rows]
        scores = score_call(
            part[0].graph,
            histories=[j.history for j in part],
            candidates=[j.candidates for j in part],
            markets=[j.market for j in part],
        )
        for i, one in zip(rows, scores, strict=True):
            out[i] = one
    return [s for s in out if s is not None]


def _json(content: object, status: int = 200) -> Response:
    # JSON has no NaN: as in the service, a non-finite score fails rather than reach a client.
    return Response(json.dumps(content, allow_nan=False), status, media_type="application/json")


class Recommender:
    """One Ray Serve replica of the recommend endpoint."""

    def __init__(
        self, *, store: str, redis_url: str, provider: Provider, threads: int, max_rows: int,
        max_wait_s: float,
    ) -> None:  # fmt: skip
        self.loaded = load_version(
            ModelStore(Path(store)), None, provider=provider, intra_threads=threads,
            inter_threads=int(_service_default("inter_threads")),
        )  # fmt: skip
        timeout_s = float(_service_default("redis_timeout_s"))
        self.history = RedisHistory(
            redis_client.connect(redis_url, timeout_s),
            max_length=int(_service_default("history_length")),
            dedup_ttl_s=int(_service_default("dedup_ttl_s")),
            timeout_s=timeout_s,
            log=EventLog(max_length=int(_service_default("event_log_maxlen"))),
        )
        rows = max_rows or DEFAULT_ROWS.get(self.loaded.provider, DEFAULT_ROWS["cpu"])
        serve = importlib.import_module("ray.serve")
        # Applied here rather than as a decorator: the limits come from the command line.
        self.score = serve.batch(
            max_batch_size=rows, batch_wait_timeout_s=max_wait_s, batch_size_fn=padded_rows
        )(self.score_batch)

    async def score_batch(self, jobs: list[Job]) -> list[Scores]:
        # onnxruntime off the event loop, as in the service: the loop keeps taking requests.
        return await asyncio.to_thread(score_jobs, jobs)

    async def __call__(self, request: Request) -> Response:
        found = _PATH.fullmatch(request.url.path)
        if request.method != "POST" or found is None:
            return _json({"error": "no such route"}, 404)
        market = found.group(1)
        try:
            body = RecommendIn.model_validate_json(await request.body())
        except ValidationError as e:
            return _json({"error": "invalid request", "detail": str(e)}, 422)
        try:
            return _json(await self.recommend(market, body))
        except ServiceError as e:
            return _json({"error": str(e), "detail": e.detail}, e.status)

    async def recommend(self, market: str, body: RecommendIn) -> dict[str, Any]:
        """The service's recommend route's work (service/ranking.py), batched by Ray."""
        loaded = self.loaded
        ranking = loaded.ranking(market, new_markets=())
        stored = await self.history.history(market, body.user_id)
        ranked = await rank(
            loaded, ranking, market=market, stored=stored, candidates=body.candidates,
            k=body.k, exclude_seen=body.exclude_seen, score=self.score_one,
        )  # fmt: skip
        return reply(loaded, ranked, market=market, user_id=body.user_id)

    async def score_one(
        self, history: IntArray, candidates: IntArray, model: MarketModel
    ) -> Scores:
        scores: Scores = await self.score(Job(model.graph, history, candidates, model.index))
        return scores


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ray_peer", description=__doc__.split("\n\n")[0]
    )
    add = parser.add_argument
    add("--store", type=Path, required=True, help="model store folder")
    add("--redis-url", required=True, help="the Redis holding the users' histories")
    add("--port", type=int, required=True, help="Ray Serve's HTTP port (on 127.0.0.1)")
    add("--provider", choices=get_args(Provider), default="auto", help="(default: %(default)s)")
    cores = len(os.sched_getaffinity(0))
    add("--replicas", type=int, default=cores, help="replicas, one CPU each (default: the cores)")
    add("--threads", type=int, default=1, help="onnxruntime threads per replica (default: 1)")
    add("--max-rows", type=int, default=0, help="candidate rows per call; 0: the service's")
    add(
        "--max-wait-ms",
        type=float,
        default=float(_service_default("max_wait_ms")),
        help="batch wait (default: the service's, %(default)s)",
    )
    add("--ready-file", type=Path, help="touched once the app is deployed")
    args = parser.parse_args(argv)
    # Before Ray is imported and starts its processes, which inherit them; PYTHONPATH
    # lets the replicas import this module (benchmarks/ is not an installed package).
    for name, value in RAY_SETTINGS.items():
        os.environ.setdefault(name, value)
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    ray = importlib.import_module("ray")
    serve = importlib.import_module("ray.serve")
    ray.init(
        num_cpus=cores, include_dashboard=False, logging_level="warning",
        _node_ip_address="127.0.0.1",
    )  # fmt: skip
    # After ray.init, whose own SIGTERM handler would end this process on the spot and
    # leave Ray's processes behind: a SIGTERM shuts Serve and Ray down.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        deployment = serve.deployment(
            name="recommend",
            num_replicas=args.replicas,
            ray_actor_options={"num_cpus": 1},
            max_ongoing_requests=256,  # every client's request may wait in a batch queue
        )(Recommender)
        app = deployment.bind(
            store=str(args.store.resolve()), redis_url=args.redis_url, provider=args.provider,
            threads=args.threads, max_rows=args.max_rows, max_wait_s=args.max_wait_ms / 1000,
        )  # fmt: skip
        serve.run(app, route_prefix="/", logging_config={"enable_access_log": False})
        if args.ready_file is not None:
            args.ready_file.touch()
        while not stop.wait(1.0):  # a timed wait: the SIGTERM handler gets to run
            pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
