"""A run's shared pieces: the device a run trains on, its recorded recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model_store.vocab import Vocabulary
from training.config import HybridTrainConfig
from training.hybrid import HybridConfig
from training.runs import record_chosen, resolve_device, write_config


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


def test_a_rate_chosen_in_training_joins_config_json_and_a_resumed_recipe_still_matches(
    tmp_path: Path,
) -> None:
    items = Vocabulary.from_ids(["i1", "i2"])
    recipe = {
        "family": "hybrid", "name": "h", "data_dir": None, "markets": ("aa",),
        "items": items, "model": HybridConfig(n_items=3, n_markets=1),
        "train": HybridTrainConfig(), "chosen": ["ease_lambda"],
    }  # fmt: skip
    write_config(tmp_path, **recipe)
    record_chosen(tmp_path, pretrain_lr=0.003, networks=2, network_scale=0.5)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["pretrain_lr"] == 0.003 and config["network_scale"] == 0.5
    assert config["model"]["networks"] == 2 and "networks" not in config  # a model setting
    assert config["chosen"] == ["ease_lambda", "network_scale", "networks", "pretrain_lr"]
    write_config(tmp_path, **recipe)  # a resumed run: the same recipe, accepted
    write_config(tmp_path, **recipe | {"nproc": 2})
    resumed = json.loads((tmp_path / "config.json").read_text())
    assert resumed["nproc"] == 2 and resumed["pretrain_lr"] == 0.003  # what it chose is kept
    assert resumed["network_scale"] == 0.5
    assert resumed["model"]["networks"] == 2
    assert resumed["chosen"] == ["ease_lambda", "network_scale", "networks", "pretrain_lr"]
    with pytest.raises(ValueError, match="other settings"):
        write_config(tmp_path, **recipe | {"train": HybridTrainConfig(lr=1e-3)})
    with pytest.raises(ValueError, match="not chosen in training"):
        record_chosen(tmp_path, lr=0.003)
