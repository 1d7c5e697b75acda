"""A model version loaded for serving: verified files, vocabulary, catalogues, sessions.

Loading verifies every hash, checks that every weight of every graph is finite,
opens one onnxruntime session per graph and warms each market with a realistic
call (many full histories, the whole catalogue), so a version that cannot score,
or scores NaN or infinity for anyone, is refused before it is swapped in. A
``LoadedVersion`` never changes; a reload builds a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from model_store.catalogue import Catalogue, load_catalogues
from model_store.manifest import StoreError
from model_store.store import ModelStore
from model_store.vocab import IntArray, Vocabulary
from service.sessions import Provider, active_provider, make_session


@dataclass(frozen=True)
class Graph:
    """One scoring graph; requests that share a ``Graph`` can share a call."""

    name: str  # its file in the version, e.g. markets/de.onnx
    session: ort.InferenceSession
    provider: str  # what the session actually runs on: cuda or cpu

    def score(self, history: IntArray, candidates: IntArray, market: IntArray) -> np.ndarray:
        (scores,) = self.session.run(
            None, {"history": history, "candidates": candidates, "market": market}
        )
        return np.asarray(scores)


@dataclass(frozen=True)
class MarketModel:
    code: str
    index: int  # the graphs' market input
    graph: Graph
    own_parameters: bool  # scored with the market's own parameters, not the shared ones
    catalogue: Catalogue


@dataclass(frozen=True)
class LoadedVersion:
    version: str
    variant: str
    provider: str  # what the sessions actually run on: cuda or cpu
    max_history: int
    vocabulary: Vocabulary
    markets: dict[str, MarketModel]


def load_version(
    store: ModelStore,
    version: str | None,
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
            session = make_session(opened.file(name), provider, intra_threads, inter_threads)
            graphs[name] = Graph(name, session, active_provider(session))
        if code not in catalogues:
            raise StoreError(f"version {manifest.version}: no catalogue for market {code!r}")
        markets[code] = MarketModel(code, index, graphs[name], own, catalogues[code])
    max_history = int(manifest.model.get("max_history", 50))
    _warm_up(list(markets.values()), vocabulary.size, max_history, manifest.version)
    providers = {g.provider for g in graphs.values()}
    return LoadedVersion(
        version=manifest.version,
        variant=manifest.variant,
        provider="cuda" if providers == {"cuda"} else "cpu" if providers == {"cpu"} else "mixed",
        max_history=max_history,
        vocabulary=vocabulary,
        markets=markets,
    )


# onnx's floating-point tensor types, read straight from their raw bytes.
_FLOATS = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
}
# Full histories per market in the warm-up; the markets take consecutive slices of
# the vocabulary, so many items are in some history (every weight is checked apart).
WARM_UP_ROWS = 16


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


def _warm_up(
    markets: list[MarketModel], vocabulary_size: int, max_history: int, version: str
) -> None:
    """Score each market's whole catalogue for ``WARM_UP_ROWS`` full histories: a graph
    that fails, or gives a non-finite score, is refused. One history per call, as wide
    as a serving call can be: onnxruntime's memory arena keeps the size of the widest
    call it has seen, so a wider warm-up would hold memory that serving never needs."""
    per_market = WARM_UP_ROWS * max_history
    for n, model in enumerate(markets):
        catalogue = model.catalogue.items
        if catalogue.size == 0:
            raise StoreError(f"version {version}: market {model.code} has an empty catalogue")
        items = np.arange(n * per_market, (n + 1) * per_market) % max(vocabulary_size - 1, 1)
        histories = (items + 1).reshape(WARM_UP_ROWS, max_history)  # index 0 is padding
        market = np.array([model.index], dtype=np.int64)
        for history in histories:
            try:
                scores = model.graph.score(history[None, :], catalogue[None, :], market)
            except Exception as e:  # onnxruntime raises its own exception types
                raise StoreError(
                    f"version {version}: {model.graph.name} failed to score: {e}"
                ) from e
            if scores.shape != (1, catalogue.size):
                raise StoreError(
                    f"version {version}: {model.graph.name} gave wrongly shaped scores"
                )
            bad = int(np.count_nonzero(~np.isfinite(scores)))
            if bad:
                raise StoreError(
                    f"version {version}: {model.graph.name} gave {bad} non-finite scores in "
                    f"market {model.code} (warm-up: {WARM_UP_ROWS} histories x the catalogue)"
                )
