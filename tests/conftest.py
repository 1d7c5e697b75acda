"""Shared fixtures: the real XMarket folder, and small synthetic data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.data import Interactions, load_interactions
from training.split import Split, make_split
from training.synth import SynthConfig, write_synth

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def xmarket_dir() -> Path:
    """The real data, beside the checkout as ../shared (CI has it there too)."""
    path = Path(os.environ.get("CMR_XMARKET", REPO.parent / "shared/data/xmarket-electronics"))
    assert (path / "de_5core.txt").is_file(), f"real XMarket data not found at {path}"
    return path


@pytest.fixture(scope="session")
def xmarket(xmarket_dir: Path) -> Interactions:
    return load_interactions(xmarket_dir)


@pytest.fixture(scope="session")
def xmarket_split(xmarket: Interactions) -> Split:
    return make_split(xmarket, "random", seed=0)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("synth")
    write_synth(dest, SynthConfig())
    return dest


@pytest.fixture(scope="session")
def synth_split(synth_dir: Path) -> Split:
    return make_split(load_interactions(synth_dir), "random", seed=0)
