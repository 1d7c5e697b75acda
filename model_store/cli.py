"""``cmr store``: list, inspect, promote and roll back the versions of a model store.

Also ``user_errors``, the one way every ``cmr`` command turns bad input into one
clear line and exit code 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from model_store.manifest import StoreError
from model_store.store import ModelStore

app = typer.Typer(
    name="store",
    help="List, inspect, promote and roll back model versions.",
    no_args_is_help=True,
)

StoreDir = Annotated[Path, typer.Option("--store", help="Model store folder.", show_default=False)]


@contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Bad input (a ``StoreError``, a missing file, ``kinds``) ends the command with one
    clear line and exit code 2, no traceback."""
    caught: tuple[type[Exception], ...] = (StoreError, FileNotFoundError, *kinds)
    try:
        yield
    except caught as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from exc


@app.command("list")
def store_list(store: StoreDir) -> None:
    """Versions, oldest first; * marks the current one. Each with its variant, creation
    time and the markets with parameters of their own (the rest use the shared ones)."""
    with user_errors():
        opened = ModelStore(store)
        current = opened.current()
        for name in opened.versions():
            manifest = opened.open(name, verify=False).manifest
            mark = "*" if name == current else " "
            own = ",".join(manifest.own_parameters) or "none"
            line = f"{mark} {name}  {manifest.variant}  {manifest.created_at}"
            print(f"{line}  own parameters: {own}")


@app.command("show")
def store_show(
    store: StoreDir,
    version: Annotated[str | None, typer.Argument(help="Default: the current one.")] = None,
) -> None:
    """A version's manifest, after verifying every file's hash."""
    with user_errors():
        print(ModelStore(store).open(version).manifest.to_json(), end="")


@app.command("promote")
def store_promote(store: StoreDir, version: Annotated[str, typer.Argument()]) -> None:
    """Verify VERSION and make it current (services pick it up on their next reload)."""
    with user_errors():
        ModelStore(store).promote(version)
    print(f"current: {version}")


@app.command("rollback")
def store_rollback(store: StoreDir) -> None:
    """Make the previously current version current again."""
    with user_errors():
        restored = ModelStore(store).rollback()
    print(f"current: {restored.name}")
