"""Candidates per second of one scoring graph as requests are batched into one call.

The graph-level form of "batching on against off": B requests (rows) per call, each a
history of N items ranking the same C candidates of the largest market's catalogue,
for B = 1, 16, 64 and C = 200 and that whole catalogue (N = 50), timed one case after
another in this process. Prints the machine (onnxruntime, GPU and driver when there is
one), then a markdown table: the provider the session actually runs on, B, C, N,
ms per call, candidates/s, and each B's candidates/s over B = 1's at the same C. No
service, no Redis: what the batcher can buy at most, not what the service delivers.

    python -m benchmarks.batch_sizes --store runs/store [--version V] [--provider cuda]
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.scoring import Timing, add_session_arguments, requests, run_graph
from benchmarks.timing import time_calls
from model_store.catalogue import load_catalogues
from model_store.manifest import StoreError
from model_store.store import ModelStore
from service.sessions import Provider, make_session

BATCHES = (1, 16, 64)
CANDIDATES = (200, 0)  # 0: the largest market's whole catalogue
HISTORY = 50
NVIDIA = Path("/proc/driver/nvidia")


def bench_batch_sizes(
    store: ModelStore,
    *,
    version: str | None = None,
    provider: Provider = "auto",
    threads: int = 0,
    batches: Sequence[int] = BATCHES,
    candidates: Sequence[int] = CANDIDATES,
    history: int = HISTORY,
    min_seconds: float = 1.0,
    min_calls: int = 2,
    seed: int = 0,
) -> list[Timing]:
    """Time the largest market's graph of ``version`` (default: the current one) for
    each candidate count (capped at the catalogue; 0 = all of it) and batch size."""
    opened = store.open(version)
    manifest = opened.manifest
    catalogues = load_catalogues(opened.file(manifest.catalogues))
    market = max(catalogues, key=lambda m: len(catalogues[m]))
    items = catalogues[market].items
    graph, _ = manifest.graph_for(market)
    session = make_session(opened.file(graph), provider=provider, intra_threads=threads)
    used = session.get_providers()[0]
    counts = dict.fromkeys(min(c, len(items)) if c > 0 else len(items) for c in candidates)
    rng = np.random.default_rng(seed)
    timings = []
    for c in counts:
        for b in batches:
            rows, ranked = requests(rng, items, b, history, c)
            market_rows = np.full(b, manifest.markets[market], dtype=np.int64)
            feed = {"history": rows, "candidates": ranked, "market": market_rows}
            timed = time_calls(partial(run_graph, session, feed), min_seconds, min_calls)
            timings.append(
                Timing(manifest.version, manifest.variant, used, history, c, *timed[:2], b)
            )
    return timings


def batch_table(timings: Sequence[Timing]) -> str:
    """Markdown: one row per case; "x B=1" is its candidates/s over B = 1's at the same
    provider, C and N (blank where B = 1 was not timed)."""
    single = {(t.provider, t.candidates, t.history): t for t in timings if t.batch == 1}
    lines = [
        "| provider | B | C | N | calls | ms/call | candidates/s | x B=1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in timings:
        one = single.get((t.provider, t.candidates, t.history))
        ratio = f"{t.candidates_per_s / one.candidates_per_s:.1f}x" if one else ""
        lines.append(
            f"| {t.provider} | {t.batch} | {t.candidates:,} | {t.history} | {t.calls} "
            f"| {t.ms_per_call:.2f} | {t.candidates_per_s:,.0f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> str:
    """onnxruntime's version and place, the providers it offers, and the NVIDIA GPUs
    and driver the kernel reports (none on a machine without the driver)."""
    lines = [
        f"onnxruntime {ort.__version__} ({Path(ort.__file__).parent}), "
        f"providers {ort.get_available_providers()}, Python {platform.python_version()}"
    ]
    models = [
        line.split(":", 1)[1].strip()
        for info in sorted(NVIDIA.glob("gpus/*/information"))
        for line in info.read_text().splitlines()
        if line.startswith("Model:")
    ]
    driver = NVIDIA / "version"
    if driver.exists():
        lines.append(f"GPUs {models}; {driver.read_text().splitlines()[0]}")
    else:
        lines.append("no NVIDIA driver")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.batch_sizes",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[2],
    )
    parser.add_argument("--store", type=Path, required=True, help="model store folder")
    parser.add_argument("--version", help="the version to time (default: the current one)")
    add_session_arguments(parser)
    parser.add_argument(
        "--batch",
        type=int,
        action="append",
        help=f"requests per call; repeatable (default: {', '.join(map(str, BATCHES))})",
    )
    parser.add_argument(
        "--candidates",
        type=int,
        action="append",
        help="candidates per request, 0 = the largest market's whole catalogue; "
        "repeatable (default: 200 and 0)",
    )
    parser.add_argument(
        "--history", type=int, default=HISTORY, help="history length (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if any(b < 1 for b in args.batch or ()) or any(c < 0 for c in args.candidates or ()):
        parser.error("--batch must be >= 1 and --candidates >= 0")
    try:
        timings = bench_batch_sizes(
            ModelStore(args.store), version=args.version, provider=args.provider,
            threads=args.threads, batches=args.batch or BATCHES,
            candidates=args.candidates or CANDIDATES, history=args.history,
            min_seconds=args.min_seconds,
        )  # fmt: skip
    except (StoreError, FileNotFoundError, ValueError, KeyError) as error:  # bad input
        parser.exit(2, f"error: {error}\n")
    print(machine() + "\n" + batch_table(timings), end="")


if __name__ == "__main__":
    main()
