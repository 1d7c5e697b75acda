"""What benchmarks.compare measured, and its one markdown table. Pure: no processes.

Results are kept per case (a workload at a number of clients) and per run (the
ceiling, the service, a peer), one ``Measurement`` per round. A row gives the medians
over rounds of requests/s and candidates/s, the latency percentiles over every request
of every round, and the median over rounds of the run's share of the ceiling measured
in the same round for the same case (a shared machine drifts between rounds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.workload import Measurement

CEILING = "model alone (ceiling)"


@dataclass(frozen=True)
class Case:
    workload: str  # e.g. "200 candidates", "whole ca catalogue"
    clients: int


class Results:
    """Measurements by case and run, in the order they were first recorded."""

    def __init__(self) -> None:
        self.runs: dict[Case, dict[str, list[Measurement]]] = {}

    def add(self, case: Case, run: Measurement) -> None:
        self.runs.setdefault(case, {}).setdefault(run.name, []).append(run)


def requests_per_s(run: Measurement) -> float:
    return run.requests / run.seconds


def _cells(run: Sequence[Measurement], ceiling: Sequence[Measurement] | None) -> list[str]:
    rates = np.median([requests_per_s(m) for m in run])
    candidates = np.median([m.candidates_per_s for m in run])
    # Round k of a run against round k of the ceiling; blank where none was measured.
    share = "" if ceiling is None else "{:.0%}".format(np.median(
        [m.candidates_per_s / c.candidates_per_s for m, c in zip(run, ceiling, strict=True)]
    ))  # fmt: skip
    latencies = [t for m in run for t in m.latencies]
    pooled = Measurement(run[0].name, 0, 0, 1.0, latencies)
    ms = [f"{pooled.percentile(q):.1f}" if latencies else "" for q in (50, 95, 99)]
    return [str(len(run)), f"{rates:,.0f}", f"{candidates:,.0f}", *ms, share]


def comparison_table(results: Results, order: Sequence[str] = ()) -> str:
    """One row per case and run: cases in the order recorded, runs in ``order`` (those
    not named after it, as recorded). A case without its ceiling (``--runs`` left it
    out) has no shares."""
    lines = [
        "| workload | clients | run | rounds | requests/s | candidates/s "
        "| p50 ms | p95 ms | p99 ms | of ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, runs in results.runs.items():
        names = [n for n in order if n in runs] + [n for n in runs if n not in order]
        for name in names:
            cells = [case.workload, str(case.clients), name, *_cells(runs[name], runs.get(CEILING))]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
