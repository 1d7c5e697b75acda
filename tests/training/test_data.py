"""Reading market files: both formats, the errors, de-duplication, k-core, vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.vocab import PAD, Vocabulary, find_sorted, pad_rows, recent_histories
from training.data import (
    NO_TIME,
    DataFormatError,
    build_interactions,
    find_market_files,
    load_interactions,
    log_stats,
    read_logs,
    read_market_file,
)

XMARKET_TEXT = """userId itemId rate date
u1 A 5.0 2016-01-03
u1 B 4.0 2016-01-01
u2 A 3.0 2017-05-05
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_reads_xmarket_format(tmp_path: Path) -> None:
    mlog = read_market_file(write(tmp_path / "de_5core.txt", XMARKET_TEXT), "de")
    assert mlog.users == ["u1", "u1", "u2"]
    assert mlog.items == ["A", "B", "A"]
    assert mlog.ratings.tolist() == [5.0, 4.0, 3.0]
    assert mlog.has_time
    assert mlog.times[0] - mlog.times[1] == 2 * 86400


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("fr.tsv", "userId\titemId\trating\nu1\tA\t5\nu2\tB\t3\n"),
        ("fr.csv", 'user_id,item_id,rating\nu1,"A",5\nu2,B,3\n'),
        ("fr.csv", "user;item\nu1;A\nu2;B\n"),
        ("fr/interactions.csv", "Item_ID|User_ID|Timestamp\nA|u1|1500000000\nB|u2|1500000100\n"),
    ],
)
def test_reads_delimited_formats(tmp_path: Path, name: str, text: str) -> None:
    write(tmp_path / name, text)
    [mlog] = read_logs(tmp_path)
    assert mlog.market == "fr"
    assert mlog.users == ["u1", "u2"]
    assert mlog.items == ["A", "B"]


def test_delimited_without_rating_or_date(tmp_path: Path) -> None:
    mlog = read_market_file(write(tmp_path / "x.tsv", "userId\titemId\nu\ti\n"), "x")
    assert np.isnan(mlog.ratings).all()
    assert not mlog.has_time
    assert mlog.times[0] == NO_TIME


def test_market_codes_from_names(tmp_path: Path) -> None:
    write(tmp_path / "de_5core.txt", XMARKET_TEXT)
    write(tmp_path / "jp.txt", XMARKET_TEXT)
    write(tmp_path / "mx" / "log.csv", "user,item\na,b\n")
    write(tmp_path / "README.md", "not data")
    write(tmp_path / "SHA256SUMS", "not data")
    assert sorted(find_market_files(tmp_path)) == ["de", "jp", "mx"]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", None, "empty file"),
        ("userId itemId rate date\n", None, "no interaction rows"),
        (
            "userId itemId rate date\nu1 A 5.0 2016-01-03\nu2 B 4.0\n",
            3,
            "expected at least 4 columns",
        ),
        ("userId itemId rate date\nu1 A 5.0 2016-13-45\n", 2, "unparsable date '2016-13-45'"),
        (
            "userId itemId rate date\nu1 A 5.0 2016-01-01\nu1 B five 2016-01-01\n",
            3,
            "unparsable rating 'five'",
        ),
        ("userId itemId rate date\nu1 A nan 2016-01-01\n", 2, "unparsable rating 'nan'"),
        ("customer,thing,stars\nu1,A,5\n", 1, "unknown format"),
        ("user,item\n,A\n", 2, "empty user or item id"),
    ],
)
def test_bad_files_name_file_and_line(
    tmp_path: Path, text: str, line: int | None, fragment: str
) -> None:
    path = write(tmp_path / "de_5core.txt", text)
    with pytest.raises(DataFormatError) as err:
        read_market_file(path, "de")
    where = f"{path}:{line}:" if line else f"{path}:"
    assert str(err.value).startswith(where)
    assert fragment in str(err.value)
    assert err.value.line == line


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_market_files(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no market files"):
        find_market_files(tmp_path)
    write(tmp_path / "de_5core.txt", XMARKET_TEXT)
    write(tmp_path / "de.csv", "user,item\na,b\n")
    with pytest.raises(DataFormatError, match="market 'de' already read"):
        find_market_files(tmp_path)


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


def test_vocabulary_reserves_padding() -> None:
    vocab = Vocabulary.from_ids(["b", "a", "b"])
    assert vocab.ids == ("a", "b")
    assert vocab.index("a") == 1
    assert vocab.size == 3
    assert vocab.lookup(["b", "unknown"]).tolist() == [2, PAD]
    assert vocab.item(2) == "b"
    with pytest.raises(IndexError):
        vocab.item(PAD)


def test_vocabulary_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary.from_ids(["x", "y"])
    vocab.save(tmp_path / "items.json")
    loaded = Vocabulary.load(tmp_path / "items.json")
    assert loaded == vocab
    assert loaded.sha256() == vocab.sha256()


def test_pad_rows_keeps_most_recent() -> None:
    out = pad_rows([[1, 2, 3], [4], []], max_len=2)
    assert out.tolist() == [[2, 3], [4, PAD], [PAD, PAD]]
    assert pad_rows([]).shape == (0, 1)


def test_real_data_stats_match_the_data_readme(xmarket_dir: Path) -> None:
    # The counts published in ../shared/data/xmarket-electronics/README.md.
    expected = {
        "de": (17300, 1851, 2179),
        "jp": (4485, 487, 955),
        "in": (2015, 239, 470),
        "fr": (17624, 1838, 1879),
        "ca": (44779, 4668, 5735),
        "mx": (17095, 1878, 1645),
        "uk": (31547, 3352, 3251),
        "all": (134845, 14311, 8304),
    }
    stats = {s.market: (s.rows, s.users, s.items) for s in log_stats(read_logs(xmarket_dir))}
    assert stats == expected


def test_recent_histories_keep_the_newest_items() -> None:
    histories = np.array([[1, 2, 3, 4, 5], [6, 7, PAD, PAD, PAD], [PAD] * 5])
    assert recent_histories(histories, 3).tolist() == [[3, 4, 5], [6, 7, PAD], [PAD] * 3]
    assert recent_histories(histories, 5) is histories


def test_find_sorted_marks_absent_queries() -> None:
    at, found = find_sorted(np.array([2, 5, 9]), np.array([5, 1, 9, 12]))
    assert found.tolist() == [True, False, True, False]
    assert at[found].tolist() == [1, 2]
    assert ((at >= 0) & (at < 3)).all()  # always a valid index, even past the end
