"""The training loop: settings, the loss, resuming, and `cmr train` end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmr.cli import app
from tests.conftest import TINY_BERT4CMR, train_args
from training import train as train_module
from training.baselines import Popularity
from training.evaluate import evaluate
from training.examples import NegativeSampler, build_examples
from training.hybrid_train import HybridTrainConfig
from training.model import Bert4CMR, Bert4CMRConfig
from training.protocols import build_eval_set
from training.recipe import parse_recipe
from training.runs import resolve_device
from training.split import Split
from training.train import TrainConfig, bce_loss, run_stage


def test_recipes_from_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"family": "bert4cmr", "model": {"d_model": 64}, "train": {"lr": 0.01}})
    )
    recipe = parse_recipe(path, ["n_layers=2", "train.lr=0.002", "negative_pool=global"])
    assert recipe.family == "bert4cmr" and recipe.model == {"d_model": 64, "n_layers": 2}
    assert isinstance(recipe.train, TrainConfig)
    assert recipe.train.lr == 0.002 and recipe.train.negative_pool == "global"
    default = parse_recipe(None, ['valid_protocols=["market"]'])  # no file: the hybrid
    assert default.family == "hybrid" and isinstance(default.train, HybridTrainConfig)
    assert default.train.valid_protocols == ("market",) and default.model == {}
    assert parse_recipe(path, ["family=hybrid", "mask_rate=0.5"]).family == "hybrid"
    with pytest.raises(ValueError, match="unknown setting 'widht'"):
        parse_recipe(None, ["widht=3"])
    with pytest.raises(ValueError, match="unknown setting 'negative_pool' for the hybrid"):
        parse_recipe(None, ["negative_pool=global"])  # a Bert4CMR setting
    with pytest.raises(ValueError, match="expected key=value"):
        parse_recipe(None, ["lr"])
    with pytest.raises(ValueError, match="unknown setting 'n_items'"):
        parse_recipe(None, ["n_items=3"])  # comes from the data, never from settings
    with pytest.raises(ValueError, match="unknown family 'bert'"):
        parse_recipe(None, ["family=bert"])
    path.write_text(json.dumps({"family": "bert4cmr", "model": {"width": 3}}))
    with pytest.raises(ValueError, match=r"unknown model settings \['width'\]"):
        parse_recipe(path, [])


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
        history_sees_candidate=False,
    )
    examples = build_examples(synth_split, markets=[2])
    sampler = NegativeSampler(synth_split)
    valid = build_eval_set(synth_split, "market", "valid")
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
        run_stage("t", Bert4CMR(model_cfg), examples, sampler, valid, [2], 1e-3, 3, cfg, tmp_path)
    assert json.loads((tmp_path / "stage.json").read_text())["epoch"] == 1
    monkeypatch.setattr(train_module, "evaluate", real_evaluate)
    state = run_stage(
        "t", Bert4CMR(model_cfg), examples, sampler, valid, [2], 1e-3, 3, cfg, tmp_path
    )
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


def test_device_setting_resolves_to_what_torch_can_use() -> None:
    has_gpu = torch.cuda.is_available()
    assert resolve_device("auto").type == ("cuda" if has_gpu else "cpu")
    assert resolve_device("cpu").type == "cpu"
    if has_gpu:
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="expected auto, cpu or cuda"):
        resolve_device("tpu")


@pytest.mark.parametrize(
    ("config", "run"),
    [("bert4cmr.json", "bert4cmr-s1"), ("bert4cmr-tuned.json", "tuned-s1")],
)
def test_recipe_files_are_the_settings_of_the_reported_runs(config: str, run: str) -> None:
    """docs/results.md reports runs made with these files (by scripts/reproduce.sh)."""
    root = Path(__file__).resolve().parents[2]
    recipe = parse_recipe(root / "configs" / config, ["seed=1", 'eval_splits=["test"]'])
    model, cfg = recipe.model, recipe.train
    recorded = json.loads((root / "docs/results/bert4cmr-h100" / run / "config.json").read_text())
    expected_model = {
        k: v for k, v in recorded["model"].items() if k not in ("n_items", "n_markets")
    }
    assert {**expected_model, **model} == expected_model
    defaults = Bert4CMRConfig(n_items=2, n_markets=1)
    for name, value in expected_model.items():  # a setting left out must be the default
        assert model.get(name, getattr(defaults, name)) == value, name
    assert json.loads(json.dumps(dataclasses.asdict(cfg))) == recorded["train"]
