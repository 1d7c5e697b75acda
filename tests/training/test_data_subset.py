"""`cmr data subset --drop-user-newest`: the data less exactly the items a temporal split
of the whole data tests on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.vocab import PAD
from training.data import Interactions, load_interactions
from training.data_subset import write_subset
from training.split import make_split


def _rows(data: Interactions) -> set[tuple[str, str, str]]:
    """(market, user id, item id) of every row."""
    market = np.asarray(data.markets)[data.user_market[data.user]]
    user = np.asarray(data.user_ids, dtype=object)[data.user]
    item = np.asarray(data.items.ids, dtype=object)[data.item - 1]
    return set(zip(market.tolist(), user.tolist(), item.tolist(), strict=True))


def test_dropping_each_users_newest_leaves_the_temporal_test_items_out(
    synth_dir: Path, tmp_path: Path
) -> None:
    write_subset(synth_dir, tmp_path / "rest", drop_user_newest=True)
    whole = load_interactions(synth_dir)
    temporal = make_split(whole, "temporal", 0)
    tested = np.flatnonzero(temporal.test != PAD)
    market = np.asarray(whole.markets)[whole.user_market[tested]]
    user = np.asarray(whole.user_ids, dtype=object)[tested]
    item = np.asarray(whole.items.ids, dtype=object)[temporal.test[tested] - 1]
    test_rows = set(zip(market.tolist(), user.tolist(), item.tolist(), strict=True))
    assert len(test_rows) == len(tested) > 0
    assert _rows(load_interactions(tmp_path / "rest")) == _rows(whole) - test_rows


def test_a_log_without_dates_has_no_newest_rows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "aa.tsv").write_text("user\titem\nu1\ti1\nu1\ti2\nu1\ti3\n")
    with pytest.raises(ValueError, match="no timestamps"):
        write_subset(data, tmp_path / "rest", drop_user_newest=True)


def test_a_repeat_purchase_counts_at_its_first_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = ["user\titem\ttimestamp", "u1\ti1\t100", "u1\ti2\t200", "u1\ti3\t300",
            "u1\ti1\t400", "u1\ti3\t500", "u2\ti1\t100", "u2\ti2\t200"]  # fmt: skip
    (data / "aa.tsv").write_text("\n".join(rows) + "\n")
    write_subset(data, tmp_path / "rest", drop_user_newest=True)
    kept = (tmp_path / "rest" / "aa.tsv").read_text().splitlines()[1:]
    # u1's items by first purchase: i1, i2, i3, so i3 goes, its repeat too; u2 has two.
    assert kept == ["u1\ti1\t100", "u1\ti2\t200", "u1\ti1\t400", "u2\ti1\t100", "u2\ti2\t200"]
    whole, rest = load_interactions(data), load_interactions(tmp_path / "rest")
    test = make_split(whole, "temporal", 0).test
    assert _rows(rest) == _rows(whole) - {("aa", "u1", whole.items.ids[test[0] - 1])}
