"""``cmr onboard``: a new market served by its own parameters, trained in minutes."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from model_store.cli import StoreDir
from training.cli_options import training_errors


def onboard_command(
    *,
    store: StoreDir,
    market: Annotated[str, typer.Option(help="The new market's code (not served yet).")],
    data: Annotated[
        Path,
        typer.Option(
            help="The market's interactions: one file (user, item and optionally timestamp "
            "columns, as `cmr train` reads them) or a data folder holding the market's file."
        ),
    ],
    version: Annotated[
        str | None, typer.Option(help="The version to onboard onto. [default: the current one]")
    ] = None,
    new_version: Annotated[
        str | None, typer.Option(help="Name of the published version. [default: UTC time]")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Training settings, e.g. --set adapt_lr=0.003. Repeatable."),
    ] = None,
    max_epochs: Annotated[int, typer.Option(min=1, help="Most epochs of training.")] = 20,
    promote: Annotated[
        bool, typer.Option(help="Make the new version current once published.")
    ] = True,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the test results as JSON.")
    ] = None,
) -> None:
    """Add a market the served version does not know: only the market's own parameters
    (its EASE^R block, market vector, mix and item-bias rows) are trained, on its data,
    with everything the other markets use frozen. Prints its test metrics beside
    popularity and EASE^R fitted on the market alone, then publishes the new version; a
    running service serves the market after its next reload (popularity until then,
    with CMR_NEW_MARKETS)."""
    from model_store.store import ModelStore
    from training.config import HybridTrainConfig, parse_recipe
    from training.market_files import MARKET_CODE, find_market_files, read_market_file
    from training.onboard import onboard_market, publish_onboarded
    from training.report import report, write_json
    from training.store_model import load_stored_hybrid

    with training_errors():
        recipe = parse_recipe(None, set_ or [])
        if not isinstance(recipe.train, HybridTrainConfig) or recipe.model:
            raise ValueError("onboarding keeps the version's model: only training settings")
        if not MARKET_CODE.match(market):
            raise ValueError(f"--market {market!r}: lower-case letters, digits and '-' only")
        path = data
        if data.is_dir():
            files = find_market_files(data)
            if market not in files:
                raise ValueError(f"{data} holds no file of market {market!r}")
            path = files[market]
        stored = load_stored_hybrid(store, version)
        log = read_market_file(path, market)
        onboarded = onboard_market(stored, log, cfg=recipe.train, max_epochs=max_epochs)
        print(report(onboarded.results))
        if json_path:
            write_json(onboarded.results, json_path)
        args = ["cmr", "onboard", "--store", str(store), "--market", market, "--data", str(data)]
        args += [a for s in set_ or [] for a in ("--set", s)]
        published = publish_onboarded(
            ModelStore(store), stored, onboarded, command=shlex.join(args),
            version=new_version, promote=promote,
        )  # fmt: skip
    state = "current" if promote else "not current; `cmr store promote` serves it"
    print(
        f"onboarded {market} in {onboarded.seconds:.0f} s; published {published.name} "
        f"in {store}, {state}"
    )
