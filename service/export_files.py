"""What ``cmr events export`` writes into DEST, so that an interrupt at any point
neither loses nor doubles an event.

DEST holds one ``<market>.tsv`` per market, in the delimited format that
training/market_files.py reads: a header ``user_id<TAB>item_id<TAB>timestamp``, then a
row per logged event (the timestamp in epoch seconds: the event's own, else when it
was logged). Items the model does not know are written as they are. An id that the
training reader would not give back unchanged (a line break, a NUL, spaces at either
end) cannot be a row: such events are skipped and counted. ``.cmr-export.json`` is
the state: per log stream the last entry id exported, per file its length in bytes.

Rows are written and fsynced first, then the state, atomically (a temporary file,
fsynced, renamed over the old one). An export interrupted between the two left rows
past the recorded length: the next export cuts the file back to that length
(``reconcile``) and reads the same entries again. A market's file is recorded (at
length 0) before its first row is written, so a file in DEST that the state does not
record was not written by the export, and is never touched.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from service.errors import ExportFailed
from service.event_log import LogEntry

STATE = ".cmr-export.json"  # a dot file: training's reader passes it over
HEADER = b"user_id\titem_id\ttimestamp\n"


@dataclass
class ExportState:
    """What the export has written: per stream the last entry id exported (or passed
    over by ``--since``), per file its length in bytes."""

    streams: dict[str, str] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, dest: Path) -> ExportState:
        path = dest / STATE
        if not path.exists():
            return cls()
        try:
            saved = json.loads(path.read_text())
            return cls(dict(saved["streams"]), {k: int(v) for k, v in saved["files"].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ExportFailed(f"{path}: not an export state ({e})") from e

    def save(self, dest: Path) -> None:
        """Replace the state file atomically and durably."""
        temporary = dest / f"{STATE}.tmp"
        text = json.dumps({"streams": self.streams, "files": self.files}, sort_keys=True)
        with temporary.open("w") as out:
            out.write(text + "\n")
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(dest / STATE)
        folder = os.open(dest, os.O_RDONLY)  # the rename itself, durable
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def reconcile(dest: Path, state: ExportState) -> list[str]:
    """Cut every recorded file back to its recorded length (what an interrupted export
    wrote after its last state); say what was cut."""
    notes = []
    for name, length in sorted(state.files.items()):
        path = dest / name
        size = path.stat().st_size if path.exists() else 0
        if size < length:
            raise ExportFailed(
                f"{path} holds {size} bytes, fewer than the {length} recorded in "
                f"{dest / STATE}: it was changed outside the export"
            )
        if size > length:
            if length:
                os.truncate(path, length)
            else:
                path.unlink()  # nothing of it was recorded, not even its header
            notes.append(f"{name}: cut {size - length:,} bytes written after the last state")
    return notes


def _readable(value: str) -> bool:
    """Whether training's reader gives ``value`` back unchanged from a row."""
    return value == value.strip() and "\0" not in value and value.splitlines() == [value]


def rows(entries: Sequence[LogEntry]) -> tuple[bytes, int]:
    """The entries' rows (tab-separated, quoted where csv must), and how many entries
    could not be rows."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    skipped = 0
    for entry in entries:
        if _readable(entry.user) and _readable(entry.item):
            writer.writerow([entry.user, entry.item, entry.time_s])
        else:
            skipped += 1
    return text.getvalue().encode(), skipped


class MarketFile:
    """A market's file in DEST and the state that records it; opened for appending once
    there are rows to write."""

    def __init__(self, dest: Path, market: str, state: ExportState) -> None:
        self.dest, self.state = dest, state
        self.path = dest / f"{market}.tsv"
        self._out: IO[bytes] | None = None
        if self.path.name not in state.files:
            if self.path.exists():
                raise ExportFailed(
                    f"{self.path} was not written by the export (it is not in "
                    f"{dest / STATE}): export into a folder of its own"
                )
            state.files[self.path.name] = 0
            state.save(dest)  # recorded before it exists: see the module docstring

    def commit(self, entries: Sequence[LogEntry], positions: Mapping[str, str]) -> int:
        """Append the entries' rows durably, then record them and the streams' new
        ``positions`` in the state; the number of entries skipped."""
        data, skipped = rows(entries)
        if data:
            if self._out is None:
                self._out = self.path.open("ab")
                if os.fstat(self._out.fileno()).st_size == 0:
                    self._out.write(HEADER)
            self._out.write(data)
            self._out.flush()
            os.fsync(self._out.fileno())
            self.state.files[self.path.name] = os.fstat(self._out.fileno()).st_size
        self.state.streams.update(positions)
        self.state.save(self.dest)  # only now: the rows it records are on disk
        return skipped

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
