"""IOBinding and CUDA graphs on a real scoring graph, against the plain call the service makes.

For each case (B requests per call, C candidates each, histories of N = 50 items from the
largest market's catalogue) three ways of calling the same graph, timed one after another:

- ``run``: ``session.run`` with numpy inputs and outputs, as the service calls it;
- ``iobinding``: inputs copied to the device and the output bound there, copied back once
  per call (what a service holding numpy inputs and needing numpy scores can save);
- ``cuda graph``: a session with CUDA graph capture on, every input and the output at a
  fixed shape (a shape bucket) in device memory that the call updates in place; the first
  call captures, later calls replay. Only with ``--provider cuda``; a failed capture (a
  graph with nodes onnxruntime keeps on the CPU) is reported as such, not hidden.

Each way's scores are checked against ``run``'s before it is timed.

    python -m benchmarks.gpu.binding --store STORE [--provider cuda] [--batch 1 --batch 64]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.batch_sizes import machine
from benchmarks.scoring import requests
from benchmarks.timing import time_calls
from model_store.catalogue import load_catalogues
from model_store.store import ModelStore
from service.sessions import CUDA, make_session

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class Case:
    way: str
    batch: int
    candidates: int
    ms_per_call: float  # nan when the way failed
    note: str = ""

    @property
    def candidates_per_s(self) -> float:
        return self.batch * self.candidates / self.ms_per_call * 1000


def bound_call(session: ort.InferenceSession, feed: Feed, device: str) -> Callable[[], np.ndarray]:
    """A call that copies ``feed`` to ``device`` and returns the output copied back."""
    binding = session.io_binding()

    def call() -> np.ndarray:
        for name, value in feed.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
        binding.bind_output("scores", device)
        session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0])

    return call


def graph_call(path: Path, feed: Feed) -> Callable[[], np.ndarray]:
    """A CUDA-graph call at ``feed``'s shapes: inputs updated in place, then a replay."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=[(CUDA, {"enable_cuda_graph": "1"})]
    )
    inputs = {name: ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0) for name, v in feed.items()}
    b, c = feed["candidates"].shape
    output = ort.OrtValue.ortvalue_from_shape_and_type((b, c), np.float32, "cuda", 0)
    binding = session.io_binding()
    for name, value in inputs.items():
        binding.bind_ortvalue_input(name, value)
    binding.bind_ortvalue_output("scores", output)

    def call() -> np.ndarray:
        for name, value in feed.items():
            inputs[name].update_inplace(value)  # a replay reads the captured addresses
        session.run_with_iobinding(binding)
        return np.asarray(output.numpy())

    return call


def bench_binding(
    store: ModelStore, *, provider: str, batches: Sequence[int], candidates: Sequence[int],
    history: int = 50, min_seconds: float = 1.0, graphs: bool = True,
) -> list[Case]:  # fmt: skip
    """Every way at every (B, C) on the current version's largest market's graph;
    ``graphs`` False leaves the CUDA graph out (a failed capture aborts the process)."""
    opened = store.open()
    manifest = opened.manifest
    catalogues = load_catalogues(opened.file(manifest.catalogues))
    market = max(catalogues, key=lambda m: len(catalogues[m]))
    items = catalogues[market].items
    path = opened.file(manifest.graph_for(market)[0])
    session = make_session(path, provider="cuda" if provider == "cuda" else "cpu")
    rng = np.random.default_rng(0)
    cases = []
    for c in dict.fromkeys(min(c, len(items)) if c > 0 else len(items) for c in candidates):
        for b in batches:
            rows, ranked = requests(rng, items, b, history, c)
            feed = {
                "history": rows,
                "candidates": ranked,
                "market": np.full(b, manifest.markets[market], dtype=np.int64),
            }
            expected = np.asarray(session.run(None, feed)[0])
            ways = ["run", "iobinding"] + (["cuda graph"] if provider == "cuda" and graphs else [])
            for way in ways:
                make = partial(_make_call, way, session=session, path=path, feed=feed)
                cases.append(_time(way, make, expected, b, c, min_seconds))
    return cases


def _make_call(
    way: str, *, session: ort.InferenceSession, path: Path, feed: Feed
) -> Callable[[], np.ndarray]:
    if way == "run":
        return lambda: np.asarray(session.run(None, feed)[0])
    if way == "iobinding":
        return bound_call(session, feed, "cuda" if on_cuda(session) else "cpu")
    return graph_call(path, feed)


def on_cuda(session: ort.InferenceSession) -> bool:
    """Whether the session really runs on CUDA (onnxruntime may have fallen back)."""
    return bool(session.get_providers()[0] == CUDA)


def _time(
    way: str, make: Callable[[], Callable[[], np.ndarray]], expected: np.ndarray,
    batch: int, candidates: int, min_seconds: float,
) -> Case:  # fmt: skip
    try:
        call = make()
        got = call()  # a CUDA graph's capture happens here
        got = call()  # and its first replay here
    except Exception as e:  # onnxruntime's errors share no base; the failure is the result
        return Case(way, batch, candidates, float("nan"), f"failed: {str(e).splitlines()[0]}")
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-4):
        worst = float(np.abs(got - expected).max())
        return Case(way, batch, candidates, float("nan"), f"scores differ (max {worst:.3g})")
    timed = time_calls(lambda _: call(), min_seconds, 2)
    return Case(way, batch, candidates, timed.seconds / timed.calls * 1000)


def binding_table(cases: Sequence[Case]) -> str:
    plain = {(c.batch, c.candidates): c for c in cases if c.way == "run"}
    lines = [
        "| way | B | C | ms/call | candidates/s | x run | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        base = plain.get((c.batch, c.candidates))
        speed = f"{c.candidates_per_s:,.0f}" if c.ms_per_call == c.ms_per_call else ""
        ratio = f"{base.ms_per_call / c.ms_per_call:.2f}x" if base and speed else ""
        ms = f"{c.ms_per_call:.3f}" if speed else ""
        lines.append(
            f"| {c.way} | {c.batch} | {c.candidates:,} | {ms} | {speed} | {ratio} | {c.note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu.binding", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--store", type=Path, required=True, help="model store folder")
    parser.add_argument("--provider", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--batch", type=int, action="append", help="default: 1 and 64")
    parser.add_argument(
        "--candidates", type=int, action="append", help="0 = whole catalogue; default 200, 0"
    )
    parser.add_argument("--min-seconds", type=float, default=1.0, help="per case")
    parser.add_argument(
        "--no-cuda-graph",
        action="store_true",
        help="skip the CUDA graph way (its failed capture can abort the process)",
    )
    args = parser.parse_args(argv)
    cases = bench_binding(
        ModelStore(args.store), provider=args.provider, batches=args.batch or (1, 64),
        candidates=args.candidates or (200, 0), min_seconds=args.min_seconds,
        graphs=not args.no_cuda_graph,
    )  # fmt: skip
    print(machine() + "\n" + binding_table(cases), end="")


if __name__ == "__main__":
    main()
