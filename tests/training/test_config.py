"""Recipes: files and `--set` overrides, each value checked against its setting's type."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from training.config import (
    HybridTrainConfig,
    TrainConfig,
    named_variant,
    parse_recipe,
    setting_from_text,
)
from training.model import Bert4CMRConfig


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
    recorded["model"] = named_variant(recorded["model"])  # written when the variant was a bool
    expected_model = {
        k: v for k, v in recorded["model"].items() if k not in ("n_items", "n_markets")
    }
    assert {**expected_model, **model} == expected_model
    defaults = Bert4CMRConfig(n_items=2, n_markets=1)
    for name, value in expected_model.items():  # a setting left out must be the default
        assert model.get(name, getattr(defaults, name)) == value, name
    assert json.loads(json.dumps(dataclasses.asdict(cfg))) == recorded["train"]


def test_a_mistyped_number_is_refused_naming_key_type_and_value() -> None:
    with pytest.raises(ValueError, match=r"^--set train\.lr=abc: expected a float$"):
        parse_recipe(None, ["train.lr=abc"])
    with pytest.raises(ValueError, match=r"^--set lr=5e-4x: expected a float$"):
        parse_recipe(None, ["lr=5e-4x"])
    with pytest.raises(ValueError, match=r"^--set d_model=6\.5: expected an integer$"):
        parse_recipe(None, ["d_model=6.5"])
    with pytest.raises(ValueError, match=r"^--set batch_size=true: expected an integer$"):
        parse_recipe(None, ["batch_size=true"])  # a bool is no number, though Python says 1


def test_overrides_take_effect_as_their_declared_types() -> None:
    recipe = parse_recipe(None, ["train.lr=5e-4", "lr=1", "d_model=64", "model.dropout=0"])
    assert isinstance(recipe.train, HybridTrainConfig)
    assert recipe.train.lr == 1.0 and isinstance(recipe.train.lr, float)  # the last one wins
    assert recipe.model == {"d_model": 64, "dropout": 0.0}
    assert isinstance(recipe.model["dropout"], float)
    recipe = parse_recipe(None, ["valid_metric=mrr", 'eval_splits=["test"]', "eval_protocols=[]"])
    assert isinstance(recipe.train, HybridTrainConfig)
    assert recipe.train.valid_metric == "mrr"
    assert recipe.train.eval_splits == ("test",) and recipe.train.eval_protocols == ()


def test_bools_and_choices_are_checked() -> None:
    recipe = parse_recipe(None, ["adapt=false", "neural=true", "loss=bce", "device=cpu"])
    assert isinstance(recipe.train, HybridTrainConfig)
    assert recipe.train.adapt is False and recipe.model["neural"] is True
    assert recipe.train.loss == "bce" and recipe.train.device == "cpu"
    with pytest.raises(ValueError, match=r"^--set adapt=no: expected true or false$"):
        parse_recipe(None, ["adapt=no"])
    with pytest.raises(ValueError, match=r'^--set loss=hinge: expected one of "softmax", "bce"$'):
        parse_recipe(None, ["loss=hinge"])
    with pytest.raises(
        ValueError, match=r"--set eval_protocols=\[\"easy\"\]: expected a JSON list"
    ):
        parse_recipe(None, ['eval_protocols=["easy"]'])
    with pytest.raises(ValueError, match=r"--set eval_splits=test: expected a JSON list"):
        parse_recipe(None, ["eval_splits=test"])
    bert = parse_recipe(None, ["family=bert4cmr", "variant=history-once", "pretrain=false"])
    assert bert.model == {"variant": "history-once"}
    assert isinstance(bert.train, TrainConfig) and bert.train.pretrain is False
    with pytest.raises(ValueError, match=r'expected one of "paper", "history-once"$'):
        parse_recipe(None, ["family=bert4cmr", "variant=fast"])


def test_an_unknown_setting_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as refused:
        parse_recipe(None, ["train.d_model=64"])  # a model setting in the train section
    message = str(refused.value)
    assert message.startswith("--set train.d_model=64: unknown setting 'd_model'")
    assert "model settings: d_model, n_layers" in message
    assert "train settings: seed, split_scheme, lr" in message


def test_recipe_file_values_are_checked_and_old_variants_read(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"family": "bert4cmr", "train": {"lr": "fast"}}))
    with pytest.raises(ValueError, match=r'c\.json: train\.lr="fast": expected a float$'):
        parse_recipe(path, [])
    # Recipes written when the variant was a bool still read, as the variant's name.
    for old, name in ((True, "paper"), (False, "history-once")):
        path.write_text(
            json.dumps({"family": "bert4cmr", "model": {"history_sees_candidate": old}})
        )
        assert parse_recipe(path, []).model == {"variant": name}
    assert named_variant({"d_model": 8}) == {"d_model": 8}


def test_optional_and_fixed_tuple_settings_convert() -> None:
    assert setting_from_text("null", int | None, "--set k=null") is None
    assert setting_from_text("3", int | None, "--set k=3") == 3
    with pytest.raises(ValueError, match=r"^--set k=x: expected an integer or null$"):
        setting_from_text("x", int | None, "--set k=x")
    assert setting_from_text("[1, 2.5]", tuple[int, float], "--set k") == (1, 2.5)
    with pytest.raises(ValueError, match="expected a JSON list of 2: an integer, a float"):
        setting_from_text("[1]", tuple[int, float], "--set k")
