"""Model versions swapped under load, and poisoned versions, against the real service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from benchmarks.processes import RedisProcess, free_port, running_service
from model_store.store import ModelStore
from model_store.vocab import Vocabulary
from tests.reliability.conftest import FULL, Report
from tests.reliability.load import KEY, Load, first_market
from tests.service.conftest import clone_version


def test_hot_swaps_under_load_fail_no_request(
    store: ModelStore, redis_server: RedisProcess, report: Report
) -> None:
    swaps = 10
    for n in range(swaps):
        clone_version(store, "tiny-1", f"swap-{n}")
    with running_service(store.root, redis_server.url, free_port()) as service:
        market = first_market(service.url)
        load = Load(service.url, market)
        served = []

        async def scenario() -> None:
            stop = asyncio.Event()
            running = asyncio.create_task(load.run(stop))
            async with httpx.AsyncClient(base_url=service.url, headers=KEY, timeout=60) as http:
                for n in range(swaps):
                    await asyncio.sleep(1.0 if FULL else 0.3)
                    await asyncio.to_thread(store.promote, f"swap-{n}")
                    reply = await http.post("/admin/reload")
                    assert reply.status_code == 200, reply.text
                    served.append(reply.json()["serving"])
            await asyncio.sleep(0.5)
            stop.set()
            await running

        asyncio.run(scenario())
    report(swaps=swaps, requests=len(load.replies), failed=len(load.failed()))
    assert served == [f"swap-{n}" for n in range(swaps)]
    assert load.failed() == []
    assert len(load.replies) > 10 * swaps


def _poison(value: float) -> Callable[[Path], None]:
    """An edit of a version's folder: ``value`` in the last item's embedding (the old
    warm-up, a 3-item history and 8 candidates, never reached it)."""

    def edit(folder: Path) -> None:
        model = onnx.load(str(folder / "model.onnx"))
        (found,) = [w for w in model.graph.initializer if w.name.endswith("items.weight")]
        array = numpy_helper.to_array(found).copy()
        array[-1] = value
        found.CopyFrom(numpy_helper.from_array(array, found.name))
        onnx.save(model, str(folder / "model.onnx"))

    return edit


# A NaN weight is found by the weight check. A huge embedding, finite itself, makes
# the item's score overflow to infinity when it is in the history: found by the warm-up.
@pytest.mark.parametrize(("value", "reason"), [(np.nan, "non-finite values"),
                                               (3e38, "non-finite scores")])  # fmt: skip
def test_a_poisoned_version_is_refused_and_the_old_one_keeps_serving(
    store: ModelStore,
    redis_server: RedisProcess,
    report: Report,
    value: float,
    reason: str,
) -> None:
    poisoned = clone_version(store, "tiny-1", "poisoned", edit=_poison(value))
    # The poison is real: a user whose history holds the last item gets no finite score.
    session = ort.InferenceSession(str(poisoned.path / "model.onnx"))
    last = len(Vocabulary.load(poisoned.path / "items.json"))
    (scores,) = session.run(None, {"history": np.array([[1, last]]),
                                   "candidates": np.array([[1, 2, last]]),
                                   "market": np.array([0])})  # fmt: skip
    assert not np.isfinite(scores).all()
    with running_service(store.root, redis_server.url, free_port()) as service:
        store.promote("poisoned")
        with httpx.Client(base_url=service.url, headers=KEY, timeout=60) as http:
            refused = http.post("/admin/reload")
            assert refused.status_code == 409
            assert reason in refused.json()["error"]
            assert refused.json()["detail"] == {"serving": "tiny-1"}
            market = first_market(service.url)
            reply = http.post(f"/markets/{market}/recommend", json={"user_id": "u", "k": 3})
            assert reply.status_code == 200 and reply.json()["model_version"] == "tiny-1"
    report(poison=str(value), refused=True, reason=refused.json()["error"])
