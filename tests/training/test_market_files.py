"""Reading market files: both formats, market codes, and errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.market_files import (
    NO_TIME,
    DataFormatError,
    find_market_files,
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
