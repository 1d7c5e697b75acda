"""scripts/loop.sh's Python halves: the day split off and posted, the retraining data
checked, and the load across a version switch against the real service."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import httpx
import pytest

from benchmarks.loop_events import check, post_rows, split_day
from benchmarks.loop_load import drive, summary
from benchmarks.processes import API_KEY, free_port, running_service
from model_store.store import ModelStore
from tests.service.conftest import clone_version
from training.data_subset import write_subset
from training.market_files import read_logs

HEADER = "userId itemId rate date\n"


def write(folder: Path, market: str, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{market}_5core.txt").write_text(HEADER + "".join(r + "\n" for r in rows))
    return folder


def test_the_day_is_what_the_subset_dropped_each_row_as_often(tmp_path: Path) -> None:
    original = write(tmp_path / "orig", "aa", [
        "u1 i1 5.0 2020-01-03", "u1 i2 5.0 2020-01-01", "u2 i1 4.0 2020-01-05",
        "u2 i1 4.0 2020-01-05", "u3 i3 3.0 2020-01-02",
    ])  # fmt: skip
    write(original, "bb", ["v1 i1 5.0 2020-01-04", "v2 i2 5.0 2020-01-01"])
    write_subset(original, tmp_path / "old", drop_newest=0.3)  # aa: 2 rows, bb: 1
    past, day = split_day(read_logs(original), read_logs(tmp_path / "old"))
    # u2's row twice in the data: both are the newest, both in the day, in file order.
    assert [(r.market, r.user, r.item, r.line) for r in day] == [
        ("bb", "v1", "i1", 2), ("aa", "u2", "i1", 4), ("aa", "u2", "i1", 5),
    ]  # fmt: skip
    assert [(r.market, r.user) for r in past] == [("aa", "u1"), ("bb", "v2"), ("aa", "u3"),
                                                  ("aa", "u1")]  # fmt: skip
    assert len(past) + len(day) == 7


def test_old_rows_the_original_lacks_are_refused(tmp_path: Path) -> None:
    original = write(tmp_path / "orig", "aa", ["u1 i1 5.0 2020-01-03"])
    old = write(tmp_path / "old", "aa", ["u1 i1 5.0 2020-01-03", "u9 i1 5.0 2020-01-03"])
    with pytest.raises(ValueError, match="aa: the old data has rows the original lacks"):
        split_day(read_logs(original), read_logs(old))


def test_check_finds_a_doubled_and_a_lost_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = write(tmp_path / "orig", "aa", ["u1 i1 5.0 2020-01-03", "u1 i2 5.0 2020-01-04"])
    same = write(tmp_path / "same", "aa", ["u1 i2 5.0 2020-01-04", "u1 i1 5.0 2020-01-03"])
    doubled = write(tmp_path / "doubled", "aa", ["u1 i1 5.0 2020-01-03"] * 2)
    assert check(argparse.Namespace(data=original, merged=same)) == 0
    assert "the same rows: yes" in capsys.readouterr().out
    assert check(argparse.Namespace(data=original, merged=doubled)) == 1
    assert "| aa | 2 | 2 | 1 | 1 |" in capsys.readouterr().out


def test_posted_events_and_a_switch_under_load(
    store: ModelStore, flushed_redis: str, synth_dir: Path, tmp_path: Path
) -> None:
    """The day posted twice (the second time all duplicates), then recommendations of the
    synthetic markets' users while tiny-2 is promoted and reloaded: no request fails, and
    every reply after the first from tiny-2 comes from tiny-2."""
    clone_version(store, "tiny-1", "tiny-2")
    write_subset(synth_dir, tmp_path / "old", drop_newest=0.02)
    _, day = split_day(read_logs(synth_dir), read_logs(tmp_path / "old"))
    users = {log.market: sorted(set(log.users))[:50] for log in read_logs(synth_dir)}
    with running_service(store.root, flushed_redis, free_port()) as service:
        first = asyncio.run(post_rows(service.url, API_KEY, day, "day"))
        again = asyncio.run(post_rows(service.url, API_KEY, day, "day"))

        async def scenario() -> None:
            load = asyncio.create_task(
                drive(service.url, users, clients=3, pause_s=0.01, after_s=1.0, timeout_s=10,
                      seed=0)
            )  # fmt: skip
            await asyncio.sleep(1.0)
            await asyncio.to_thread(store.promote, "tiny-2")
            async with httpx.AsyncClient(base_url=service.url, timeout=60) as http:
                reply = await http.post("/admin/reload", headers={"X-API-Key": API_KEY})
                assert reply.json()["serving"] == "tiny-2"
            switch = await load
            result = summary(switch, 2.0)
            assert (result["old"], result["new"], result["last_version"]) == (
                "tiny-1",
                "tiny-2",
                "tiny-2",
            )
            assert result["failed"] == 0 and result["old_sent_after_switch"] == 0
            assert result["versions"]["tiny-1"] > 0 and result["versions"]["tiny-2"] > 0

        asyncio.run(scenario())
    assert len(day) == first.events == first.accepted > 0 and first.duplicates == 0
    assert first.requests == 1 and set(first.per_market) == {"aa", "bb", "cc"}
    assert again.accepted == 0 and again.duplicates == len(day)
