"""The service's command: ``python -m service`` (or ``cmr serve``) runs it under uvicorn.

Settings come from ``CMR_*`` environment variables (service/settings.py); uvicorn and
the app are imported inside the command, so ``--help`` is quick.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

app = typer.Typer(
    help="The recommendation service.", no_args_is_help=False, pretty_exceptions_enable=False
)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    access_log: Annotated[bool, typer.Option(help="A log line per request.")] = False,
) -> None:
    """Run the recommendation service (settings from CMR_* environment variables:
    CMR_STORE, CMR_REDIS_URL, CMR_API_KEY, CMR_DEVELOPMENT, CMR_PROVIDER, ...)."""
    import uvicorn
    from pydantic import ValidationError

    from service.app import create_app
    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as e:
        typer.secho(f"error: bad settings: {e}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from e
    if not logging.getLogger().handlers:  # `python -m service`: no `cmr` set it up
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=access_log)
