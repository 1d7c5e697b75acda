"""Hot reload over a version source (fakes): swaps, refusals, polling."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import ModelNotLoaded, VersionRefused
from service.metrics import Metrics
from service.reloader import Reloader
from tests.service.fakes import FakeSource, fake_version

pytestmark = pytest.mark.anyio


async def test_a_refused_version_leaves_the_old_one_serving_until_forced() -> None:
    source = FakeSource(fake_version("tiny-1"), ("tiny-2", "a NaN weight"))
    metrics = Metrics()
    reloader = Reloader(source, metrics, interval_s=0)
    with pytest.raises(ModelNotLoaded):
        reloader.serving()
    assert (await reloader.reload()).version == "tiny-1"
    source.current_name = "tiny-2"
    with pytest.raises(VersionRefused, match="a NaN weight"):
        await reloader.reload()
    assert reloader.serving().version == "tiny-1"
    with pytest.raises(VersionRefused, match="was refused"):  # not loaded again by polling
        await reloader.reload()
    assert metrics.reloads.labels("refused")._value.get() == 1
    source.versions["tiny-2"] = fake_version("tiny-2")  # mended: only a forced reload tries
    assert (await reloader.reload(force=True)).version == "tiny-2"


async def test_polling_notices_a_new_current() -> None:
    source = FakeSource(fake_version("tiny-1"), fake_version("tiny-2"))
    reloader = Reloader(source, Metrics(), interval_s=0.05)
    await reloader.reload()
    reloader.start()
    source.current_name = "tiny-2"
    for _ in range(100):
        if reloader.serving().version == "tiny-2":
            break
        await asyncio.sleep(0.05)
    await reloader.stop()
    assert reloader.serving().version == "tiny-2"


async def test_a_store_without_current_is_a_refusal() -> None:
    source = FakeSource()
    with pytest.raises(VersionRefused, match="no current version"):
        await Reloader(source, Metrics(), interval_s=0).reload()
