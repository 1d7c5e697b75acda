"""Reading market files: one file per market, its rows as the file holds them.

A data folder holds one file per market. Two formats are read by one parser,
because XMarket's is just a space-delimited file with a header:

- XMarket: ``<market>_5core.txt`` or ``<market>.txt``, header ``userId itemId rate date``.
- Delimited: a header naming a user and an item column, optionally a rating and a
  timestamp column; the delimiter (tab, comma, semicolon, pipe, spaces) is detected.
  The market code comes from the file name, or from the folder it sits in.

Every row is one positive interaction (training/data.py indexes them). Bad input
raises :class:`DataFormatError` naming the file and line, never a library traceback.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from model_store.vocab import IntArray

DATA_SUFFIXES = (".txt", ".csv", ".tsv", ".dat")
NO_TIME = np.iinfo(np.int64).min  # a row without a timestamp

# Header names are compared lower-cased with "_", "-" and spaces removed.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("userid", "user", "uid", "customerid", "visitorid"),
    "item": ("itemid", "item", "iid", "asin", "productid", "product"),
    "rating": ("rating", "rate", "score", "stars"),
    "time": ("date", "timestamp", "time", "ts", "datetime"),
}
DELIMITERS = ("\t", ",", ";", "|", " ")
MARKET_CODE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class DataFormatError(ValueError):
    """A data file that cannot be read, with the file and line at fault."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True, kw_only=True)
class MarketLog:
    """The raw rows of one market's file, in file order."""

    market: str
    path: Path
    users: list[str]
    items: list[str]
    ratings: NDArray[np.float32]  # NaN where the file has no rating column
    times: IntArray  # seconds since the epoch, NO_TIME where the file has no timestamp

    @property
    def has_time(self) -> bool:
        return bool(len(self.times)) and bool(self.times[0] != NO_TIME)


def market_code(path: Path, root: Path) -> str:
    """``de_5core.txt`` -> ``de``; ``de.csv`` -> ``de``; ``de/log.tsv`` -> ``de``."""
    name = path.parent.name if path.parent != root else path.name.split(".")[0]
    code = re.sub(r"_5core$", "", name).lower()
    if not MARKET_CODE.match(code):
        raise DataFormatError(path, f"cannot read a market code from the name {name!r}")
    return code


def find_market_files(root: Path) -> dict[str, Path]:
    """Market code -> file, for files directly in ``root`` or one level down."""
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    files: dict[str, Path] = {}
    candidates = sorted(root.glob("*")) + sorted(root.glob("*/*"))
    for path in candidates:
        if not path.is_file() or path.suffix.lower() not in DATA_SUFFIXES:
            continue
        if path.name.lower().startswith("readme") or path.name.startswith("."):
            continue
        code = market_code(path, root)
        if code in files:
            raise DataFormatError(path, f"market {code!r} already read from {files[code]}")
        files[code] = path
    if not files:
        raise FileNotFoundError(
            f"no market files in {root}: expected <market>_5core.txt, <market>.csv, "
            "<market>.tsv or <market>/<file>"
        )
    return files


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-\"']", "", name).lower()


def _header_columns(path: Path, header: str) -> tuple[str, dict[str, int]]:
    """Detect the delimiter and the position of each known column from the header."""
    for delim in DELIMITERS:
        fields = header.split() if delim == " " else header.split(delim)
        names = [_normalise(f) for f in fields]
        found = {
            role: names.index(alias)
            for role, aliases in COLUMN_ALIASES.items()
            for alias in aliases
            if alias in names
        }
        if "user" in found and "item" in found:
            return delim, found
    raise DataFormatError(
        path,
        f"unknown format: header {header.strip()!r} names no user and item column "
        "(expected e.g. 'userId itemId rate date' or 'user_id<TAB>item_id<TAB>rating')",
        line=1,
    )


def _rows(path: Path, lines: list[str], delim: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank data line."""
    if delim == " ":
        for number, line in enumerate(lines[1:], start=2):
            if line.strip():
                yield number, line.split()
        return
    reader = csv.reader(lines[1:], delimiter=delim)
    for number, fields in enumerate(reader, start=2):
        if fields and any(f.strip() for f in fields):
            yield number, [f.strip() for f in fields]


def parse_time(value: str) -> int:
    """Seconds since the epoch from an ISO date/datetime or a number of seconds."""
    try:
        return int(float(value))
    except ValueError:
        pass
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def read_market_file(path: Path, market: str) -> MarketLog:
    """Read one market's file; see the module docstring for the formats."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not UTF-8 text ({exc.reason})") from exc
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DataFormatError(path, "empty file: expected a header line and interaction rows")
    delim, cols = _header_columns(path, lines[0])
    width = max(cols.values()) + 1
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    times: list[int] = []
    time_cache: dict[str, int] = {}  # dates repeat a lot; parse each once
    for number, fields in _rows(path, lines, delim):
        if len(fields) < width:
            raise DataFormatError(
                path, f"expected at least {width} columns, found {len(fields)}", line=number
            )
        user, item = fields[cols["user"]], fields[cols["item"]]
        if not user or not item:
            raise DataFormatError(path, "empty user or item id", line=number)
        users.append(user)
        items.append(item)
        if "rating" in cols:
            raw = fields[cols["rating"]]
            try:
                rating = float(raw)
            except ValueError:
                rating = float("nan")
            if not np.isfinite(rating):
                raise DataFormatError(path, f"unparsable rating {raw!r}", line=number)
            ratings.append(rating)
        if "time" in cols:
            raw = fields[cols["time"]]
            if raw not in time_cache:
                try:
                    time_cache[raw] = parse_time(raw)
                except (ValueError, OverflowError) as exc:
                    raise DataFormatError(
                        path,
                        f"unparsable date {raw!r} (expected YYYY-MM-DD or epoch seconds)",
                        line=number,
                    ) from exc
            times.append(time_cache[raw])
    if not users:
        raise DataFormatError(path, "empty file: a header but no interaction rows")
    n = len(users)
    return MarketLog(
        market=market,
        path=path,
        users=users,
        items=items,
        ratings=np.asarray(ratings, np.float32) if ratings else np.full(n, np.nan, np.float32),
        times=np.asarray(times, np.int64) if times else np.full(n, NO_TIME, np.int64),
    )


def read_logs(root: Path) -> list[MarketLog]:
    """Every market's raw rows, markets in alphabetical order."""
    return [read_market_file(path, code) for code, path in sorted(find_market_files(root).items())]
