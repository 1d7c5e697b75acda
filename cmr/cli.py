"""``cmr``: each package's own commands, composed. Every package's command module imports
its heavy dependencies (torch, onnxruntime, uvicorn) inside its commands, so ``cmr
store ...`` or ``cmr serve`` never loads torch; a package that is not installed (the
service image carries no training code) leaves its commands out.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Annotated

import typer

from model_store.cli import app as store_app

app = typer.Typer(
    help="Cross-market recommendation: data, baselines, training, evaluation, the model "
    "store and the service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


if importlib.util.find_spec("training") is not None:
    from training.cli import app as training_app

    app.add_typer(training_app)  # no name: `cmr train`, `cmr evaluate`, ...
app.add_typer(store_app, name="store")
if importlib.util.find_spec("service") is not None:
    from service.cli import app as service_app
    from service.cli_events import app as events_app

    app.add_typer(service_app)  # `cmr serve`
    app.add_typer(events_app, name="events")  # `cmr events export`
