"""benchmarks.generalise: the data sets it writes and the ratios it prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.generalise import ratio_rows, suite, without_dates
from training.data import load_interactions


def test_without_dates_keeps_every_row_and_drops_the_dates(
    xmarket_dir: Path, tmp_path: Path
) -> None:
    without_dates(xmarket_dir)(tmp_path / "plain")
    plain, dated = load_interactions(tmp_path / "plain"), load_interactions(xmarket_dir)
    assert not plain.has_time and dated.has_time
    assert plain.markets == dated.markets and plain.items.ids == dated.items.ids
    assert len(plain.user) == len(dated.user)


def test_a_synthetic_shape_writes_loadable_markets(tmp_path: Path) -> None:
    data_set = suite(tmp_path)["synth-small"]  # the others take longer to draw
    assert data_set.write is not None
    data_set.write(tmp_path / "synth-small")
    data = load_interactions(tmp_path / "synth-small")
    assert data.markets == ("aa", "bb", "cc") and data.items.size > 700


def _result(model: str, protocol: str, markets: dict[str, float]) -> dict[str, Any]:
    metrics = {c: {"ndcg@10": v, "recall@10": v, "mrr": v} for c, v in markets.items()}
    mean = {k: sum(m[k] for m in metrics.values()) / len(metrics) for k in metrics["aa"]}
    return {"model": model, "protocol": protocol, "split": "test", "markets": metrics,
            "mean": mean}  # fmt: skip


def test_ratios_name_the_lowest_market() -> None:
    results = []
    for protocol in ("market", "full"):
        results += [
            _result("hybrid", protocol, {"aa": 0.6, "bb": 0.3}),
            _result("ease", protocol, {"aa": 0.5, "bb": 0.4}),
            _result("popularity", protocol, {"aa": 0.2, "bb": 0.2}),
        ]
    market, full = ratio_rows("toy", results)
    cells = [c.strip() for c in market.strip("|").split("|")]
    assert cells[:7] == ["toy", "market", "1", "0.2000", "0.4500", "0.4500", "**1.000x**"]
    assert cells[7] == "bb 0.750x"
    assert full.startswith("| toy | full |")


def test_an_unknown_data_set_is_refused(tmp_path: Path) -> None:
    from benchmarks.generalise import main

    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--suite", "nope"])
