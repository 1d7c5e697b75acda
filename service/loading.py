"""Loading a model version for serving: verified files, vocabulary, catalogues, sessions.

Loading verifies every hash, checks that every weight of every graph is finite,
opens one onnxruntime session per graph and warms each market with a realistic
call (many full histories, the whole catalogue), so a version that cannot score,
or scores NaN or infinity for anyone, is refused (``VersionRefused``) before it is
swapped in. The store's and onnxruntime's errors become that refusal here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from model_store.catalogue import load_catalogues
from model_store.manifest import StoreError
from model_store.store import ModelStore
from model_store.vocab import Vocabulary
from service.errors import ScoringFailed, VersionRefused
from service.graphs import ORT_ERRORS, Graph, LoadedVersion, MarketModel, OnnxGraph
from service.sessions import Provider, active_provider, make_session

# onnx's floating-point tensor types, read straight from their raw bytes.
_FLOATS = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
}
# Full histories per market in the warm-up; the markets take consecutive slices of
# the vocabulary, so many items are in some history (every weight is checked apart).
WARM_UP_ROWS = 16


class VersionSource(Protocol):
    """Where the reloader finds versions: the name of the current one, and a loader."""

    def current(self) -> str | None: ...

    def load(self, version: str) -> LoadedVersion:
        """The version loaded and warmed, or ``VersionRefused``."""
        ...


@dataclass(frozen=True)
class StoreSource:
    """A model store's versions, as onnxruntime sessions with these thread counts."""

    store: ModelStore
    provider: Provider
    intra_threads: int
    inter_threads: int

    def current(self) -> str | None:
        return self.store.current()

    def load(self, version: str) -> LoadedVersion:
        try:
            return load_version(
                self.store,
                version,
                provider=self.provider,
                intra_threads=self.intra_threads,
                inter_threads=self.inter_threads,
            )
        except (StoreError, OSError, ValueError, DecodeError, *ORT_ERRORS) as e:
            said = str(e)
            raise VersionRefused(said if version in said else f"version {version}: {said}") from e


def load_version(
    store: ModelStore,
    version: str | None,
    *,
    provider: Provider,
    intra_threads: int,
    inter_threads: int,
) -> LoadedVersion:
    """Open (``current`` when not named), verify, make sessions and warm them up."""
    opened = store.open(version)
    manifest = opened.manifest
    vocabulary = Vocabulary.load(opened.file(manifest.items))
    catalogues = load_catalogues(opened.file(manifest.catalogues))
    graphs: dict[str, Graph] = {}
    markets = {}
    for code, index in manifest.markets.items():
        name, own = manifest.graph_for(code)
        if name not in graphs:
            check_weights(opened.file(name), f"version {manifest.version}: {name}")
            session = make_session(
                opened.file(name),
                provider=provider,
                intra_threads=intra_threads,
                inter_threads=inter_threads,
            )
            graphs[name] = OnnxGraph(name, session, active_provider(session))
        if code not in catalogues:
            raise StoreError(f"version {manifest.version}: no catalogue for market {code!r}")
        markets[code] = MarketModel(
            code=code,
            index=index,
            graph=graphs[name],
            own_parameters=own,
            catalogue=catalogues[code],
        )
    max_history = int(manifest.model.get("max_history", 50))
    warm_up(list(markets.values()), vocabulary.size, max_history=max_history)
    providers = {g.provider for g in graphs.values()}
    return LoadedVersion(
        version=manifest.version,
        variant=manifest.variant,
        provider="cuda" if providers == {"cuda"} else "cpu" if providers == {"cpu"} else "mixed",
        max_history=max_history,
        vocabulary=vocabulary,
        markets=markets,
    )


def check_weights(path: Path, what: str) -> None:
    """Refuse a graph with a non-finite weight: one NaN in an item's embedding makes
    every score NaN, but only for users whose history holds that item."""
    graph = onnx.load(str(path)).graph
    constants = [a.t for node in graph.node for a in node.attribute if a.HasField("t")]
    tensors = [*graph.initializer, *constants]
    for tensor in tensors:
        if tensor.data_type == onnx.TensorProto.BFLOAT16:
            values = numpy_helper.to_array(tensor)
        elif tensor.data_type in _FLOATS:
            dtype = _FLOATS[tensor.data_type]
            raw = tensor.raw_data
            values = np.frombuffer(raw, dtype) if raw else numpy_helper.to_array(tensor)
        else:
            continue
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise StoreError(f"{what}: weight {tensor.name!r} has {bad} non-finite values")


def warm_up(markets: list[MarketModel], vocabulary_size: int, *, max_history: int) -> None:
    """Score each market's whole catalogue for ``WARM_UP_ROWS`` full histories: a graph
    that fails, or gives a non-finite score, is refused. One history per call, as wide
    as a serving call can be: onnxruntime's memory arena keeps the size of the widest
    call it has seen, so a wider warm-up would hold memory that serving never needs."""
    per_market = WARM_UP_ROWS * max_history
    for n, model in enumerate(markets):
        catalogue = model.catalogue.items
        if catalogue.size == 0:
            raise StoreError(f"market {model.code} has an empty catalogue")
        items = np.arange(n * per_market, (n + 1) * per_market) % max(vocabulary_size - 1, 1)
        histories = (items + 1).reshape(WARM_UP_ROWS, max_history)  # index 0 is padding
        market = np.array([model.index], dtype=np.int64)
        for history in histories:
            try:
                scores = model.graph.score(history[None, :], catalogue[None, :], market)
            except ScoringFailed as e:
                raise StoreError(f"{model.graph.name} failed to score: {e.detail}") from e
            if scores.shape != (1, catalogue.size):
                raise StoreError(f"{model.graph.name} gave wrongly shaped scores")
            bad = int(np.count_nonzero(~np.isfinite(scores)))
            if bad:
                raise StoreError(
                    f"{model.graph.name} gave {bad} non-finite scores in market {model.code} "
                    f"(warm-up: {WARM_UP_ROWS} histories x the catalogue)"
                )
