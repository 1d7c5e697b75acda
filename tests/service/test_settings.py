"""The service settings: refusals and derived values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_settings_need_an_api_key_outside_development(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CMR_API_KEY"):
        Settings(store=tmp_path)
    assert Settings(store=tmp_path, development=True).api_key is None


def test_onnxruntime_threads_split_the_cores_among_scoring_workers(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    one = Settings(store=tmp_path, development=True, scoring_workers=1)
    assert one.threads_per_call() == cores
    many = Settings(store=tmp_path, development=True, scoring_workers=cores + 1)
    assert many.threads_per_call() == 1  # never 0, which would mean "every core" to onnxruntime
    pinned = Settings(store=tmp_path, development=True, scoring_workers=2, intra_threads=3)
    assert pinned.threads_per_call() == 3


def test_new_markets_are_read_comma_separated_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings(store=tmp_path, development=True).new_markets == ()
    monkeypatch.setenv("CMR_NEW_MARKETS", " xx, y-2,,xx ")
    assert Settings(store=tmp_path, development=True).new_markets == ("xx", "y-2")
    monkeypatch.setenv("CMR_NEW_MARKETS", "")
    assert Settings(store=tmp_path, development=True).new_markets == ()
    # Only codes a market file's name can carry: `cmr events export` must write them.
    for bad in ["XX", "x y", "-x", "x_y", '["xx"]']:
        monkeypatch.setenv("CMR_NEW_MARKETS", bad)
        with pytest.raises(ValidationError, match=r"CMR_NEW_MARKETS: .* not market codes"):
            Settings(store=tmp_path, development=True)
    monkeypatch.delenv("CMR_NEW_MARKETS")
    assert Settings(store=tmp_path, development=True, new_markets="ab").new_markets == ("ab",)
