"""Prometheus metrics, all named ``cmr_*``; labels never carry user or item ids.

Each app gets its own registry, so several apps (tests) never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ROW_BUCKETS = (100, 500, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cmr_requests", "HTTP requests.", ["route", "market", "status"], registry=r
        )
        self.latency = Histogram(
            "cmr_request_seconds",
            "HTTP request latency.",
            ["route", "market"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "cmr_batch_requests", "Requests per scoring call.", buckets=COUNT_BUCKETS, registry=r
        )
        self.batch_rows = Histogram(
            "cmr_batch_candidate_rows",
            "Candidate rows (padded) per scoring call.",
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "cmr_queue_wait_seconds",
            "Time a request waited before its scoring call began.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "cmr_inference_seconds",
            "onnxruntime time per scoring call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.candidates = Counter(
            "cmr_candidates_scored", "Candidates scored.", ["market"], registry=r
        )
        self.fallbacks = Counter(
            "cmr_recommend_fallbacks",
            "Recommendations ranked by popularity: a user without known history, or a new "
            "market (CMR_NEW_MARKETS) that the served version does not know yet.",
            ["market"],
            registry=r,
        )
        self.events = Counter("cmr_events_ingested", "Events appended.", ["market"], registry=r)
        self.duplicates = Counter(
            "cmr_events_duplicate", "Events dropped as already seen.", ["market"], registry=r
        )
        self.unknown_items = Counter(
            "cmr_events_unknown_items",
            "Events for items the served model does not know (stored anyway).",
            ["market"],
            registry=r,
        )
        self.redis_errors = Counter(
            "cmr_redis_errors", "Redis calls that failed or timed out.", registry=r
        )
        self.reloads = Counter(
            "cmr_model_reloads", "Model versions swapped in.", ["result"], registry=r
        )
        # Both results exist from the start at 0: a series born at 1 shows no increase,
        # so the dashboard would miss a service's first refusal.
        for result in ("loaded", "refused"):
            self.reloads.labels(result)
        self.model_info = Gauge(
            "cmr_model_info",
            "The served model: 1 for the current version.",
            ["version", "variant", "provider"],
            registry=r,
        )

    def serving(self, version: str, variant: str, provider: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version, variant, provider).set(1)
