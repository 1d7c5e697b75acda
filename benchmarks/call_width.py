"""What a request costs onnxruntime as its call gets wider: the basis of the
batching scorer's default rows per call on CPU (service/batching.py DEFAULT_ROWS).

Scores the `python -m benchmarks.serve` workload (the store's current version, its largest
market, 200 candidates per request) in calls of B requests, for several B, with
one and with two intra-op threads, and prints the candidates scored per second and
the CPU time per request. Each setting runs for ``--seconds``; the settings run one
after another in this process.

    .venv/bin/python -m benchmarks.call_width --store runs/store [--seconds 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.workload import direct_calls, make_workload, time_direct_calls
from model_store.store import ModelStore
from service.loading import load_version

WIDTHS = (1, 4, 9, 16, 32, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    store = ModelStore(args.store)
    workload = make_workload(store, None, 256, args.candidates)
    print("| threads | requests per call | candidate rows | candidates/s | CPU ms per request |")
    print("|---|---|---|---|---|")
    for threads in (1, 2):
        loaded = load_version(store, None, provider="cpu", intra_threads=threads, inter_threads=1)
        graph = loaded.markets[workload.market].graph
        for width in WIDTHS:
            calls = direct_calls(loaded, workload, width)
            run = time_direct_calls(graph, calls, args.seconds, f"width {width}")
            requests = run.candidates / args.candidates
            print(
                f"| {threads} | {width} | {width * args.candidates:,} | "
                f"{run.candidates_per_s:,.0f} | {run.cpu_seconds / requests * 1000:.2f} |"
            )


if __name__ == "__main__":
    main()
