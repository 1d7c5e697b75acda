"""benchmarks.federated_planted: the wins counted on hand-made results (a tie is no win,
each stage against the baseline's same stage), and one tiny run of the command whose
files agree with each other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.federated_planted import main, model_name, wins, wins_table


def result(model: str, seed: int, **ndcg: float) -> dict[str, Any]:
    markets = {code: {"ndcg@10": v, "users": 10} for code, v in ndcg.items()}
    return {"model": model, "protocol": "market", "split": "test", "seed": seed,
            "markets": markets}  # fmt: skip


RESULTS = [
    result("hybrid-fedavg", 0, aa=0.5, bb=0.3),
    result("hybrid-fedavg", 1, aa=0.5, bb=0.3),
    result("hybrid-fedavg", 2, aa=0.9, bb=0.9),  # no baseline at seed 2: not compared
    result("hybrid-alone", 0, aa=0.4, bb=0.3),  # bb ties: no win
    result("hybrid-alone", 1, aa=0.6, bb=0.2),
    result("hybrid-fedavg-no-adapt", 0, aa=0.1, bb=0.1),
    result("hybrid-alone-no-adapt", 0, aa=0.2, bb=0.0),
]


def test_wins_count_seeds_times_markets_above_the_baseline_and_no_tie() -> None:
    assert wins(RESULTS, model="hybrid-fedavg", baseline="hybrid-alone") == (2, 4)
    assert wins(RESULTS, model="hybrid-alone", baseline="hybrid-fedavg") == (1, 4)
    assert wins(RESULTS, model="hybrid-fedavg", baseline="hybrid-fedprox") is None
    other_protocol = [{**r, "protocol": "full"} for r in RESULTS]
    assert wins(other_protocol, model="hybrid-fedavg", baseline="hybrid-alone") is None


def test_the_wins_table_compares_each_stage_with_the_baselines_same_stage() -> None:
    table = wins_table(RESULTS, ["hybrid-alone", "hybrid-fedavg-ce", "hybrid-fedavg"])
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    rows = {model: rest for model, *rest in cells}
    assert rows["hybrid-fedavg"] == ["2/4", "-", "-"]  # none of fedavg-ce; not itself
    assert rows["hybrid-fedavg-no-adapt"] == ["1/2", "-", "-"]  # against alone-no-adapt
    assert rows["hybrid-alone"] == ["-", "-", "1/4"]


def test_a_tiny_run_writes_results_and_a_table_that_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_md = tmp_path / "raw.json", tmp_path / "table.md"
    main(["--seeds", "0", "--variants", "fedavg-ce", "alone", "--json", str(out_json),
          "--markdown", str(out_md)])  # fmt: skip
    printed = capsys.readouterr().out
    assert out_md.read_text() == printed
    raw = json.loads(out_json.read_text())
    names = {model_name("fedavg-ce"), model_name("alone")}
    assert {r["model"] for r in raw["results"]} == names | {n + "-no-adapt" for n in names}
    assert {r["seed"] for r in raw["results"]} == {0} and raw["seeds"] == [0]
    assert all(set(r["markets"]) == {"aa", "bb", "cc"} for r in raw["results"])
    won = wins(raw["results"], model="hybrid-fedavg-ce", baseline="hybrid-alone")
    assert won is not None and f"| hybrid-fedavg-ce | {won[0]}/3 | - | - |" in printed
    assert {s["model"] for s in raw["seconds"]} == names
    with pytest.raises(SystemExit):
        main(["--seeds", "1,1"])  # repeated seeds are refused before any run
