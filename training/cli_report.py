"""``cmr report``: pictures and tables of what a published version learned."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model_store.cli import StoreDir
from training.cli_options import training_errors

report_app = typer.Typer(
    help="Reports on a published version: which markets are alike.", no_args_is_help=True
)


@report_app.command("markets")
def markets_command(
    *,
    store: StoreDir,
    version: Annotated[
        str | None, typer.Option(help="A hybrid version (default: the current one).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for markets.png and markets.md.")],
) -> None:
    """How close the markets are: by the parameters each learned on its own (market
    vector, item-bias delta) and by item overlap (shared items, share of interactions),
    with each market's mix beside. Writes OUT/markets.png (heatmaps) and OUT/markets.md
    (the tables) and prints the tables."""
    from training.market_report import market_report, plot_report, report_markdown
    from training.store_model import load_stored_hybrid

    with training_errors():
        report = market_report(load_stored_hybrid(store, version))
        out.mkdir(parents=True, exist_ok=True)
        plot_report(report, out / "markets.png")
        text = report_markdown(report, image="markets.png")
        (out / "markets.md").write_text(text)
    print(text, end="")
    print(f"wrote {out / 'markets.png'} and {out / 'markets.md'}")
