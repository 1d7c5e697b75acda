"""Candidates per second of each store version's scoring graph under onnxruntime.

One request is one row: a history of N items (10, 50) and C candidates (100, 1,000
and the largest market's whole catalogue). Every graph is timed on the same inputs in
the same process, case by case in turn, so the ratio between variants is meaningful
on a shared, noisy machine even where the absolute figures are not. Prints a markdown
table, and the history-once / paper ratios where both variants ran.

    python -m benchmarks.scoring --store runs/store [--version V ...] [--threads 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import get_args

import numpy as np
import onnxruntime as ort

from benchmarks.timing import time_calls
from model_store.catalogue import load_catalogues
from model_store.manifest import StoreError
from model_store.store import ModelStore
from model_store.vocab import IntArray
from service.sessions import Provider, active_provider, make_session

HISTORY_LENGTHS = (10, 50)
CANDIDATE_COUNTS = (100, 1000)  # plus the largest market's whole catalogue


@dataclass(frozen=True)
class Timing:
    version: str
    variant: str
    provider: str
    history: int
    candidates: int  # per request
    calls: int
    seconds: float
    batch: int = 1  # requests (rows) per call

    @property
    def candidates_per_s(self) -> float:
        return self.calls * self.batch * self.candidates / self.seconds

    @property
    def ms_per_call(self) -> float:
        return self.seconds / self.calls * 1000


def requests(
    rng: np.random.Generator, items: IntArray, batch: int, history: int, candidates: int
) -> tuple[IntArray, IntArray]:
    """``batch`` requests from a catalogue's ``items``: histories (batch, history) drawn
    from them, and one shuffled list of ``candidates`` of them (all of them if fewer)
    that every request ranks -> (batch, min(candidates, len(items)))."""
    drawn = rng.choice(items, size=(batch, history))
    ranked = rng.permutation(items)[:candidates]
    return drawn, np.tile(ranked, (batch, 1))


def run_graph(session: ort.InferenceSession, feed: Mapping[str, IntArray], _call: int) -> object:
    """One scoring call; ``time_calls`` numbers them, and each is the same."""
    return session.run(None, feed)


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
            history, candidates = requests(rng, largest.items, 1, n, c)
            cases.append((n, candidates.shape[1], history, candidates))
    sessions = []
    for version in opened:
        manifest = version.manifest
        graph = manifest.pretrained or next(iter(manifest.graphs.values()))
        sessions.append(
            (manifest, make_session(version.file(graph), provider=provider, intra_threads=threads))
        )
    market = np.zeros(1, dtype=np.int64)
    timings = []
    # Case by case, every graph in turn: a slow spell of a shared machine then hits
    # both sides of a ratio rather than one.
    for n, c, history, candidates in cases:
        feed = {"history": history, "candidates": candidates, "market": market}
        for manifest, session in sessions:
            timed = time_calls(partial(run_graph, session, feed), min_seconds, min_calls)
            provider_used = active_provider(session)
            timings.append(
                Timing(manifest.version, manifest.variant, provider_used, n, c, *timed[:2])
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


def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """--threads, --provider and --min-seconds: how the graph-level benchmarks make
    their sessions (service/sessions.py's ``make_session``) and time them."""
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime intra-op threads; 0 (default) = one per core",
    )
    parser.add_argument(
        "--provider",
        choices=get_args(Provider),
        default="auto",
        help="execution provider (default: %(default)s; cuda fails rather than fall back)",
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="time each case at least this long (default: %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scoring",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--store", type=Path, required=True, help="model store folder")
    parser.add_argument(
        "--version",
        action="append",
        default=[],
        help="a version to time (default: every version); repeatable",
    )
    add_session_arguments(parser)
    args = parser.parse_args(argv)
    try:
        timings = bench_scoring(
            ModelStore(args.store), args.version, args.provider, args.threads, args.min_seconds
        )
    except (StoreError, FileNotFoundError, ValueError, KeyError) as error:  # bad input
        parser.exit(2, f"error: {error}\n")
    print(timing_table(timings), end="")


if __name__ == "__main__":
    main()
