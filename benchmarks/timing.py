"""The one timing loop of the benchmarks, for any call.

Kept apart from ``workload`` (which needs httpx and the service) so that the
graph-level benchmarks (``scoring``, ``batch_sizes``) import only numpy,
onnxruntime and the model store: what a bare GPU machine has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple


class Timed(NamedTuple):
    calls: int
    seconds: float
    cpu_seconds: float  # this process's, every thread's, user and system


def time_calls(call: Callable[[int], object], min_seconds: float, min_calls: int = 1) -> Timed:
    """Call ``call(0)``, ``call(1)``, ... until at least ``min_calls`` calls and
    ``min_seconds`` have passed, after one untimed ``call(0)``: first-call allocations
    are not scoring speed."""
    call(0)
    made, cpu, start = 0, time.process_time(), time.perf_counter()
    while made < min_calls or time.perf_counter() - start < min_seconds:
        call(made)
        made += 1
    return Timed(made, time.perf_counter() - start, time.process_time() - cpu)
