"""``GET /markets``: the markets the served version scores, and how; then the new
markets (CMR_NEW_MARKETS) it does not know yet, ranked by pooled popularity."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import Loaded, Res
from service.errors import ModelNotLoaded, documented
from service.schemas import MarketOut, MarketsOut

router = APIRouter()


@router.get("/markets", responses=documented(ModelNotLoaded))
async def markets(loaded: Loaded, resources: Res) -> MarketsOut:
    served = [
        MarketOut(
            market=m.code,
            graph=m.graph.name,
            own_parameters=m.own_parameters,
            catalogue_size=len(m.catalogue),
        )
        for m in loaded.markets.values()
    ]
    waiting = [
        MarketOut(
            market=code,
            graph=None,
            own_parameters=False,
            catalogue_size=len(loaded.pooled.catalogue),
            fallback="popularity",
        )
        for code in resources.settings.new_markets
        if code not in loaded.markets
    ]
    return MarketsOut(markets=served + waiting)
