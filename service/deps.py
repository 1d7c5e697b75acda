"""What the routes share: the resources made in the lifespan, as one typed object, and
the FastAPI dependencies that hand them (and the served version) to a route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.graphs import LoadedVersion
from service.history import HistoryStore
from service.metrics import Metrics
from service.reloader import Reloader
from service.scorer import BatchingScorer
from service.settings import Settings


@dataclass(frozen=True)
class Resources:
    settings: Settings
    metrics: Metrics
    history: HistoryStore
    scorer: BatchingScorer
    reloader: Reloader


def resources_of(request: Request) -> Resources:
    """The app's resources (``app.state.resources``, set by the lifespan)."""
    made: Resources = request.app.state.resources
    return made


# The dependencies are ``async``: FastAPI would run plain functions in a thread pool,
# a thread hop per dependency per request.
async def _resources(request: Request) -> Resources:
    return resources_of(request)


async def _loaded(request: Request) -> LoadedVersion:
    return resources_of(request).reloader.serving()  # ModelNotLoaded: 503


Res = Annotated[Resources, Depends(_resources)]
Loaded = Annotated[LoadedVersion, Depends(_loaded)]
