"""``cmr events``: the event log's commands (service/event_log.py), composed into ``cmr``
by cmr/cli.py. Apart from service/cli.py, so that ``python -m service`` stays the one
command it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model_store.cli import user_errors

app = typer.Typer(
    help="The event log: every event POST /events accepted, once, in Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command("export")
def export(
    dest: Annotated[
        Path,
        typer.Option(
            help="Folder of the per-market files (<market>.tsv, for `cmr train --data`) and "
            "the export's state (.cmr-export.json). Give the export a folder of its own.",
            show_default=False,
        ),
    ],
    redis_url: Annotated[
        str,
        typer.Option(
            envvar="CMR_REDIS_URL",
            help="The service's Redis, or any node of its cluster (found out by itself).",
        ),
    ] = "redis://localhost:6379/0",
    since: Annotated[
        str | None,
        typer.Option(
            help="Only entries after this stream id (<ms>-<seq>), or from this epoch "
            "millisecond (<ms>) on; entries before it are passed over for good.",
            show_default=False,
        ),
    ] = None,
    markets: Annotated[
        str | None,
        typer.Option(help="Comma-separated market codes. [default: every market logged]"),
    ] = None,
) -> None:
    """Append the events logged since the last export to DEST/<market>.tsv (user_id,
    item_id, timestamp in epoch seconds; unknown items kept). Run it again, after an
    interrupt too: it goes on where it stopped, never losing or doubling an event."""
    from service.errors import ExportFailed
    from service.event_export import export_events, since_position

    with user_errors(ExportFailed):
        start = since_position(since) if since is not None else None
        wanted = [m.strip() for m in markets.split(",") if m.strip()] if markets else None
        exported = export_events(redis_url, dest, since=start, markets=wanted, say=print)
    print(f"{sum(m.exported for m in exported):,} events exported in all")
