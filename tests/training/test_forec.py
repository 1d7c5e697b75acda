"""NMF and FOREC: they find the planted structure, are deterministic, and the fork
freezes its bottom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmr.cli import app
from training import forec
from training.baselines import Popularity
from training.evaluate import evaluate
from training.forec import NeuMFTraining, finetune, fit_forec, fit_nmf, pretrain
from training.neumf import NeuMF, NeuMFConfig, fork
from training.protocols import build_eval_set
from training.split import Split

FAST = NeuMFTraining(epochs=12, finetune_epochs=6, batch_size=256)


@pytest.fixture(scope="module")
def results(synth_split: Split) -> dict[tuple[str, str], float]:
    """Mean NDCG@10 per (model, split) under the market protocol, each model fitted once."""
    models = [Popularity.fit(synth_split), fit_nmf(synth_split, FAST), fit_forec(synth_split, FAST)]
    out = {}
    for split_name in ("valid", "test"):
        eval_set = build_eval_set(synth_split, "market", split_name)
        for model in models:
            out[model.name, split_name] = evaluate(model, eval_set).mean["ndcg@10"]
    return out


@pytest.mark.parametrize("split_name", ["valid", "test"])
@pytest.mark.parametrize("model", ["nmf", "forec"])
def test_beats_popularity_on_planted_data(
    results: dict[tuple[str, str], float], model: str, split_name: str
) -> None:
    assert results[model, split_name] > results["popularity", split_name] + 0.05, results


def test_same_seed_same_scores(synth_split: Split) -> None:
    cfg = NeuMFTraining(epochs=2, batch_size=256)
    valid = build_eval_set(synth_split, "market", "valid")
    runs = [evaluate(fit_nmf(synth_split, cfg), valid) for _ in range(2)]
    assert runs[0].markets == runs[1].markets
    other = evaluate(fit_nmf(synth_split, NeuMFTraining(epochs=2, batch_size=256, seed=1)), valid)
    assert other.markets != runs[0].markets


def test_fork_freezes_the_bottom_and_trains_the_head(synth_split: Split) -> None:
    cfg = NeuMFTraining(epochs=1, finetune_epochs=2, batch_size=256)
    general = pretrain(synth_split, cfg)
    torch.manual_seed(cfg.seed)  # finetune's own seeding: the head starts where fork puts it
    start = fork(general, cfg.head).state_dict()
    tuned = finetune(general, synth_split, 0, cfg)
    after = tuned.state_dict()
    for name in ("gmf_user.weight", "gmf_item.weight", "mlp_user.weight", "mlp.0.weight"):
        assert torch.equal(after[name], general.state_dict()[name]), name
    for name in ("head.0.weight", "out.weight", "mlp.6.weight"):  # head, output, top MLP
        assert not torch.equal(after[name], start[name]), name
    assert tuned.cfg.head == (16, 32, 16)


def test_neumf_shapes_and_head_width_check() -> None:
    model = NeuMF(NeuMFConfig(n_users=5, n_items=7, head=(16, 32, 16)))
    logits = model(torch.tensor([0, 4]), torch.tensor([[1, 2, 3], [6, 0, 5]]))
    assert logits.shape == (2, 3)
    with pytest.raises(ValueError, match="market head"):
        NeuMFConfig(n_users=5, n_items=7, head=(8, 16))


def test_cli_evaluates_forec_and_nmf(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = ["evaluate", "--data", str(synth_dir), "--model", "forec", "--model", "nmf"]
    args += ["--protocol", "market", "--protocol", "paper", "--epochs", "2", "--seed", "3"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [(r["model"], r["protocol"]) for r in rows] == [
        ("forec", "market"),
        ("forec", "paper"),
        ("nmf", "market"),
        ("nmf", "paper"),
    ]
    assert all(r["seed"] == 3 and r["params"]["epochs"] == 2 for r in rows)
    assert rows[0]["params"]["finetune_epochs"] == 1
    assert np.isfinite(rows[0]["mean"]["ndcg@10"])


def test_scores_do_not_depend_on_how_rows_are_chunked(
    synth_split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = fit_nmf(synth_split, NeuMFTraining(epochs=1, batch_size=256))
    full = build_eval_set(synth_split, "full", "valid")
    whole = evaluate(scorer, full)
    monkeypatch.setattr(forec, "SCORE_PAIRS", 100)  # one row per forward pass
    assert evaluate(scorer, full).markets == whole.markets
