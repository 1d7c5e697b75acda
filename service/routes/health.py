"""Liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import Res
from service.schemas import ReadyOut

router = APIRouter()


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Not ready: no model, or no Redis"}},
)
async def readyz(resources: Res) -> JSONResponse:
    loaded = resources.reloader.loaded
    redis_ok = await resources.history.ping()
    body = {
        "model": loaded.version if loaded else None,
        "variant": loaded.variant if loaded else None,
        "provider": loaded.provider if loaded else None,
        "redis": "ok" if redis_ok else "unavailable",
    }
    ready = loaded is not None and redis_ok
    return JSONResponse(
        {"status": "ready" if ready else "not ready", **body}, 200 if ready else 503
    )


@router.get("/metrics", response_class=PlainTextResponse)  # documented as text, as served
async def prometheus(resources: Res) -> Response:
    return Response(generate_latest(resources.metrics.registry), media_type=CONTENT_TYPE_LATEST)
