"""Indexing the interactions: de-duplication, k-core, users per market; the vocabulary
and history padding it is built on."""

from __future__ import annotations

from pathlib import Path

from tests.training.test_market_files import write
from training.data import build_interactions, load_interactions
from training.market_files import read_logs
from training.stats import log_stats


def test_repeated_pairs_keep_one_row(tmp_path: Path) -> None:
    write(
        tmp_path / "de_5core.txt",
        "userId itemId rate date\nu A 5 2016-03-01\nu B 5 2016-02-01\nu A 4 2016-01-01\n",
    )
    logs = read_logs(tmp_path)
    first = build_interactions(logs, duplicates="first")
    last = build_interactions(logs, duplicates="last")
    a = first.items.index("A")
    assert len(first.user) == len(last.user) == 2
    # Rows are ordered by time within a user; A's first purchase predates B.
    assert first.item.tolist() == [a, first.items.index("B")]
    assert last.item.tolist() == [last.items.index("B"), a]
    [stats, _] = log_stats(logs)
    assert (stats.rows, stats.unique_pairs) == (3, 2)


def test_k_core_filters_per_market_and_reindexes_items(tmp_path: Path) -> None:
    # Users a, b, c each buy X and Y; d buys only Z: a 2-core drops d and Z.
    rows = ["user item"] + [f"{u} {i}" for u in "abc" for i in "XY"] + ["d Z"]
    write(tmp_path / "de.txt", "\n".join(rows) + "\n")
    data = load_interactions(tmp_path, k_core=2)
    assert data.items.ids == ("X", "Y")
    assert data.user_ids == ("a", "b", "c")
    assert len(data.user) == 6


def test_users_are_per_market(tmp_path: Path) -> None:
    write(tmp_path / "de.txt", "user item\nsame A\n")
    write(tmp_path / "fr.txt", "user item\nsame A\n")
    data = load_interactions(tmp_path)
    assert data.n_users == 2
    assert data.user_market.tolist() == [0, 1]
    assert data.markets == ("de", "fr")
