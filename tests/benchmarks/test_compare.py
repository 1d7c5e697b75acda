"""benchmarks.compare's pure parts: the whole-catalogue workload, the ceiling's call
width, the Ray Serve peer's batch size and scoring split, and the table. No server,
no Ray (CI installs none)."""

from __future__ import annotations

import numpy as np

from benchmarks.comparison import CEILING, Case, Results, comparison_table
from benchmarks.ray_peer import Job, padded_rows, score_jobs
from benchmarks.workload import Measurement, Workload, ceiling_width, whole_catalogue
from model_store.vocab import IntArray
from service.graphs import Scores


def test_the_whole_catalogue_workload_keeps_users_and_histories_and_sends_no_candidates() -> None:
    given = Workload("ca", ["u0", "u1"], [["b", "d"], ["a"]], [["c", "e"], ["b", "c"]])
    whole = whole_catalogue(given, ["a", "b", "c", "d", "e"])
    assert (whole.users, whole.histories, whole.whole) == (given.users, given.histories, True)
    # What the service scores: the catalogue in its order, less the user's own items.
    assert whole.candidates == [["a", "c", "e"], ["b", "c", "d", "e"]]
    assert whole.bodies() == [{"user_id": "u0", "k": 10}, {"user_id": "u1", "k": 10}]
    assert given.bodies()[0] == {"user_id": "u0", "candidates": ["c", "e"], "k": 10}
    assert ceiling_width(given, 32) == 32  # 32 x 2 rows: all in one call
    big = Workload("ca", ["u"], [[]], [[str(i) for i in range(5_735)]], whole=True)
    assert ceiling_width(big, 32) == 1  # whole catalogues: one a call


class Doubling:
    """A graph whose score is the candidate index times 2 plus the market."""

    name, provider = "fake.onnx", "cpu"

    def score(self, history: IntArray, candidates: IntArray, market: IntArray) -> Scores:
        assert history.shape[0] == candidates.shape[0] == market.shape[0]
        return (candidates * 2 + market[:, None]).astype(np.float32)


def test_the_ray_peer_batches_by_padded_rows_and_hands_each_request_its_own_scores() -> None:
    graph = Doubling()
    jobs = [
        Job(graph, np.array([1, 2]), np.array([3, 4, 5]), 0),
        Job(graph, np.array([7]), np.array([6]), 1),
    ]
    assert padded_rows(jobs[:1]) == 1  # a lone request always fits, as in the service
    assert padded_rows(jobs) == 6  # 2 requests x 3 padded candidate rows
    first, second = score_jobs(jobs)
    assert first.tolist() == [6, 8, 10] and second.tolist() == [13]  # padding cut off


def run(name: str, candidates_per_s: float, latencies_ms: list[float]) -> Measurement:
    latencies = [ms / 1000 for ms in latencies_ms]
    return Measurement(name, 10, int(candidates_per_s), 1.0, latencies)


def test_the_table_shares_each_round_against_its_own_ceiling() -> None:
    results = Results()
    case = Case("200 candidates", 8)
    for ceiling, peer in ((1000, 500), (2000, 1600)):  # the machine drifts between rounds
        results.add(case, run("peer", peer, [10.0, 20.0]))
        results.add(case, run(CEILING, ceiling, []))
    lines = comparison_table(results, [CEILING]).splitlines()
    assert lines[0].startswith("| workload | clients | run | rounds | requests/s")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert rows[0] == ["200 candidates", "8", CEILING, "2", "10", "1,500", "", "", "", "100%"]
    assert rows[1][:6] == ["200 candidates", "8", "peer", "2", "10", "1,050"]
    assert rows[1][-1] == "65%"  # median of 50% and 80%, not 1,050 / 1,500
    assert rows[1][6] == "15.0"  # p50 over both rounds' requests
    lonely = Results()  # --runs without the ceiling: no shares
    lonely.add(case, run("peer", 1, []))
    (row,) = comparison_table(lonely).splitlines()[2:]
    assert row.split("|")[3].strip() == "peer" and row.split("|")[-2].strip() == ""
