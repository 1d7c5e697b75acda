"""``POST /admin/reload``: load the store's current version now."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import Res
from service.errors import VersionRefused, documented
from service.schemas import ReloadOut

router = APIRouter()


@router.post("/admin/reload", responses=documented(VersionRefused))
async def admin_reload(resources: Res) -> ReloadOut:
    """Swap in the store's current version, even one refused before; 409 says why not."""
    reloader = resources.reloader
    try:
        loaded = await reloader.reload(force=True)
    except VersionRefused as e:
        serving = reloader.loaded.version if reloader.loaded else None
        raise VersionRefused(f"reload refused: {e}", detail={"serving": serving}) from e
    return ReloadOut(serving=loaded.version, variant=loaded.variant)
