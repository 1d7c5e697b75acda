"""A model version loaded for serving: verified files, vocabulary, catalogues, sessions.

Loading verifies every hash, opens one onnxruntime session per graph and warms
each with a real call, so a version that cannot score is refused before it is
swapped in. A ``LoadedVersion`` never changes; a reload builds a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

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
            session = make_session(opened.file(name), provider, intra_threads, inter_threads)
            graphs[name] = Graph(name, session, active_provider(session))
        if code not in catalogues:
            raise StoreError(f"version {manifest.version}: no catalogue for market {code!r}")
        markets[code] = MarketModel(code, index, graphs[name], own, catalogues[code])
    for model in markets.values():
        _warm_up(model, manifest.version)
    providers = {g.provider for g in graphs.values()}
    return LoadedVersion(
        version=manifest.version,
        variant=manifest.variant,
        provider="cuda" if providers == {"cuda"} else "cpu" if providers == {"cpu"} else "mixed",
        max_history=int(manifest.model.get("max_history", 50)),
        vocabulary=vocabulary,
        markets=markets,
    )


def _warm_up(model: MarketModel, version: str) -> None:
    """One real call per market: a graph that fails or yields non-finite scores is refused."""
    candidates = model.catalogue.items[None, :8]
    if candidates.size == 0:
        raise StoreError(f"version {version}: market {model.code} has an empty catalogue")
    history = model.catalogue.items[None, :3]
    try:
        scores = model.graph.score(history, candidates, np.array([model.index], dtype=np.int64))
    except Exception as e:  # onnxruntime raises its own exception types
        raise StoreError(f"version {version}: {model.graph.name} failed to score: {e}") from e
    if scores.shape != candidates.shape or not np.isfinite(scores).all():
        raise StoreError(f"version {version}: {model.graph.name} gave unusable scores")
