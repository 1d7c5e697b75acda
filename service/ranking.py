"""What one recommend request does with a loaded version, apart from HTTP and metrics:
the user's known history, the candidates, scores (the model's, or popularity as the
fallback), the top k, and the reply's body.

The route (service/routes/recommend.py) calls ``rank`` with the batching scorer; the
benchmarks' Ray Serve peer (benchmarks/ray_peer.py) calls it with its own batcher, so
both do the same work per request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.vocab import IntArray
from service.errors import NonFiniteScores
from service.graphs import LoadedVersion, MarketModel, Popularity, Scores

log = logging.getLogger(__name__)

# history (N,), candidates (C,), the market's model -> scores (C,)
Score = Callable[[IntArray, IntArray, MarketModel], Awaitable[Scores]]


@dataclass(frozen=True)
class Ranked:
    items: list[tuple[str, float]]  # (item id, score), best first
    fallback: str | None  # "popularity" when the model did not score the request
    scored: int  # candidates the model scored (0 on a fallback)


async def rank(
    loaded: LoadedVersion,
    ranking: MarketModel | Popularity,
    *,
    market: str,
    stored: list[str],
    candidates: list[str] | None,
    k: int,
    exclude_seen: bool,
    score: Score,
) -> Ranked:
    """Rank a user's candidates (or else the catalogue) in ``market``, given its
    ``ranking`` (``loaded.ranking(market, ...)``) and the user's ``stored`` history."""
    seen = loaded.known_history(stored)
    asked = ranking.candidates(loaded.vocabulary, candidates, seen=seen, exclude_seen=exclude_seen)
    fallback: str | None = None
    scored = 0
    if not isinstance(ranking, MarketModel) or len(seen) == 0:
        fallback = "popularity"  # no model for the market yet, or no known history
        scores = ranking.popularity(asked)
    elif len(asked) == 0:
        scores = ranking.popularity(asked)  # nothing to score
    else:
        scores = await score(seen, asked, ranking)
        scored = len(asked)
    if not np.isfinite(scores).all():
        bad = int(np.count_nonzero(~np.isfinite(scores)))
        log.error("recommend %s: %d of %d scores are not finite", market, bad, len(scores))
        raise NonFiniteScores()
    return Ranked(loaded.top_k(asked, scores, k), fallback, scored)


def reply(loaded: LoadedVersion, ranked: Ranked, *, market: str, user_id: str) -> dict[str, Any]:
    """The response body (``RecommendOut``) as plain JSON values."""
    return {
        "market": market,
        "user_id": user_id,
        "items": [{"item_id": item, "score": score} for item, score in ranked.items],
        "model_version": loaded.version,
        "variant": loaded.variant,
        "fallback": ranked.fallback,
    }
