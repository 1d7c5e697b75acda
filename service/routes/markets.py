"""``GET /markets``: the markets the served version scores, and how."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import Loaded
from service.errors import ModelNotLoaded, documented
from service.schemas import MarketOut, MarketsOut

router = APIRouter()


@router.get("/markets", responses=documented(ModelNotLoaded))
async def markets(loaded: Loaded) -> MarketsOut:
    return MarketsOut(
        markets=[
            MarketOut(
                market=m.code,
                graph=m.graph.name,
                own_parameters=m.own_parameters,
                catalogue_size=len(m.catalogue),
            )
            for m in loaded.markets.values()
        ]
    )
