"""A model version as the service holds it: its scoring graphs, its markets, and what
a request asks of them (the user's known history, the candidates, popularity, the
top k), and the pooled popularity that ranks a new market no model knows yet. Loading
one is service/loading.py; a ``LoadedVersion`` never changes, a reload builds a new one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from model_store.catalogue import Catalogue
from model_store.vocab import PAD, IntArray, Vocabulary, find_sorted
from service.errors import ScoringFailed, UnknownMarket

Scores = NDArray[np.float32]

# onnxruntime's exceptions share no base of their own; these are what its calls raise.
ORT_ERRORS: tuple[type[Exception], ...] = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.RuntimeException,
    ort_errors.EngineError,
    ort_errors.EPFail,
    ort_errors.NotImplemented,
)


class Graph(Protocol):
    """One scoring graph; requests that share a ``Graph`` can share a call."""

    @property
    def name(self) -> str: ...  # its file in the version, e.g. markets/de.onnx

    @property
    def provider(self) -> str: ...  # what it actually runs on: cuda or cpu

    def score(self, history: IntArray, candidates: IntArray, market: IntArray) -> Scores:
        """(B, N) histories, (B, C) candidates, (B,) market indices -> (B, C) scores."""
        ...


@dataclass(frozen=True)
class OnnxGraph:
    name: str
    session: ort.InferenceSession
    provider: str

    def score(self, history: IntArray, candidates: IntArray, market: IntArray) -> Scores:
        try:
            (scores,) = self.session.run(
                None, {"history": history, "candidates": candidates, "market": market}
            )
        except ORT_ERRORS as e:
            raise ScoringFailed(detail=f"{self.name}: {e}") from e
        return np.asarray(scores, dtype=np.float32)


@dataclass(frozen=True)
class Popularity:
    """A catalogue, what a request ranks from it, and each item's popularity there."""

    catalogue: Catalogue

    def candidates(
        self,
        vocabulary: Vocabulary,
        requested: list[str] | None,
        *,
        seen: IntArray,
        exclude_seen: bool,
    ) -> IntArray:
        """The request's own candidates (known items, first occurrence, in order) or else
        the catalogue, minus the user's items when ``exclude_seen``."""
        if requested is None:
            candidates = self.catalogue.items
            if exclude_seen and len(seen):
                # A mask over the vocabulary: a quarter of np.isin's time for a catalogue.
                is_seen = np.zeros(vocabulary.size, dtype=bool)
                is_seen[seen] = True
                candidates = candidates[~is_seen[candidates]]
            return candidates
        # A few hundred ids: plain Python sets beat numpy's sorting set operations here,
        # and one pass that looks up, drops and de-duplicates beats three.
        drop = set(seen.tolist()) if exclude_seen else set()
        drop.add(PAD)
        kept = []
        for index in vocabulary.indices(requested):
            if index not in drop:
                drop.add(index)  # first occurrence only
                kept.append(index)
        return np.array(kept, dtype=np.int64)

    @cached_property
    def _by_item(self) -> tuple[IntArray, NDArray[np.float64]]:
        """The catalogue's items in index order and each one's share, once per version
        (the catalogue is kept most popular first)."""
        catalogue = self.catalogue  # never empty: loading refuses an empty one
        order = np.argsort(catalogue.items)
        total = max(int(catalogue.counts.sum()), 1)
        return catalogue.items[order], catalogue.counts[order] / total

    def popularity(self, candidates: IntArray) -> Scores:
        """Each candidate's share of the catalogue's interactions (0 for items never sold)."""
        items, shares = self._by_item
        at, found = find_sorted(items, candidates)
        return np.where(found, shares[at], 0.0).astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class MarketModel(Popularity):
    """A market the version's model scores; its popularity is the market's own."""

    code: str
    index: int  # the graphs' market input
    graph: Graph
    own_parameters: bool  # scored with the market's own parameters, not the shared ones


@dataclass(frozen=True)
class LoadedVersion:
    version: str
    variant: str
    provider: str  # what the sessions actually run on: cuda, cpu or mixed
    max_history: int
    vocabulary: Vocabulary
    markets: dict[str, MarketModel]

    def ranking(self, market: str, *, new_markets: Collection[str]) -> MarketModel | Popularity:
        """The market's model; for a market of ``new_markets`` that this version does not
        know, popularity pooled over every market it does; else ``UnknownMarket``."""
        model = self.markets.get(market)
        if model is not None:
            return model
        if market in new_markets:
            return self.pooled
        raise UnknownMarket(f"unknown market {market!r}; GET /markets lists them")

    @cached_property
    def pooled(self) -> Popularity:
        """Popularity over every market's catalogue, counts summed: what a new market
        (CMR_NEW_MARKETS) is ranked by until a version knows it; made once per version."""
        return Popularity(Catalogue.pooled(m.catalogue for m in self.markets.values()))

    def known_history(self, item_ids: list[str]) -> IntArray:
        """The most recent ``max_history`` items the model knows, oldest first, as indices."""
        indices = self.vocabulary.lookup(item_ids)
        known: IntArray = indices[indices != PAD]
        return known[-self.max_history :]

    def top_k(self, candidates: IntArray, scores: Scores, k: int) -> list[tuple[str, float]]:
        """The ``k`` best (item id, score), highest first; ties keep the candidates' order."""
        order = best_first(scores, k)
        item = self.vocabulary.item
        best = zip(candidates[order].tolist(), scores[order].tolist(), strict=True)
        return [(item(i), s) for i, s in best]


def best_first(scores: Scores, k: int) -> IntArray:
    """Positions of the ``k`` highest scores, highest first, ties in position order.

    A whole catalogue is thousands of scores: sorting only those at or above the k-th
    highest (all of its ties included, so the order is the full sort's) costs a
    fraction of sorting them all."""
    if len(scores) <= 4 * k:
        return np.argsort(-scores, kind="stable")[:k]
    threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
    top = np.flatnonzero(scores >= threshold)
    return top[np.argsort(-scores[top], kind="stable")[:k]]
