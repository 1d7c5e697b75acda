"""A tiny federation end to end (3 synthetic markets, 2 rounds, in simulation): it beats
each market trained alone on planted data (training/federated/planted.py), the server
receives weights and never an interaction, and the federated model publishes to the
store like any other."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmr.cli import app
from model_store.catalogue import load_catalogues
from model_store.store import ModelStore
from training.data import load_interactions
from training.evaluate import Result, evaluate
from training.export import export_run, market_catalogues
from training.federated.planted import FED, MODEL, SYNTH, TRAIN
from training.federated.run import federate
from training.hybrid_stage import MARKET_ROWS
from training.hybrid_train import load_hybrid
from training.predict import HybridScorer
from training.protocols import build_eval_set
from training.split import make_split
from training.synth import write_synth

# Plain cross-entropy: on planted data it federates better than S2CE
# (docs/federated.md, "Measured").
FEDERATION = replace(FED, semantics="none")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("planted")
    write_synth(folder, SYNTH)
    return folder


@pytest.fixture(scope="module")
def runs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Result]]:
    out = tmp_path_factory.mktemp("runs")
    return {
        name: federate(data_dir, out / name, model_settings=dict(MODEL), cfg=cfg)
        for name, cfg in {"fed": FEDERATION, "alone": replace(FEDERATION, strategy="alone")}.items()
    }


@pytest.fixture(scope="module")
def fed_run(runs: dict[str, list[Result]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "runs0" / "fed"


def ndcg(results: list[Result], name: str) -> dict[str, float]:
    (result,) = [r for r in results if r.model == name and r.protocol == "market"]
    return {code: m["ndcg@10"] for code, m in result.markets.items()}


def test_federation_beats_each_market_alone(runs: dict[str, list[Result]]) -> None:
    fed = ndcg(runs["fed"], FEDERATION.name)
    alone = ndcg(runs["alone"], replace(FEDERATION, strategy="alone").name)
    assert set(fed) == set(alone) == set(SYNTH.markets)
    for code in SYNTH.markets:
        assert fed[code] > alone[code], (code, fed, alone)


def test_server_receives_shared_weights_and_parts_never_interactions(
    fed_run: Path, data_dir: Path
) -> None:
    run = fed_run
    traffic = json.loads((run / "traffic.json").read_text())
    model = load_hybrid(run, json.loads((run / "config.json").read_text()))
    params = dict(model.named_parameters())
    shared = {f"arrays/{n}": ("float32", list(p.shape)) for n, p in params.items()
              if n not in MARKET_ROWS}  # fmt: skip
    shared["arrays/item-counts"] = ("float32", [model.config.n_items])
    stages = {t["stage"] for t in traffic["transfers"]}
    assert stages == {"train", "evaluate", "train.publish"}
    rounds = [t for t in traffic["transfers"] if t["stage"] == "train"]
    assert len(rounds) == FEDERATION.rounds * len(SYNTH.markets)
    for t in rounds:
        assert {k: tuple(v) for k, v in t["arrays"].items()} == shared
        assert set(t["metrics"]) == {"metrics/num-examples", "metrics/train-loss"}
        assert t["config"] == {"client/market": t["node"]}  # the simulation's node: its market
        assert t["sent"] > 0 and t["received"] > 0
    checks = [t for t in traffic["transfers"] if t["stage"] == "evaluate"]
    assert len(checks) == FEDERATION.rounds * len(SYNTH.markets)
    for t in checks:  # each round's validation: one number and its weight
        assert t["arrays"] == {} and t["config"] == {"client/market": t["node"]}
        assert set(t["metrics"]) == {"metrics/num-examples", "metrics/valid-metric"}
    publish = [t for t in traffic["transfers"] if t["stage"] == "train.publish"]
    own = {*MARKET_ROWS, "block_items", "block_weights"}
    for t in publish:
        names = {k.split("/", 1)[1] for k in t["arrays"] if k.startswith("parts/")}
        assert names == own
        rows = {k.split("/", 1)[1] for k in t["arrays"] if k.startswith("round-rows/")}
        assert rows == set(MARKET_ROWS)
        # Its catalogue: item indices and interaction counts, what the export publishes.
        catalogue = {k: v[0] for k, v in t["arrays"].items() if k.startswith("catalogue/")}
        assert catalogue == {"catalogue/items": "int64", "catalogue/counts": "int64"}
        assert all(k.startswith("metrics/") for k in t["metrics"])
        assert t["config"] == {"client/market": t["node"]}
    # No user id anywhere in what came back, and bytes per round are in the summary.
    text = (run / "traffic.json").read_text()
    users = load_interactions(data_dir).user_ids
    assert not any(u in text for u in users)
    per_round = {(r["round"], r["stage"]): r for r in traffic["per_round"]}
    assert per_round[(1, "train")]["clients"] == len(SYNTH.markets)
    # The published round is the one with the best mean validation metric.
    summary = json.loads((run / "summary.json").read_text())
    curve = summary["valid_per_round"]
    assert len(curve) == FEDERATION.rounds
    best = 1 + curve.index(max(curve))
    assert summary["best_round"] == {code: best for code in SYNTH.markets}


def test_the_federated_model_publishes_and_scores_as_its_clients_measured(
    runs: dict[str, list[Result]],
    fed_run: Path,
    data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    run = fed_run
    model = load_hybrid(run, json.loads((run / "config.json").read_text()))
    split = make_split(load_interactions(data_dir), TRAIN.split_scheme, TRAIN.seed)
    central = evaluate(HybridScorer("x", model), build_eval_set(split, "market", "test"))
    (reported,) = [r for r in runs["fed"] if r.model == FEDERATION.name and r.protocol == "market"]
    for code, metrics in reported.markets.items():
        assert central.markets[code] == pytest.approx(metrics)
    store = ModelStore(tmp_path_factory.mktemp("store"))
    version = export_run(run, store, version="fed-v1")
    assert store.current() == "fed-v1"
    assert version.manifest.variant == "hybrid"
    assert version.manifest.graphs == dict.fromkeys(SYNTH.markets, "model.onnx")
    # The catalogues came from the clients, and are those the data folder gives.
    published = load_catalogues(version.file(version.manifest.catalogues))
    for code, catalogue in market_catalogues(load_interactions(data_dir)).items():
        assert (published[code].items == catalogue.items).all()
        assert (published[code].counts == catalogue.counts).all()


def test_cmr_federate_writes_a_run_and_refuses_an_unknown_strategy(
    data_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    settings = ["d_model=8", "train.folds=2", "train.device=cpu", 'train.eval_protocols=["market"]',
                'train.eval_splits=["test"]']  # fmt: skip
    args = ["federate", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--rounds", "1",
            "--semantics", "none", "--no-adapt"]  # fmt: skip
    args += [a for s in settings for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "hybrid-fedavg-ce-no-adapt" in result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds"] == 1 and summary["bytes_total"] > 0
    bad = runner.invoke(app, [*args[:4], str(tmp_path / "other"), "--strategy", "fedsgd"])
    assert bad.exit_code != 0 and "fedsgd" in bad.output
    bad = runner.invoke(app, [*args[:4], str(tmp_path / "other"), "--deploy", "mars"])
    assert bad.exit_code != 0 and "mars" in bad.output
