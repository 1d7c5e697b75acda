"""Bert4CMR's training: the loss, resuming a stage, and `cmr train` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmr.cli import app
from tests.conftest import TINY_BERT4CMR, train_args
from training import bert4cmr_train as train_module
from training.baselines import Popularity
from training.bert4cmr_train import bce_loss, run_stage
from training.config import TrainConfig
from training.evaluate import evaluate
from training.examples import NegativeSampler, build_examples
from training.model import Bert4CMR, Bert4CMRConfig
from training.protocols import build_eval_set
from training.split import Split


def test_loss_ignores_padded_negatives() -> None:
    logits = torch.tensor([[2.0, -1.0, 5.0], [0.5, 0.0, 0.0]])
    candidates = torch.tensor([[3, 4, 0], [3, 4, 5]])
    expected = torch.stack(
        [
            torch.nn.functional.softplus(-logits[0, 0]),
            torch.nn.functional.softplus(logits[0, 1]),
            torch.nn.functional.softplus(-logits[1, 0]),
            torch.nn.functional.softplus(logits[1, 1]),
            torch.nn.functional.softplus(logits[1, 2]),
        ]
    ).mean()
    torch.testing.assert_close(bce_loss(logits, candidates), expected)


def test_an_interrupted_stage_resumes(
    synth_split: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = TrainConfig(batch_size=256, patience=10)
    model_cfg = Bert4CMRConfig(
        n_items=synth_split.data.items.size,
        n_markets=3,
        d_model=16,
        n_layers=1,
        n_heads=2,
        variant="history-once",
    )
    examples = build_examples(synth_split, markets=[2])
    sampler = NegativeSampler(synth_split)
    valid = build_eval_set(synth_split, "market", "valid")
    stage = {
        "examples": examples, "sampler": sampler, "valid": valid, "markets": [2], "lr": 1e-3,
        "max_epochs": 3, "cfg": cfg, "stage_dir": tmp_path,
    }  # fmt: skip
    calls = 0
    real_evaluate = train_module.evaluate

    def interrupt_second_epoch(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "evaluate", interrupt_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_stage("t", Bert4CMR(model_cfg), **stage)
    assert json.loads((tmp_path / "stage.json").read_text())["epoch"] == 1
    monkeypatch.setattr(train_module, "evaluate", real_evaluate)
    state = run_stage("t", Bert4CMR(model_cfg), **stage)
    assert [p["epoch"] for p in state.curve] == [1, 2, 3] and state.done
    assert (tmp_path / "best.safetensors").exists() and not (tmp_path / "resume.pt").exists()


def test_cmr_train_of_bert4cmr_learns_the_planted_structure(
    synth_dir: Path, synth_split: Split, tiny_bert4cmr_run: Path
) -> None:
    run = tiny_bert4cmr_run  # `cmr train` with the TINY_BERT4CMR settings, once per session
    for path in [
        "config.json",
        "items.json",
        "train.log",
        "curves.png",
        "summary.json",
        "commands.txt",
        "pretrained/best.safetensors",
        "markets/aa/best.safetensors",
        "metrics/market-test.json",
        "metrics/market-valid.json",
    ]:
        assert (run / path).is_file(), path
    bert = json.loads((run / "metrics/market-test.json").read_text())
    popularity = evaluate(
        Popularity.fit(synth_split), build_eval_set(synth_split, "market", "test")
    )
    # The structure is learnable: well above market popularity on identical candidates.
    assert bert["mean"]["ndcg@10"] > popularity.mean["ndcg@10"] + 0.05, (
        bert["mean"],
        popularity.mean,
    )
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"pretrain", "aa", "bb", "cc"}
    assert (run / "commands.txt").read_text().startswith("cmr train --data ")
    # A finished run resumes to the same result without training again.
    again = CliRunner().invoke(app, train_args(synth_dir, run, TINY_BERT4CMR))
    assert again.exit_code == 0, again.output
    assert json.loads((run / "metrics/market-test.json").read_text())["mean"] == bert["mean"]
    assert np.isfinite(bert["mean"]["mrr"])
