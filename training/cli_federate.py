"""``cmr federate``: the hybrid trained by markets that keep their interactions to
themselves (training/federated/), simulated in one process through Flower's apps, or
(``--deploy loopback``) as real Flower processes on this machine."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from training.cli_options import DataDir, training_errors


def federate_command(
    *,
    data: DataDir,
    out: Annotated[Path, typer.Option(help="Run folder (a hybrid run: `cmr export` takes it).")],
    rounds: Annotated[
        int, typer.Option(min=1, help="Federated rounds; the best on validation is published.")
    ] = 10,
    local_epochs: Annotated[int, typer.Option(min=1, help="Client epochs per round.")] = 1,
    strategy: Annotated[
        str,
        typer.Option(help="fedavg, fedprox, or alone (each market trains alone: the baseline)."),
    ] = "fedavg",
    mu: Annotated[float, typer.Option(help="FedProx's proximal weight.")] = 0.01,
    item_weighting: Annotated[
        bool, typer.Option(help="Average item rows by the clients' item counts.")
    ] = True,
    semantics: Annotated[
        str, typer.Option(help="S2CE's soft targets: cooccurrence, text, or none (plain CE).")
    ] = "cooccurrence",
    item_text: Annotated[
        Path | None,
        typer.Option(help="Item metadata, JSON lines (id, title, categories): semantics=text."),
    ] = None,
    alpha: Annotated[float, typer.Option(help="S2CE: probability given to neighbours.")] = 0.2,
    adapt: Annotated[
        bool, typer.Option(help="Fine-tune each market's own rows after the rounds.")
    ] = True,
    deploy: Annotated[
        str,
        typer.Option(
            help="simulation (one process), or loopback: a SuperLink, one SuperNode per "
            "market and `flwr run`, on 127.0.0.1 (docs/federated.md)."
        ),
    ] = "simulation",
    base_port: Annotated[
        int,
        typer.Option(
            min=1024, help="loopback: the SuperLink's first port; it and the next 2 + markets."
        ),
    ] = 19100,
    work: Annotated[
        Path | None,
        typer.Option(
            help="loopback: each market's folder, the processes' logs (default: OUT-loopback)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Hybrid settings, e.g. --set d_model=64 --set train.lr=1e-3. Repeatable."
        ),
    ] = None,
) -> None:
    """Federated training: each market is a Flower client holding only its own rows; the
    server averages the shared weights (FedAvg or FedProx), each market keeps its own
    rows and EASE^R block, adapts them at the end, and sends them for the published
    model. Writes a hybrid run folder plus traffic.json (bytes per round and client)."""
    from training.config import HybridTrainConfig, parse_recipe
    from training.federated.config import FederatedConfig
    from training.federated.errors import FederationError
    from training.federated.run import federate
    from training.report import report

    with training_errors(FederationError):
        recipe = parse_recipe(None, set_ or [])
        if strategy not in ("fedavg", "fedprox", "alone"):
            raise ValueError(f"--strategy {strategy!r}: fedavg, fedprox or alone")
        if deploy not in ("simulation", "loopback"):
            raise ValueError(f"--deploy {deploy!r}: simulation or loopback")
        if semantics not in ("cooccurrence", "text", "none"):
            raise ValueError(f"--semantics {semantics!r}: cooccurrence, text or none")
        if not isinstance(recipe.train, HybridTrainConfig):
            raise ValueError("federated training trains the hybrid family")
        cfg = FederatedConfig(
            rounds=rounds, local_epochs=local_epochs, strategy=strategy,  # type: ignore[arg-type]
            proximal_mu=mu, item_weighting=item_weighting, semantics=semantics,  # type: ignore[arg-type]
            s2ce_alpha=alpha, adapt=adapt, train=recipe.train,
        )  # fmt: skip
        command = shlex.join(["cmr", *sys.argv[1:]])
        if deploy == "loopback":
            from training.federated.loopback import federate_loopback

            results = federate_loopback(
                data, out, work=work or out.with_name(f"{out.name}-loopback"),
                model_settings=recipe.model, cfg=cfg, base_port=base_port,
                item_text=item_text, command=command,
            )  # fmt: skip
        else:
            results = federate(
                data, out, model_settings=recipe.model, cfg=cfg, item_text=item_text,
                command=command,
            )  # fmt: skip
    print(report([r for r in results if r.split == "test"]))
