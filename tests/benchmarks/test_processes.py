"""ManagedProcess, the one start / wait-until-ready / stop of every server the
benchmarks and tests run, on small Python children."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from benchmarks.processes import ManagedProcess, NotReady


def python(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", code]


def test_ready_once_the_check_passes_and_the_log_holds_the_output(tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    code = f"import pathlib, time; print('up'); pathlib.Path({str(flag)!r}).touch(); time.sleep(60)"
    with ManagedProcess(python(code), flag.exists, name="child", ready_s=30, poll_s=0.01) as child:
        assert child.process.poll() is None
        assert child.log_text() == "up\n"
    assert child.process.poll() is not None  # stopped on exit
    assert child.log_text() == ""  # the log closes with it


def test_a_child_that_exits_is_not_ready_and_its_log_says_why() -> None:
    child = ManagedProcess(
        python("print('no config'); raise SystemExit(3)"), lambda: False, name="child"
    )
    with pytest.raises(NotReady, match="child did not become ready:\nno config"):
        child.start()
    assert child.process.returncode == 3


def test_a_child_never_ready_is_stopped_after_ready_s() -> None:
    child = ManagedProcess(
        python("import time; time.sleep(60)"), lambda: False, name="child", ready_s=0.2
    )
    with pytest.raises(NotReady):
        child.start()
    assert child.process.returncode == -signal.SIGTERM


def test_a_child_ignoring_sigterm_is_killed_after_stop_s(tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    code = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(flag)!r}).touch(); time.sleep(60)"
    )
    child = ManagedProcess(python(code), flag.exists, name="child", poll_s=0.01, stop_s=0.5)
    child.start()
    began = time.monotonic()
    child.stop()
    assert child.process.returncode == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - began < 10


def test_kill_keeps_the_log_for_a_restart() -> None:
    starts = [1]  # ready once the log shows this many starts

    def ready() -> bool:
        return child.log_text().count("up") >= starts[0]

    child = ManagedProcess(python("import time; print('up'); time.sleep(60)"), ready, name="child")
    child.start()
    child.kill()
    assert child.process.returncode == -signal.SIGKILL
    starts[0] = 2
    child.start()
    assert child.log_text() == "up\nup\n"
    child.stop()
