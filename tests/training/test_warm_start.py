"""Warm starts (`cmr train --init-from`): the version's vocabulary grows at its end, its
items and markets keep their rows, and the candidates match a cold run's."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmr.cli import app
from model_store.store import ModelStore, Version
from model_store.vocab import Vocabulary
from tests.conftest import TINY, train_args, write_new_market
from training.data import build_interactions, load_interactions
from training.hybrid import HybridConfig, HybridRecommender
from training.market_files import read_logs
from training.protocols import build_eval_set
from training.split import make_split
from training.store_model import copy_learned, load_stored_hybrid


def _grown_data(synth_dir: Path, dest: Path) -> Path:
    """The synthetic markets plus market "ab" (sorted between aa and bb), whose
    file brings items no version knows."""
    shutil.copytree(synth_dir, dest)
    write_new_market(synth_dir, dest, code="ab")
    return dest


def test_the_vocabulary_grows_at_its_end_and_keeps_unused_items(synth_dir: Path) -> None:
    logs = read_logs(synth_dir)
    base = Vocabulary(("zzz-gone", *load_interactions(synth_dir).items.ids[::-1]))
    data = build_interactions(logs[:2], base_items=base)  # aa and bb: fewer items than all
    assert data.items.ids == base.ids  # nothing new; unused and reversed order kept
    cold = build_interactions(logs[:2])
    for d in (data, cold):  # the same rows, only the indices differ
        assert len(d.user) == len(cold.user)
    pairs = {
        (cold.user_ids[u], cold.items.item(int(i)))
        for u, i in zip(cold.user, cold.item, strict=True)
    }
    assert pairs == {
        (data.user_ids[u], data.items.item(int(i)))
        for u, i in zip(data.user, data.item, strict=True)
    }
    small = Vocabulary(base.ids[:10])
    grown = build_interactions(logs, base_items=small)
    assert grown.items.ids[:10] == small.ids
    assert list(grown.items.ids[10:]) == sorted(grown.items.ids[10:])


def test_a_warm_vocabulary_ranks_the_same_candidates_as_a_cold_one(synth_dir: Path) -> None:
    logs = read_logs(synth_dir)
    cold = build_interactions(logs)
    warm = build_interactions(logs, base_items=Vocabulary(cold.items.ids[::-1]))
    for protocol in ("paper", "market", "full"):
        sets = [build_eval_set(make_split(d, "random", 3), protocol, "test", seed=3)
                for d in (cold, warm)]  # fmt: skip
        ids = [
            np.asarray(d.items.ids)[s.negatives - 1]
            for d, s in zip((cold, warm), sets, strict=True)
        ]
        assert (ids[0] == ids[1]).all(), protocol
        assert (sets[0].users == sets[1].users).all()


def test_copy_learned_keeps_rows_by_item_and_by_market_code(tiny_store: Version) -> None:
    stored = load_stored_hybrid(tiny_store.path.parents[1], "tiny-1")
    old = stored.model
    n_old = old.config.n_items
    markets = ("aa", "ab", "bb", "cc")  # a new market moves bb and cc one row down
    config = HybridConfig(**(stored.manifest.model | {"n_items": n_old + 5, "n_markets": 4}))
    target = HybridRecommender(config, old.closed_form)
    fresh = target.items.weight[n_old:].detach().clone()
    assert copy_learned(target, stored, markets=markets) == ["aa", "bb", "cc"]
    torch.testing.assert_close(target.items.weight[:n_old], old.items.weight)
    torch.testing.assert_close(target.items.weight[n_old:], fresh)  # new items: fresh rows
    for new_row, old_row in ((0, 0), (2, 1), (3, 2)):
        torch.testing.assert_close(target.market_vectors[new_row], old.market_vectors[old_row])
        torch.testing.assert_close(target.market_mix[new_row], old.market_mix[old_row])
        torch.testing.assert_close(target.market_bias[new_row, :n_old], old.market_bias[old_row])
    assert target.market_vectors[1].abs().sum() == 0 and target.market_bias[1].abs().sum() == 0


def test_cmr_train_init_from_starts_from_the_version_and_exports(
    store: ModelStore, synth_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="training")
    data = _grown_data(synth_dir, tmp_path / "data")
    run = tmp_path / "warm"
    settings = [s for s in TINY if not s.startswith("max_epochs")] + ["max_epochs=2"]
    args = [*train_args(data, run, settings), "--init-from", f"{store.root}:tiny-1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["init_from"] == f"{store.root}:tiny-1"
    assert "3 new items, markets carried over: aa,bb,cc" in caplog.text
    old = Vocabulary.load(store.open("tiny-1").file("items.json"))
    items = Vocabulary.load(run / "items.json")
    assert items.ids[: len(old)] == old.ids and len(items) == len(old) + 3
    # Pre-training began from the version: its epoch 0 was validated and kept unless beaten.
    stage = json.loads((run / "pretrained" / "stage.json").read_text())
    assert stage["curve"] and stage["best_epoch"] >= 0
    for protocol in ("market", "full"):
        assert (
            json.loads((run / f"metrics/{protocol}-test.json").read_text())["mean"]["ndcg@10"] > 0.3
        )
    export = CliRunner().invoke(app, ["export", "--run", str(run), "--store", str(store.root),
                                      "--version", "warm-1"])  # fmt: skip
    assert export.exit_code == 0, export.output
    assert Vocabulary.load(store.open("warm-1").file("items.json")).ids == items.ids
    assert store.open("warm-1").manifest.markets == {"aa": 0, "ab": 1, "bb": 2, "cc": 3}


def test_cmr_train_init_from_refuses_what_it_cannot_do(
    store: ModelStore, synth_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    cases = {
        ("--set", "d_model=64"): "its model has d_model=32",
        ("--set", "family=bert4cmr"): "only the hybrid family",
    }
    for extra, said in cases.items():
        args = ["train", "--data", str(synth_dir), "--out", str(tmp_path / "r"), *extra]
        result = runner.invoke(app, [*args, "--init-from", str(store.root)])
        assert result.exit_code == 2, (extra, result.output)
        assert said in result.output, (extra, result.output)
    args = ["train", "--data", str(synth_dir), "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*args, "--init-from", f"{store.root}:no-such-version"])
    assert result.exit_code == 2 and "no-such-version" in result.output
