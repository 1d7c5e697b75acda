"""Replaying a recorded choice runs today's search on the recorded scores."""

from __future__ import annotations

import pytest

from benchmarks.choice_replay import NotRecorded, replay


def _trials(scores: dict[float, float], block: str = "markets") -> list[dict[str, float | str]]:
    return [{"block": block, "lam": lam, "days": 7.0, "valid": v} for lam, v in scores.items()]


def test_a_recorded_search_replays_to_its_choice() -> None:
    peak = {10.0: 0.1, 40.0: 0.3, 160.0: 0.2, 640.0: 0.1, 20.0: 0.25, 80.0: 0.35}
    assert replay(_trials(peak), "markets", 7.0) == (80.0, 6)
    # The shared block reads the chosen time scale's trials only.
    other_days = [t | {"days": 0.0, "valid": 0.9} for t in _trials(peak, "shared")]
    assert replay(_trials(peak, "shared") + other_days, "shared", 7.0) == (80.0, 6)


def test_a_lambda_never_fitted_is_reported() -> None:
    with pytest.raises(NotRecorded, match="lambda 20 was never fitted"):
        replay(_trials({10.0: 0.1, 40.0: 0.3, 160.0: 0.2, 640.0: 0.1}), "markets", 7.0)
