"""Candidates per second of scoring graphs under onnxruntime, for ``cmr bench scoring``.

One request is one row: a history of N items and C candidates. Every graph is
timed on the same inputs in the same process, so the ratio between variants is
meaningful on a shared, noisy machine even where the absolute figures are not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from model_store.catalogue import load_catalogues
from model_store.store import ModelStore
from service.sessions import Provider, active_provider, make_session

HISTORY_LENGTHS = (10, 50)
CANDIDATE_COUNTS = (100, 1000)  # plus the largest market's whole catalogue


@dataclass(frozen=True)
class Timing:
    version: str
    variant: str
    provider: str
    history: int
    candidates: int
    calls: int
    seconds: float

    @property
    def candidates_per_s(self) -> float:
        return self.calls * self.candidates / self.seconds


def _time_calls(run: Callable[[], object], min_seconds: float, min_calls: int) -> tuple[int, float]:
    run()  # warm-up: first-call allocations are not scoring speed
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        run()
        calls += 1
    return calls, time.perf_counter() - start


def bench_scoring(
    store: ModelStore,
    versions: Sequence[str] = (),
    provider: Provider = "auto",
    threads: int = 0,
    min_seconds: float = 1.0,
    min_calls: int = 2,
    seed: int = 0,
) -> list[Timing]:
    """Time the pre-trained graph (else the first market's) of each version (default:
    every version in the store) on identical inputs."""
    opened = [store.open(v) for v in (versions or store.versions())]
    if not opened:
        raise ValueError(f"{store.root} holds no versions")
    first = opened[0]
    catalogues = load_catalogues(first.file(first.manifest.catalogues))
    largest = max(catalogues.values(), key=len)
    rng = np.random.default_rng(seed)
    cases = []
    for n in HISTORY_LENGTHS:
        for c in (*CANDIDATE_COUNTS, len(largest)):
            history = rng.choice(largest.items, size=(1, n))
            candidates = rng.permutation(largest.items)[None, :c]
            cases.append((n, c, history, candidates))
    sessions = []
    for version in opened:
        manifest = version.manifest
        graph = manifest.pretrained or next(iter(manifest.graphs.values()))
        sessions.append((manifest, make_session(version.file(graph), provider, threads)))
    market = np.zeros(1, dtype=np.int64)
    timings = []
    # Case by case, every graph in turn: a slow spell of a shared machine then hits
    # both sides of a ratio rather than one.
    for n, c, history, candidates in cases:
        feed = {"history": history, "candidates": candidates, "market": market}
        for manifest, session in sessions:
            calls, seconds = _time_calls(partial(session.run, None, feed), min_seconds, min_calls)
            timings.append(
                Timing(
                    manifest.version,
                    manifest.variant,
                    active_provider(session),
                    n,
                    c,
                    calls,
                    seconds,
                )
            )
    return timings


def timing_table(timings: Sequence[Timing]) -> str:
    """Markdown: candidates/s per graph and case, and history-once / paper where both ran."""
    lines = [
        "| version | variant | provider | history | candidates | calls | candidates/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in timings:
        lines.append(
            f"| {t.version} | {t.variant} | {t.provider} | {t.history} | {t.candidates} "
            f"| {t.calls} | {t.candidates_per_s:,.0f} |"
        )
    by_case: dict[tuple[int, int], dict[str, float]] = {}
    for t in timings:
        by_case.setdefault((t.history, t.candidates), {})[t.variant] = t.candidates_per_s
    ratios = [
        f"| {n} | {c} | {v['history-once'] / v['paper']:.1f}x |"
        for (n, c), v in by_case.items()
        if {"history-once", "paper"} <= set(v)
    ]
    if ratios:
        lines += ["", "| history | candidates | history-once / paper |", "|---|---|---|", *ratios]
    return "\n".join(lines) + "\n"
