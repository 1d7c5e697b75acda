"""The serve benchmark end to end: the service as a real process, a real redis-server."""

from __future__ import annotations

from benchmarks.processes import free_port
from benchmarks.serve import bench_serve
from benchmarks.workload import measurement_table
from model_store.store import ModelStore


def test_bench_serve_drives_a_running_service(store: ModelStore, flushed_redis: str) -> None:
    """`python -m benchmarks.serve` end to end on the tiny store: both service runs answer every
    request, and the ceiling is measured on the same requests, in every round."""
    rounds = bench_serve(
        store.root, flushed_redis, clients=4, candidates=50, users=16, seconds=0.5,
        threads=1, provider="cpu", port=free_port(), rounds=2,
    )  # fmt: skip
    assert len(rounds) == 2
    for results in rounds:
        assert [r.name for r in results] == [
            "service, batching on",
            "service, batching off",
            "model alone (ceiling)",
        ]
        for result in results:  # the ceiling counts requests too, not its calls
            assert result.requests > 0 and result.candidates == 50 * result.requests
        assert len(results[0].latencies) == results[0].requests
    rows = {
        cells[0]: cells[1:]
        for line in measurement_table(rounds).splitlines()[2:]
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    on, ceiling = rows["service, batching on"], rows["model alone (ceiling)"]
    assert on[:2] == ["2", str(sum(r[0].requests for r in rounds))]
    assert all(float(ms) > 0 for ms in on[4:])  # p50, p95, p99
    assert ceiling[:2] == ["2", str(sum(r[2].requests for r in rounds))]
    assert ceiling[3:] == ["100%", "", "", ""]
