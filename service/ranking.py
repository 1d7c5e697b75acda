"""Candidate selection and top-k: what a recommendation request ranks, and how."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from model_store.vocab import PAD, IntArray, Vocabulary, find_sorted
from service.graphs import MarketModel


def known_history(vocabulary: Vocabulary, item_ids: list[str], max_len: int) -> IntArray:
    """The most recent ``max_len`` items the model knows, oldest first, as indices."""
    indices = vocabulary.lookup(item_ids)
    known: IntArray = indices[indices != PAD]
    return known[-max_len:]


def candidates_for(
    market: MarketModel,
    vocabulary: Vocabulary,
    requested: list[str] | None,
    seen: IntArray,
    exclude_seen: bool,
) -> IntArray:
    """The request's own candidates (known items, first occurrence, in order) or else the
    market's catalogue, minus the user's items when ``exclude_seen``."""
    if requested is None:
        candidates = market.catalogue.items
        if exclude_seen and len(seen):
            candidates = candidates[~np.isin(candidates, seen)]
        return candidates
    # A few hundred ids: plain Python sets beat numpy's sorting set operations here.
    drop = set(seen.tolist()) if exclude_seen else set()
    drop.add(PAD)
    indices = vocabulary.lookup(dict.fromkeys(requested))  # de-duplicated, order kept
    return np.array([i for i in indices.tolist() if i not in drop], dtype=np.int64)


def popularity_scores(market: MarketModel, candidates: IntArray) -> NDArray[np.float32]:
    """Each candidate's share of the market's interactions (0 for items it never sold)."""
    catalogue = market.catalogue  # never empty: loading refuses an empty one
    order = np.argsort(catalogue.items)
    at, found = find_sorted(catalogue.items[order], candidates)
    total = max(int(catalogue.counts.sum()), 1)
    return np.where(found, catalogue.counts[order][at] / total, 0.0).astype(np.float32)


def top_k(
    candidates: IntArray, scores: NDArray[np.float32], k: int
) -> tuple[IntArray, NDArray[np.float32]]:
    """The ``k`` best, highest score first; ties keep the candidates' order."""
    order = np.argsort(-scores, kind="stable")[:k]
    return candidates[order], scores[order]
