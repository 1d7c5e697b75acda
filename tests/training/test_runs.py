"""A run's shared pieces: the device a run trains on."""

from __future__ import annotations

import pytest
import torch

from training.runs import resolve_device


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
