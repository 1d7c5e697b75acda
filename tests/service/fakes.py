"""In-memory stand-ins for the service's outside dependencies: a history store without
Redis, graphs without onnxruntime, and a version source without a model store, so
routes, ranking, batching and reload are tested without either."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from model_store.catalogue import Catalogue
from model_store.vocab import IntArray, Vocabulary
from service.errors import HistoryUnavailable, ScoringFailed, VersionRefused
from service.graphs import LoadedVersion, MarketModel, Scores
from service.history import Counts, Event


class MemoryHistory:
    """The ``HistoryStore`` contract in a dict: capped, de-duplicated, ordered by
    timestamp where all of a user's events have one; ``down`` makes it unavailable."""

    def __init__(self, max_length: int = 50) -> None:
        self.max_length = max_length
        self.lists: dict[tuple[str, str], list[str]] = defaultdict(list)  # oldest first
        self.seen: set[tuple[str, str, str]] = set()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise HistoryUnavailable(detail="memory: down")

    async def append(self, events: Sequence[Event]) -> Counts:
        self._check()
        by_user: dict[tuple[str, str], list[Event]] = defaultdict(list)
        for event in events:
            by_user[(event.market, event.user_id)].append(event)
        counts: Counts = {}
        for (market, user), user_events in by_user.items():
            if all(e.timestamp is not None for e in user_events):
                user_events = sorted(user_events, key=lambda e: e.timestamp)  # type: ignore[arg-type,return-value]
            added = dups = 0
            for e in user_events:
                key = (market, user, e.event_id or "")
                if e.event_id is not None and key in self.seen:
                    dups += 1
                    continue
                self.seen.add(key)
                self.lists[(market, user)].append(e.item_id)
                added += 1
            self.lists[(market, user)] = self.lists[(market, user)][-self.max_length :]
            before = counts.get(market, (0, 0))
            counts[market] = (before[0] + added, before[1] + dups)
        return counts

    async def history(self, market: str, user_id: str) -> list[str]:
        self._check()
        return list(self.lists.get((market, user_id), []))

    async def ping(self) -> bool:
        return not self.down

    async def close(self) -> None:
        pass


class EmbeddingGraph:
    """Scores a candidate by its embedding's dot product with the mean of the history's,
    plus a per-market bias; records the shape and thread of every call."""

    def __init__(self, items: int, *, dim: int = 8, seed: int = 0, fail: bool = False) -> None:
        rng = np.random.default_rng(seed)
        self.embeddings = rng.normal(size=(items + 1, dim)).astype(np.float32)
        self.embeddings[0] = 0  # padding
        self.name = "model.onnx"
        self.provider = "cpu"
        self.calls: list[tuple[int, ...]] = []
        self.threads: set[str] = set()
        self.fail = fail

    def score(self, history: IntArray, candidates: IntArray, market: IntArray) -> Scores:
        self.calls.append(candidates.shape)
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise ScoringFailed(detail="embedding graph: failing on purpose")
        lengths = np.maximum((history != 0).sum(axis=1, keepdims=True), 1)
        user = self.embeddings[history].sum(axis=1) / lengths  # (B, d)
        scores = np.einsum("bd,bcd->bc", user, self.embeddings[candidates])
        return (scores + market[:, None]).astype(np.float32)


def fake_version(
    name: str = "tiny-1",
    *,
    markets: Sequence[str] = ("aa", "bb", "cc"),
    items: int = 120,
    graph: EmbeddingGraph | None = None,
    catalogues: Mapping[str, Catalogue] | None = None,
) -> LoadedVersion:
    """Like the tiny store's version: ``items`` items I00001.., every market selling all
    of them (most popular first in item order) unless ``catalogues`` says otherwise, all
    markets scored by one ``graph``."""
    vocabulary = Vocabulary.from_ids(f"I{i:05d}" for i in range(1, items + 1))
    graph = graph or EmbeddingGraph(items)
    every = Catalogue(np.arange(1, items + 1), np.arange(items, 0, -1))
    models = {
        code: MarketModel(
            code=code,
            index=index,
            graph=graph,
            own_parameters=True,
            catalogue=(catalogues or {}).get(code, every),
        )
        for index, code in enumerate(markets)
    }
    return LoadedVersion(name, "hybrid", "cpu", 50, vocabulary, models)


class FakeSource:
    """A version source: ``versions`` by name (a ``VersionRefused`` is refused), and
    which of them is current."""

    def __init__(self, *versions: LoadedVersion | tuple[str, str]) -> None:
        self.versions: dict[str, LoadedVersion | str] = {}
        for version in versions:
            if isinstance(version, LoadedVersion):
                self.versions[version.version] = version
            else:
                self.versions[version[0]] = version[1]  # (name, why it is refused)
        self.current_name: str | None = next(iter(self.versions), None)

    def current(self) -> str | None:
        return self.current_name

    def load(self, version: str) -> LoadedVersion:
        found = self.versions[version]
        if isinstance(found, str):
            raise VersionRefused(f"version {version}: {found}")
        return found
