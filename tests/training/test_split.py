"""Leave-one-out splits: no leakage, determinism, the temporal rule, small users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.vocab import PAD
from training.data import Interactions, load_interactions
from training.split import Split, every_row, make_split


@pytest.mark.parametrize("scheme", ["random", "temporal"])
def test_held_out_items_never_in_training(xmarket: Interactions, scheme: str) -> None:
    split = make_split(xmarket, scheme, seed=0)  # type: ignore[arg-type]
    for user in range(xmarket.n_users):
        history = set(split.history(user).tolist())
        if split.test[user] != PAD:
            assert split.test[user] not in history
            assert split.valid[user] not in history
            assert split.valid[user] != split.test[user]
    # Every row is used exactly once: training, validation or test.
    held = int((split.test != PAD).sum() + (split.valid != PAD).sum())
    assert len(split.train_items) + held == len(xmarket.user)


def test_same_seed_same_split_other_seed_other_split(xmarket: Interactions) -> None:
    a, b, c = (make_split(xmarket, "random", seed=s) for s in (7, 7, 8))
    assert np.array_equal(a.test, b.test) and np.array_equal(a.valid, b.valid)
    assert np.array_equal(a.train_items, b.train_items)
    assert not np.array_equal(a.test, c.test)


def test_users_with_fewer_than_three_stay_in_training(tmp_path: Path) -> None:
    (tmp_path / "de.txt").write_text("user item\nsmall A\nsmall B\nbig A\nbig B\nbig C\n")
    data = load_interactions(tmp_path)
    split = make_split(data, "random", seed=0)
    small, big = data.user_ids.index("small"), data.user_ids.index("big")
    assert split.test[small] == PAD and split.valid[small] == PAD
    assert len(split.history(small)) == 2
    assert split.test[big] != PAD and len(split.history(big)) == 1


def test_temporal_holds_out_the_latest(tmp_path: Path) -> None:
    (tmp_path / "de.txt").write_text(
        "user item date\nu D 2020-01-04\nu A 2020-01-01\nu C 2020-01-03\nu B 2020-01-02\n"
    )
    data = load_interactions(tmp_path)
    split = make_split(data, "temporal")
    assert data.items.item(int(split.test[0])) == "D"
    assert data.items.item(int(split.valid[0])) == "C"
    assert [data.items.item(int(i)) for i in split.history(0)] == ["A", "B"]
    # At test time the validation item has happened: it is the newest history item.
    assert [data.items.item(int(i)) for i in split.eval_history(0, "test")] == ["A", "B", "C"]
    assert len(split.eval_history(0, "valid")) == 2


def test_temporal_needs_dates(tmp_path: Path) -> None:
    (tmp_path / "de.txt").write_text("user item\nu A\nu B\nu C\n")
    with pytest.raises(ValueError, match="needs timestamps"):
        make_split(load_interactions(tmp_path), "temporal")


def test_every_row_holds_out_nothing(synth_split: Split) -> None:
    data = synth_split.data
    everything = every_row(data)
    assert (everything.valid == PAD).all() and (everything.test == PAD).all()
    assert len(everything.train_items) == len(data.item)
    for user in (0, 7, data.n_users - 1):  # each user's rows, in the data's order
        np.testing.assert_array_equal(everything.history(user), data.item[data.user == user])
    held_out = synth_split.valid[synth_split.valid != PAD]
    assert np.isin(held_out, everything.train_items).all()
