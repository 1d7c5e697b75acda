"""Onboarding (`cmr onboard`): a market the version does not know gets its own rows and
EASE^R block from its data alone; everything the other markets use is unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from typer.testing import CliRunner

from cmr.cli import app
from model_store.store import ModelStore, Version
from model_store.vocab import Vocabulary
from tests.conftest import ONBOARD_RESULTS
from training.export import random_inputs, torch_scores
from training.hybrid_stage import MARKET_ROWS
from training.store_model import load_stored_hybrid


def test_the_onboarded_version_adds_the_market_and_keeps_every_other(
    tiny_store: Version, tiny_onboarded: Version
) -> None:
    old = load_stored_hybrid(tiny_store.path.parents[1], "tiny-1")
    new = load_stored_hybrid(tiny_onboarded.path.parents[1], "tiny-dd")
    assert new.markets == ["aa", "bb", "cc", "dd"]
    assert set(new.manifest.graphs) == {"aa", "bb", "cc", "dd"}
    # The vocabulary grows at its end: every old item keeps its index.
    n_old = len(old.vocabulary)
    assert new.vocabulary.ids[:n_old] == old.vocabulary.ids
    assert set(new.vocabulary.ids[n_old:]) == {"new-0", "new-1", "new-2"}
    assert new.catalogues["dd"].items.max() > n_old  # it sells the new items
    # Frozen: the shared weights and the old markets' rows and blocks are the version's.
    o, n = old.model, new.model
    torch.testing.assert_close(n.items.weight[: n_old + 1], o.items.weight)
    assert n.items.weight[n_old + 1 :].abs().sum() == 0  # new items: no embedding
    torch.testing.assert_close(n.shared_mix, o.shared_mix)
    torch.testing.assert_close(n.shared_bias[: n_old + 1], o.shared_bias)
    for name in MARKET_ROWS:
        torch.testing.assert_close(n.get_parameter(name)[:3, : o.get_parameter(name).shape[1]],
                                   o.get_parameter(name)[:3])  # fmt: skip
        assert n.get_parameter(name)[n.shared_row].abs().sum() == 0
    assert int(n.closed_form.market_size[3]) > 0  # dd's own EASE^R block
    # Its own rows start at zero (the shared ones alone) and are kept only if they
    # validated better; its own block alone already changes its scores.
    trained = new.manifest.train["onboarded_dd"]
    assert trained["epochs"] >= 1
    assert bool(n.market_bias[3].abs().sum() > 0) == (trained["best_epoch"] > 0)
    dd_inputs = random_inputs(np.random.default_rng(1), (8, 12, 40), n_items=n_old + 1, n_markets=1)
    own = torch_scores(n, dd_inputs | {"market": np.full(8, 3)})
    shared = torch_scores(n, dd_inputs | {"market": np.full(8, n.shared_row)})
    assert np.abs(own - shared).max() > 1e-5  # the block's weights scale as 1 / its L2
    histories, candidates = (torch.from_numpy(dd_inputs[k]) for k in ("history", "candidates"))
    blocks = n.closed_form.scores(histories, candidates, torch.full((8,), 3))
    assert blocks[:, 1].abs().max() > 0  # dd's own block scores its candidates
    # So aa, bb and cc score exactly as before, through the published graphs too.
    inputs = random_inputs(np.random.default_rng(0), (32, 12, 40), n_items=n_old + 1, n_markets=3)
    expected = torch_scores(o, inputs)
    np.testing.assert_allclose(torch_scores(n, inputs), expected, atol=1e-5)
    graph = ort.InferenceSession(str(tiny_onboarded.file("model.onnx")))
    (served,) = graph.run(None, inputs)
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_onboarding_beats_popularity_and_records_the_metrics(tiny_onboarded: Version) -> None:
    printed = json.loads((tiny_onboarded.path.parents[2] / ONBOARD_RESULTS).read_text())
    results = {(r["model"], r["protocol"]): r["mean"]["ndcg@10"] for r in printed}
    for protocol in ("paper", "market", "full"):
        onboarded = results[("hybrid-onboarded-dd", protocol)]
        assert onboarded > results[("popularity", protocol)] + 0.05, protocol
        assert ("ease", protocol) in results  # fitted on dd alone, same candidates
    metrics = tiny_onboarded.manifest.metrics
    assert set(metrics["market"]) == {"aa", "bb", "cc", "dd"}  # the old ones kept
    assert metrics["market"]["dd"]["users"] == 80
    source = tiny_onboarded.manifest.source_run
    assert "onboarded dd onto version tiny-1" in source
    assert tiny_onboarded.manifest.command.startswith("cmr onboard --store")
    assert ModelStore(tiny_onboarded.path.parents[1]).current() == "tiny-1"  # --no-promote


def test_cmr_onboard_refuses_what_it_cannot_do(store: ModelStore, tmp_path: Path) -> None:
    data = tmp_path / "cc.tsv"
    data.write_text("user\titem\nu1\tI00001\nu1\tI00002\nu1\tI00003\n")
    runner = CliRunner()
    base = ["onboard", "--store", str(store.root), "--data", str(data)]
    cases = {
        ("--market", "cc"): "served by version tiny-1 already",
        ("--market", "Bad_Code"): "lower-case letters",
        ("--market", "zz", "--set", "d_model=64"): "keeps the version's model",
    }
    for extra, said in cases.items():
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert said in result.output, (extra, result.output)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(
        app, ["onboard", "--store", str(empty), "--market", "zz", "--data", str(data)]
    )
    assert result.exit_code == 2 and "not a model store" in result.output
    assert store.versions() == ["tiny-1"]  # nothing published
    assert Vocabulary.load(store.open("tiny-1").file("items.json"))  # untouched
    shutil.rmtree(empty)
