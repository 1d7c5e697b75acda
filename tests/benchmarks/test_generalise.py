"""benchmarks.generalise: the data sets it writes and the ratios it prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.generalise import CHOOSING, TESTED, chosen_on, ratio_rows, suite, without_dates
from training.config import HybridTrainConfig, parse_recipe
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


def test_leave_markets_out_chooses_on_other_markets(xmarket_dir: Path, tmp_path: Path) -> None:
    data_set = suite(xmarket_dir)["xmarket-lmo"]
    assert data_set.write is not None and data_set.choose_on is not None
    data_set.write(tmp_path / "tested")
    data_set.choose_on(tmp_path / "choosing")
    tested, choosing = (
        load_interactions(tmp_path / "tested"),
        load_interactions(tmp_path / "choosing"),
    )
    assert tested.markets == TESTED and choosing.markets == CHOOSING
    # Every row of XMarket is in one of the two, once.
    assert len(tested.user) + len(choosing.user) == len(load_interactions(xmarket_dir).user)


def test_what_a_run_chose_becomes_settings_that_fix_it(tiny_run: Path) -> None:
    # A finished run is read, not trained again (no data needed).
    settings = chosen_on(tmp_data := tiny_run / "absent", tiny_run, seed=0, settings=[])
    assert not tmp_data.exists()
    recipe = parse_recipe(None, settings)
    assert isinstance(recipe.train, HybridTrainConfig)
    assert recipe.train.lr_candidates == ()  # nothing left to choose
    config = json.loads((tiny_run / "config.json").read_text())
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert recipe.train.lr == summary["pretrain"]["lr"] == config["pretrain_lr"]
    # The closed form's settings and the rate are fixed; what pre-training kept past its
    # rate (a sum, a network's scale) has no rate to be chosen against when fixed.
    for name in set(config["chosen"]) - {"pretrain_lr", "networks", "network_scale"}:
        assert recipe.model[name] == config["model"][name], name


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
