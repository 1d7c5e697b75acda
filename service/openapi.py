"""/openapi.json: FastAPI's own document, plus what it cannot see: the error body's
schema, what the request guard answers (service/middleware.py), and the markets of
the version served and the new ones (so an unknown market is invalid input there)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from service import middleware
from service.schemas import ErrorOut, add_schemas


def served_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that adds the above, made once per version."""
    generate = app.openapi  # FastAPI's; it keeps the first it made
    made: dict[tuple[str, ...], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        resources = getattr(app.state, "resources", None)  # made in the lifespan
        markets: tuple[str, ...] = ()
        if resources is not None and resources.reloader.loaded is not None:
            # The new markets are served too, by popularity until a version knows them.
            known = resources.reloader.loaded.markets
            markets = tuple(sorted({*known, *resources.settings.new_markets}))
        if markets not in made:
            schema = copy.deepcopy(generate())
            add_schemas(schema, ErrorOut)
            middleware.document(schema)
            if markets:
                described = {
                    "enum": list(markets),
                    "description": "A market served now (a new one by popularity until a "
                    "version knows it: GET /markets)",
                }
                schema["components"]["schemas"]["EventIn"]["properties"]["market"] |= described
                recommend = schema["paths"]["/markets/{market}/recommend"]["post"]
                recommend["parameters"][0]["schema"] |= described
            made.clear()  # only the version served now
            made[markets] = schema
        return made[markets]

    app.openapi = openapi  # type: ignore[method-assign]
