"""Item rows averaged by who bought the item; everything else by examples (FedAvg)."""

from __future__ import annotations

import numpy as np
import pytest

from training.federated.strategy import ITEM_COUNTS, row_weighted_average


def test_item_rows_follow_the_clients_that_bought_them() -> None:
    a = {"items": np.array([[0.0], [1.0], [2.0]]), "mix": np.array([1.0, 1.0]),
         ITEM_COUNTS: np.array([0.0, 3.0, 0.0])}  # fmt: skip
    b = {"items": np.array([[0.0], [5.0], [8.0]]), "mix": np.array([4.0, 4.0]),
         ITEM_COUNTS: np.array([0.0, 1.0, 2.0])}  # fmt: skip
    out = row_weighted_average([a, b], examples=[1.0, 2.0])
    assert ITEM_COUNTS not in out
    assert out["items"][1, 0] == pytest.approx(0.75 * 1.0 + 0.25 * 5.0)
    assert out["items"][2, 0] == pytest.approx(8.0)  # only b bought it
    assert out["items"][0, 0] == pytest.approx(0.0)  # nobody: FedAvg's weights
    assert out["mix"] == pytest.approx(np.array([3.0, 3.0]))  # 1/3 * 1 + 2/3 * 4
