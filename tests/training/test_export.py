"""ONNX export: parity with torch on many shapes, empty histories, the published version."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cmr.cli import app
from model_store.catalogue import load_catalogues
from model_store.store import ModelStore, Version
from model_store.vocab import PAD
from tests.conftest import REPO
from training.export import (
    INPUTS,
    PARITY_TOLERANCE,
    export_graph,
    export_run,
    load_run,
    parity,
    random_inputs,
    torch_scores,
)
from training.model import Bert4CMR, Bert4CMRConfig

# (B, N, C): B 1..64, N 0..50 (histories ragged, some rows empty), C 1..2000. The paper
# variant encodes B x C sequences, so its largest cases keep B x C moderate.
SHAPES = (
    (1, 0, 1),
    (1, 1, 1),
    (64, 0, 300),
    (64, 50, 20),
    (64, 1, 1),
    (2, 50, 2000),
    (7, 17, 2000),
    (16, 10, 1000),
    (3, 50, 1),
    (33, 5, 64),
)


@pytest.fixture(scope="module", params=["paper", "history-once"])
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Bert4CMR, ort.InferenceSession, Path]:
    torch.manual_seed(0)
    config = Bert4CMRConfig(
        n_items=500,
        n_markets=3,
        d_model=16,
        n_layers=2,
        n_heads=2,
        variant=request.param,
    )
    model = Bert4CMR(config).eval()
    path = tmp_path_factory.mktemp("graph") / f"{request.param}.onnx"
    export_graph(model, path)
    return model, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), path


def test_graph_matches_torch_on_many_shapes(
    exported: tuple[Bert4CMR, ort.InferenceSession, Path],
) -> None:
    model, session, _ = exported
    assert parity(model, session, SHAPES, seed=1) <= PARITY_TOLERANCE


def test_graph_has_the_contract_and_no_fixed_dims(
    exported: tuple[Bert4CMR, ort.InferenceSession, Path],
) -> None:
    _, session, path = exported
    assert [i.name for i in session.get_inputs()] == list(INPUTS)
    assert [o.name for o in session.get_outputs()] == ["scores"]
    graph = onnx.load(str(path)).graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        # Every dimension symbolic: B, N, C are never baked in.
        assert all(d.dim_param and not d.dim_value for d in dims), (value.name, dims)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_an_empty_history_scores_the_candidate_alone(
    exported: tuple[Bert4CMR, ort.InferenceSession, Path],
) -> None:
    """A user without history (an all-padding row, or N = 0) gets finite scores that
    depend on the candidate and market only: the user vector is zero."""
    model, session, _ = exported
    candidates = np.array([[5, 9, 42]] * 3, dtype=np.int64)
    market = np.array([1, 1, 1], dtype=np.int64)
    padded = np.full((3, 4), PAD, dtype=np.int64)
    padded[2] = [7, 8, 0, 0]  # a real history beside the empty ones
    (scores,) = session.run(None, {"history": padded, "candidates": candidates, "market": market})
    (zero_width,) = session.run(
        None,
        {"history": np.zeros((3, 0), np.int64), "candidates": candidates, "market": market},
    )
    assert np.isfinite(scores).all() and np.isfinite(zero_width).all()
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)
    np.testing.assert_allclose(scores[0], zero_width[0], atol=1e-6)
    assert np.abs(scores[2] - scores[0]).max() > 1e-4  # a history does change the scores
    inputs = {"history": padded, "candidates": candidates, "market": market}
    np.testing.assert_allclose(scores, torch_scores(model, inputs), atol=PARITY_TOLERANCE)


def test_random_inputs_are_ragged_and_right_padded() -> None:
    inputs = random_inputs(np.random.default_rng(0), (200, 10, 3), n_items=50, n_markets=2)
    history = inputs["history"]
    lengths = (history != PAD).sum(1)
    assert lengths.min() == 0 and lengths.max() == 10
    assert all((history[i, lengths[i] :] == PAD).all() for i in range(len(history)))
    assert (inputs["candidates"] != PAD).all()


def test_a_hybrid_run_is_one_graph_for_every_market(
    tiny_store: Version, tiny_run: Path, tmp_path: Path
) -> None:
    manifest = tiny_store.manifest
    store = ModelStore(tiny_store.path.parents[1])
    assert store.current() == "tiny-1"
    assert store.open().manifest == manifest  # every hash verified
    assert manifest.variant == "hybrid"
    assert manifest.markets == {"aa": 0, "bb": 1, "cc": 2}
    assert manifest.graphs == dict.fromkeys(("aa", "bb", "cc"), "model.onnx")
    assert manifest.own_parameters == ["aa", "bb", "cc"] and manifest.pretrained is None
    assert manifest.command.startswith("cmr train --data ")
    assert manifest.metrics["full"]["aa"]["ndcg@10"] > 0
    assert manifest.model["d_model"] == 32
    # Its closed form's settings were chosen on validation. By default a version holds
    # the closed form refitted on every row; tiny-1 holds the held-out run's.
    closed_form = {"ease_lambda", "cooccurrence_days", "market_ease_lambda", "market_ease_share"}
    closed_form |= {"popularity_penalty"}
    run_config = json.loads((tiny_run / "config.json").read_text())
    assert set(manifest.chosen) == set(run_config["chosen"])
    assert set(manifest.chosen) - {"networks", "network_scale"} == closed_form | {"pretrain_lr"}
    assert manifest.train["pretrain_lr"] == run_config["pretrain_lr"]
    assert manifest.train.get("network_scale") == run_config.get("network_scale")
    assert manifest.train["lr"] == run_config["train"]["lr"]  # the recipe's, as given
    assert isinstance(manifest.model["ease_lambda"], float)
    refit = load_file(tiny_run / "closed_form_refit.safetensors")
    held_out = load_file(tiny_run / "closed_form.safetensors")
    assert not manifest.refitted
    state = load_file(tiny_store.file("state.safetensors"))
    torch.testing.assert_close(state["global_weights"], held_out["global_weights"])
    refitted = export_run(tiny_run, ModelStore(tmp_path))
    assert refitted.manifest.refitted and refitted.manifest.chosen == manifest.chosen
    published = load_file(refitted.file("state.safetensors"))
    torch.testing.assert_close(published["global_weights"], refit["global_weights"])
    assert not torch.equal(published["global_weights"], held_out["global_weights"])
    catalogues = load_catalogues(tiny_store.file(manifest.catalogues))
    assert set(catalogues) == {"aa", "bb", "cc"}
    for catalogue in catalogues.values():
        assert (np.diff(catalogue.counts) <= 0).all() and len(catalogue) > 10
    # The graph scores every market, mixed in one call, as the trained torch model.
    run = load_run(tiny_run, refitted=False)
    session = ort.InferenceSession(
        str(tiny_store.file("model.onnx")), providers=["CPUExecutionProvider"]
    )
    model = run.graphs["model.onnx"]
    assert parity(model, session, SHAPES) <= PARITY_TOLERANCE
    graph = onnx.load(str(tiny_store.file("model.onnx")), load_external_data=False).graph
    for value in [*graph.input, *graph.output]:  # B, N and C are all free
        assert not any(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim)


@pytest.fixture(scope="module")
def bert4cmr_store(tiny_bert4cmr_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Version:
    """The tiny Bert4CMR run exported once (a graph per market: the slowest export)."""
    store = ModelStore(tmp_path_factory.mktemp("bert4cmr") / "store")
    return export_run(tiny_bert4cmr_run, store, version="paper")


def test_a_bert4cmr_run_is_a_graph_per_market(
    tiny_bert4cmr_run: Path, bert4cmr_store: Version
) -> None:
    version = bert4cmr_store
    manifest = version.manifest
    assert manifest.variant == "paper"  # as trained
    assert manifest.graphs == {m: f"markets/{m}.onnx" for m in ("aa", "bb", "cc")}
    assert manifest.pretrained == "pretrained.onnx"
    assert manifest.metrics["market"]["aa"]["ndcg@10"] > 0
    # The published graph of a market scores as that market's fine-tuned torch model.
    run = load_run(tiny_bert4cmr_run)
    session = ort.InferenceSession(
        str(version.file(manifest.graphs["bb"])), providers=["CPUExecutionProvider"]
    )
    error = parity(run.graphs["markets/bb.onnx"], session, ((5, 12, 40), (1, 0, 3)))
    assert error <= PARITY_TOLERANCE


def test_store_commands(
    tiny_bert4cmr_run: Path, bert4cmr_store: Version, tiny_run: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(bert4cmr_store.path.parents[1], store)  # "paper", current
    runner = CliRunner()

    def cmr(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    run = str(tiny_bert4cmr_run)
    out = cmr(
        "export", "--run", run, "--store", str(store), "--version", "fast",
        "--variant", "history-once", "--no-promote",
    )  # fmt: skip
    assert "not current" in out
    listing = cmr("store", "list", "--store", str(store))
    assert "* paper  paper" in listing and "  fast  history-once" in listing
    shown = json.loads(cmr("store", "show", "--store", str(store), "fast"))
    # The same weights with the other attention pattern: the run measured no metrics for it.
    assert shown["variant"] == "history-once" and shown["metrics"] == {}
    assert shown["model"]["variant"] == "history-once"
    scoring = [sys.executable, "-m", "benchmarks.scoring", "--store", str(store)]
    scoring += ["--min-seconds", "0", "--threads", "1"]
    done = subprocess.run(scoring, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    bench = done.stdout
    # The tiny catalogues hold fewer than 1,000 items: a row gives the candidates scored.
    assert "| 50 | 100 |" in bench and "| 50 | 1000 |" not in bench
    assert "history-once / paper" in bench
    assert cmr("store", "promote", "--store", str(store), "fast").strip() == "current: fast"
    assert cmr("store", "rollback", "--store", str(store)).strip() == "current: paper"
    refused = runner.invoke(app, ["store", "rollback", "--store", str(store)])
    assert refused.exit_code == 2 and "nothing to roll back to" in refused.output
    missing = runner.invoke(app, ["export", "--run", str(tmp_path), "--store", str(store)])
    assert missing.exit_code == 2 and "not a training run" in missing.output
    hybrid = ["export", "--run", str(tiny_run), "--store", str(store), "--variant", "paper"]
    refused = runner.invoke(app, hybrid)
    assert refused.exit_code == 2 and "hybrid run: it has no 'paper' variant" in refused.output
    cmr("export", "--run", str(tiny_run), "--store", str(store), "--version", "h")
    listing = cmr("store", "list", "--store", str(store))
    assert "* h  hybrid" in listing and "own parameters: aa,bb,cc" in listing
