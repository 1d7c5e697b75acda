"""``cmr events export`` on a real redis-server: files that training's reader loads back
row for row, resumption after an interrupt at any point without a lost or doubled
event, ``--since`` and ``--markets``, and one-line errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.processes import free_port
from cmr.cli import app
from service.errors import ExportFailed
from service.event_export import MAX_SEQ, export_events, since_position
from service.event_log import LogEntry
from service.export_files import ExportState
from service.history import Event
from tests.service.conftest import log_entries, log_events
from training.market_files import read_logs

runner = CliRunner()
Row = tuple[str, str, int]


def _export(url: str, dest: Path, *args: str) -> str:
    command = ["events", "export", "--redis-url", url, "--dest", str(dest), *args]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    return result.output


def _exported(dest: Path) -> dict[str, list[Row]]:
    """Each market's rows, as training reads them back."""
    return {
        log.market: list(zip(log.users, log.items, log.times.tolist(), strict=True))
        for log in read_logs(dest)
    }


def _logged(url: str) -> dict[str, list[Row]]:
    """Each market's rows as the log holds them, in the log's order."""
    return {
        stream.rsplit(":", 1)[1]: [(e.user, e.item, e.time_s) for e in entries]
        for stream, entries in log_entries(url).items()
    }


def test_export_writes_files_that_training_reads_back(tmp_path: Path, flushed_redis: str) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    log_events(
        flushed_redis,
        [
            Event("aa", "u1", "I00001", "e1", when),
            Event("aa", "user two", "item\twith a tab", "e2", when),
            Event("aa", 'a "quoted" user', "ünïcödé", None, None),  # logged time
            Event("bb", "u1", "not-in-any-model", "e3", when),
            Event("aa", "two\nlines", "I00002", "e4", when),  # no row can hold it
        ],
    )
    output = _export(flushed_redis, tmp_path / "out")
    assert "aa: 3 events exported" in output and "1 skipped" in output
    assert "4 events exported in all" in output
    logged = _logged(flushed_redis)
    assert ("two\nlines", "I00002", int(when.timestamp())) in logged["aa"]
    logged["aa"] = [row for row in logged["aa"] if row[0] != "two\nlines"]
    assert _exported(tmp_path / "out") == logged
    assert logged["bb"] == [("u1", "not-in-any-model", 1767323045)]
    no_timestamp = next(row for row in logged["aa"] if row[0] == 'a "quoted" user')
    assert abs(no_timestamp[2] - time.time()) < 60  # when Redis logged it


class Interrupted(Exception):
    """The export stopped (killed, the machine down) before it saved its state."""


def test_an_interrupted_export_neither_loses_nor_doubles_events(
    tmp_path: Path, flushed_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_events(
        flushed_redis,
        [Event(m, f"u{n % 4}", f"I{n:05d}", f"e{n}") for n in range(11) for m in ("aa", "bb")],
    )
    expected = _logged(flushed_redis)
    save = ExportState.save
    tails_cut = 0
    for stop_at in range(1, 100):  # every save the export makes, interrupted in turn
        saves = 0

        def interrupted(state: ExportState, dest: Path, stop: int = stop_at) -> None:
            nonlocal saves
            saves += 1
            if saves == stop:
                raise Interrupted  # the rows before it are written, this state is not
            save(state, dest)

        dest = tmp_path / f"stop-{stop_at}"
        monkeypatch.setattr(ExportState, "save", interrupted)
        try:
            export_events(flushed_redis, dest, batch=3)
        except Interrupted:
            pass
        else:
            break  # fewer saves than stop_at: every point was tried
        finally:
            monkeypatch.setattr(ExportState, "save", save)
        recorded = ExportState.load(dest).files
        files = [(dest / f, n) for f, n in recorded.items()]
        tails_cut += any(f.exists() and f.stat().st_size > n for f, n in files)
        export_events(flushed_redis, dest, batch=3)
        assert _exported(dest) == expected, stop_at
    # Each market: a save that records its file, then one after each batch's rows; every
    # interrupt after rows left a tail for the next export to cut.
    assert stop_at - 1 == 2 * (1 + 4) and tails_cut == 2 * 4
    # Run again later: only the events logged since are appended.
    log_events(flushed_redis, [Event("aa", "late", "I09999", "late")])
    export_events(flushed_redis, dest, batch=3)
    assert _exported(dest) == _logged(flushed_redis)
    assert _exported(dest)["aa"][-1][:2] == ("late", "I09999")


def test_an_export_says_when_the_log_was_trimmed_past_it(
    tmp_path: Path, flushed_redis: str
) -> None:
    log_events(flushed_redis, [Event("aa", "u", "first", "first")])
    assert "warning" not in _export(flushed_redis, tmp_path)
    log_events(flushed_redis, [Event("aa", "u", f"i{n}", f"e{n}") for n in range(300)], maxlen=5)
    output = _export(flushed_redis, tmp_path)
    assert "warning: cmr:{log}:aa: trimmed past the last export" in output
    rows = _exported(tmp_path)["aa"]
    assert rows[0][1] == "first" and rows[1:] == _logged(flushed_redis)["aa"]


def test_since_and_markets_choose_what_is_exported(tmp_path: Path, flushed_redis: str) -> None:
    log_events(flushed_redis, [Event("aa", "u", "a1", "a1"), Event("bb", "u", "b1", "b1")])
    since = max(e.id for entries in log_entries(flushed_redis).values() for e in entries)
    time.sleep(0.002)  # the next entries get a later millisecond
    later = [Event(m, "u", f"{m[0]}2", f"{m[0]}2") for m in ("aa", "bb", "cc")]
    log_events(flushed_redis, later)
    dest = tmp_path / "out"
    _export(flushed_redis, dest, "--markets", "aa,cc", "--since", since)
    assert {m: [r[1] for r in rows] for m, rows in _exported(dest).items()} == {
        "aa": ["a2"],
        "cc": ["c2"],
    }
    # Without them: bb from its start; aa's first event was passed over for good.
    _export(flushed_redis, dest)
    assert {m: [r[1] for r in rows] for m, rows in _exported(dest).items()} == {
        "aa": ["a2"],
        "bb": ["b1", "b2"],
        "cc": ["c2"],
    }
    assert since_position("1767225600000-7") == (1767225600000, 7)
    assert since_position("1767225600000") == (1767225599999, MAX_SEQ)  # that ms on
    assert since_position("0") == (0, 0)
    entry = LogEntry.parse(b"1767225600000-0", {b"user": b"u", b"item": b"i"})
    assert entry.time_s == 1767225600 and entry.ts_ms is None


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, flushed_redis: str) -> None:
    dest = tmp_path / "out"
    for args, message in [
        (["--redis-url", "nonsense"], "Redis at nonsense: Redis URL must specify"),
        (["--redis-url", f"redis://127.0.0.1:{free_port()}/0"], "Connection refused"),
        (["--redis-url", flushed_redis, "--since", "yesterday"], "is not a stream id"),
    ]:
        result = runner.invoke(app, ["events", "export", "--dest", str(dest), *args])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and message in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not dest.exists()
    # A file the export did not write is never touched.
    log_events(flushed_redis, [Event("aa", "u", "i", "e")])
    dest.mkdir()
    (dest / "aa.tsv").write_text("user_id\titem_id\nmine\tmine\n")
    result = runner.invoke(
        app, ["events", "export", "--dest", str(dest), "--redis-url", flushed_redis]
    )
    assert result.exit_code == 2 and "was not written by the export" in result.output
    assert (dest / "aa.tsv").read_text() == "user_id\titem_id\nmine\tmine\n"
    # Nor is one the export wrote, then cut behind its back.
    (dest / "aa.tsv").unlink()
    export_events(flushed_redis, dest)
    (dest / "aa.tsv").write_text("user_id\titem_id\n")
    with pytest.raises(ExportFailed, match="fewer than the"):
        export_events(flushed_redis, dest)
