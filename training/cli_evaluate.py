"""``cmr evaluate``: baselines and comparators ranked on identical candidates.

Registered on the training app by training/cli.py. Heavy imports stay inside the
command, so ``cmr --help`` loads no torch.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from training.cli_options import DataDir, training_errors

if TYPE_CHECKING:
    from training.forec import NeuMFTraining
    from training.protocols import Protocol


# Choices of repeatable options; tests check them against BASELINES and PROTOCOLS.
class Model(StrEnum):
    popularity = "popularity"
    global_popularity = "global-popularity"
    ease = "ease"
    ease_per_market = "ease-per-market"
    nmf = "nmf"
    forec = "forec"
    m3rec = "m3rec"


class ProtocolName(StrEnum):
    paper = "paper"
    market = "market"
    full = "full"


def neural_training(epochs: int | None) -> NeuMFTraining | None:
    """nmf's and forec's training settings with ``--epochs`` applied, if given."""
    if epochs is None:
        return None  # and torch stays unloaded for the baselines
    from training.forec import NeuMFTraining

    return NeuMFTraining(epochs=(epochs,), finetune_epochs=(max(1, epochs // 2),))


def evaluate_command(
    *,
    data: DataDir,
    model: Annotated[
        list[Model] | None,
        typer.Option(help="Model to evaluate; repeat for several. [default: popularity]"),
    ] = None,
    protocol: Annotated[
        list[ProtocolName] | None,
        typer.Option(
            help="paper: 99 negatives from all items; market: from the market's items; "
            "full: the whole market catalogue. Repeat for several. [default: market]"
        ),
    ] = None,
    split: Annotated[
        Literal["test", "valid"], typer.Option(help="Held-out item to rank.")
    ] = "test",
    split_scheme: Annotated[
        Literal["random", "temporal"],
        typer.Option(help="Leave-one-out: random (the paper's) or temporal."),
    ] = "random",
    seed: Annotated[int, typer.Option(help="Seed of the split and the negatives.")] = 0,
    lambdas: Annotated[
        str | None,
        typer.Option(
            help="EASE^R lambdas to choose from on validation, comma-separated. "
            "[default: 2,5,10,25,...,3200]"
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Training epochs of nmf and of forec's pre-training (forec fine-tunes "
            "half as many), fixed. [default: chosen on validation among 10, 20, 40; "
            "fine-tuning among 5, 10, 20]",
        ),
    ] = None,
    duplicates: Annotated[
        Literal["first", "last"],
        typer.Option(help="Which row of a repeated (user, item) pair to keep."),
    ] = "first",
    k_core: Annotated[
        int | None, typer.Option(min=1, help="Drop users and items with fewer rows, per market.")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write results: an object, or a list if several.")
    ] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the tables as markdown.")] = None,
    candidates: Annotated[
        Path | None,
        typer.Option(
            help="Rank among these candidates instead: tab-separated <user id>, <item id,...> "
            "rows; needs --held-out. Ids are the market files' raw ids; a user id is looked "
            "up in every market and must name one user (or give --market). Rows with unknown "
            "users or items are skipped and counted. --protocol (one) then names the "
            "validation candidates that choose EASE^R's lambda."
        ),
    ] = None,
    held_out: Annotated[
        Path | None,
        typer.Option(help="With --candidates: tab-separated <user id>, <item id> to rank."),
    ] = None,
    market: Annotated[
        str | None,
        typer.Option(help="With --candidates: look user ids up in this market only."),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            help="Also evaluate this model store's exported model (row store:<version>) on "
            "the same candidates; rows with an item the store does not know are skipped "
            "and counted, for every model."
        ),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(help="With --store: the version to evaluate. [default: the current one]"),
    ] = None,
) -> None:
    """Rank each user's held-out item among candidates; print per-market metrics.

    EASE^R's lambda is chosen on the validation split, per protocol.
    """
    from training.baselines import LAMBDA_GRID, evaluate_baselines
    from training.candidate_file import describe_skipped
    from training.data import load_interactions
    from training.evaluate import evaluate_sets
    from training.report import report, write_json
    from training.split import make_split
    from training.targets import evaluation_targets

    with training_errors():
        if version is not None and store is None:
            raise ValueError("--version only applies with --store")
        protocols: list[Protocol] = [p.value for p in protocol or [ProtocolName.market]]
        grid = tuple(float(x) for x in lambdas.split(",")) if lambdas else LAMBDA_GRID
        interactions = load_interactions(data, duplicates=duplicates, k_core=k_core)
        data_split = make_split(interactions, split_scheme, seed)
        exported = None
        if store is not None:
            from training.store_scorer import StoreScorer

            exported = StoreScorer.open(
                store, version, items=interactions.items, markets=interactions.markets
            )
            if note := exported.split_note(split_scheme, seed):
                print(note)
        targets, skips = evaluation_targets(
            data_split,
            protocols=protocols,
            split_name=split,
            seed=seed,
            candidates=candidates,
            held_out=held_out,
            market=market,
            store=exported,
        )
        for name, skipped in zip(protocols, skips, strict=True):
            if skipped:
                print(("" if candidates else f"{name}: ") + describe_skipped(skipped))
        results = evaluate_baselines(
            data_split,
            [m.value for m in model or [Model.popularity]],
            protocols,
            split_name=split,
            seed=seed,
            grid=grid,
            targets=targets,
            neural=neural_training(epochs),
        )
        if exported is not None and targets is not None:
            results += evaluate_sets(exported, targets)
    print(report(results))
    if json_path:
        write_json(results, json_path)
    if markdown:
        markdown.write_text(report(results, markdown=True))
