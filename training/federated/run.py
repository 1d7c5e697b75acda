"""A whole federation in one process (Flower's apps over the in-process grid), into a
hybrid run folder that ``cmr export`` publishes like any other
(training/federated/run_folder.py).

The data folder is read here and split as ``cmr train`` splits it, then each market's
share goes to its own client (training/federated/partition.py): the simulation of
markets that each hold their own rows, evaluated on the very candidates central
training and the baselines get. The server's side sees what a deployed server sees:
the clients' replies and what every party holds (training/federated/shared.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context, RecordDict

from training.data import load_interactions
from training.evaluate import Result
from training.federated.apps import Outcome, best_round, client_app, server_app, server_settings
from training.federated.client import MarketClient, federated_model_config
from training.federated.config import FederatedConfig
from training.federated.grid import InProcessGrid
from training.federated.partition import market_split
from training.federated.run_folder import write_run
from training.federated.shared import SharedInfo
from training.federated.wire import Traffic
from training.runs import start_run
from training.semantics import read_item_text, text_embeddings
from training.split import make_split


def simulate(
    clients: Mapping[int, MarketClient], cfg: FederatedConfig, traffic: Traffic
) -> Outcome:
    """The ServerApp and one ClientApp per market, over the in-process grid."""
    outcome = Outcome()
    run_config = server_settings(cfg, next(iter(clients.values())).model.config)
    app = client_app(lambda context: clients[int(context.node_config["market"])])
    nodes = {
        m: (
            app,
            Context(
                run_id=1, node_id=m, node_config={"market": m}, state=RecordDict(), run_config={}
            ),
        )
        for m in clients
    }
    grid = InProcessGrid(nodes, traffic)
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    server_app(outcome)(grid, context)
    return outcome


def each_alone(clients: Mapping[int, MarketClient], cfg: FederatedConfig) -> Outcome:
    """The baseline: every market trains the same model for as long, on its own rows."""
    outcome = Outcome()
    began = time.perf_counter()
    curves = []
    for m, client in clients.items():
        curve: list[float] = []
        kept: list[dict[str, torch.Tensor]] = []  # its shared weights after each round
        for server_round in range(1, cfg.rounds + 1):
            new, _ = client.fit(None, server_round=server_round)
            kept.append({n: t.clone() for n, t in new.items()})  # copies: training goes on
            curve.append(client.validate(None, server_round=server_round))
        curves.append(curve)
        best = outcome.best_round[m] = best_round(curve)  # its own best round
        outcome.seconds["rounds"] = time.perf_counter() - began
        parts, rows, metrics = client.finish(kept[best - 1], adapt=cfg.adapt, best_round=best)
        outcome.parts[m], outcome.round_rows[m], outcome.metrics[m] = parts, rows, metrics
        outcome.catalogues[m] = client.catalogue()
    outcome.seconds["publish"] = time.perf_counter() - began - outcome.seconds["rounds"]
    outcome.valid_per_round = [float(v) for v in np.mean(curves, axis=0)]
    return outcome


def federate(
    data_dir: Path,
    run_dir: Path,
    *,
    model_settings: dict[str, Any],
    cfg: FederatedConfig,
    item_text: Path | None = None,
    command: str = "",
) -> list[Result]:
    """Train ``cfg``'s federation on ``data_dir``'s markets; write ``run_dir``.
    ``command`` (what started it) goes to commands.txt, for the model store."""
    start_run(cfg.train.threads, cfg.train.seed, cfg.train.device)
    began = time.perf_counter()
    data = load_interactions(data_dir)
    shared = SharedInfo.from_data(data)
    split = make_split(data, cfg.train.split_scheme, cfg.train.seed)
    model_cfg = federated_model_config(
        markets=shared.markets, items=shared.items, model_settings=model_settings
    )
    vectors = None
    if item_text is not None:
        vectors = text_embeddings(read_item_text(item_text), data.items, dim=cfg.walk_dim)
    clients = {
        m: MarketClient.build(
            market_split(split, m), m, model_settings=model_settings, cfg=cfg, text_vectors=vectors
        )
        for m in range(len(data.markets))
    }
    setup = time.perf_counter() - began
    traffic = Traffic()
    outcome = (
        each_alone(clients, cfg) if cfg.strategy == "alone" else simulate(clients, cfg, traffic)
    )
    return write_run(
        run_dir, outcome, cfg=cfg, model_cfg=model_cfg, shared=shared, traffic=traffic,
        data_dir=data_dir, command=command, began=began, setup_seconds=setup,
    )  # fmt: skip
