"""A whole federation in one process (Flower's apps over the in-process grid), into a
hybrid run folder that ``cmr export`` publishes like any other.

The data folder is read here and split as ``cmr train`` splits it, then each market's
share goes to its own client (training/federated/partition.py): the simulation of
markets that each hold their own rows, evaluated on the very candidates central
training and the baselines get. The run folder holds what a hybrid run holds
(config.json, items.json, closed_form.safetensors, pretrained/, markets/<code>/,
metrics/; the model before adaptation in metrics/no-adapt/) plus federation.json (the
settings), traffic.json (bytes per round and client) and summary.json (wall times).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context, RecordDict
from safetensors.torch import save_file

from training.data import load_interactions
from training.evaluate import Result
from training.federated.apps import Outcome, client_app, server_app
from training.federated.assemble import assemble
from training.federated.client import MarketClient, federated_model_config
from training.federated.config import FederatedConfig
from training.federated.grid import InProcessGrid
from training.federated.partition import market_split
from training.federated.wire import Traffic, shared_weights
from training.hybrid_train import CLOSED_FORM_FILE
from training.report import write_json
from training.runs import start_run, write_config
from training.semantics import read_item_text, text_embeddings
from training.split import make_split

log = logging.getLogger(__name__)


def simulate(
    clients: Mapping[int, MarketClient], cfg: FederatedConfig, traffic: Traffic
) -> Outcome:
    """The ServerApp and one ClientApp per market, over the in-process grid."""
    outcome = Outcome()
    model_cfg = next(iter(clients.values())).model.config
    run_config: dict[str, Any] = {
        "model-config": json.dumps(dataclasses.asdict(model_cfg)),
        "seed": cfg.train.seed,
        "rounds": cfg.rounds,
        "strategy": cfg.strategy,
        "proximal-mu": cfg.proximal_mu,
        "item-weighting": cfg.item_weighting,
        "adapt": cfg.adapt,
    }
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
        best: dict[str, torch.Tensor] = {}
        for server_round in range(1, cfg.rounds + 1):
            client.fit(None, server_round=server_round)
            curve.append(client.validate(None, server_round=server_round))
            if curve[-1] > max(curve[:-1], default=-math.inf):  # its own best round
                own = shared_weights(client.model).items()  # copies: training goes on
                best = {n: t.clone() for n, t in own}
                outcome.best_round[m] = server_round
        curves.append(curve)
        outcome.seconds["rounds"] = time.perf_counter() - began
        parts, rows, metrics = client.finish(
            best, adapt=cfg.adapt, best_round=outcome.best_round[m]
        )
        outcome.parts[m], outcome.round_rows[m], outcome.metrics[m] = parts, rows, metrics
    outcome.seconds["publish"] = time.perf_counter() - began - outcome.seconds["rounds"]
    outcome.valid_per_round = [float(v) for v in np.mean(curves, axis=0)]
    return outcome


def client_results(
    outcome: Outcome, *, markets: tuple[str, ...], cfg: FederatedConfig
) -> list[Result]:
    """The clients' reported metrics as results: after adaptation (the run's name) and
    after the rounds alone (``-no-adapt``)."""
    stages = {"adapted": cfg.name} if cfg.adapt else {}
    stages["rounds"] = cfg.name if not cfg.adapt else f"{cfg.name}-no-adapt"
    results = []
    for stage, name in stages.items():
        for protocol in cfg.train.eval_protocols:
            for split in cfg.train.eval_splits:
                prefix = f"{stage}/{protocol}/{split}/"
                per_market = {
                    markets[m]: {
                        k.removeprefix(prefix): v for k, v in got.items() if k.startswith(prefix)
                    }
                    for m, got in sorted(outcome.metrics.items())
                }
                results.append(
                    Result(
                        model=name,
                        protocol=protocol,
                        split=split,
                        seed=cfg.train.seed,
                        markets=per_market,
                    )
                )
    return results


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
    split = make_split(data, cfg.train.split_scheme, cfg.train.seed)
    model_cfg = federated_model_config(split, model_settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    if command:
        with (run_dir / "commands.txt").open("a") as f:
            f.write(command + "\n")
    write_config(
        run_dir,
        family="hybrid",
        name=cfg.name,
        data_dir=data_dir,
        data=data,
        model=model_cfg,
        train=cfg.train,
    )
    (run_dir / "federation.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
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
    results = client_results(outcome, markets=data.markets, cfg=cfg)
    for result in results:  # the run's model in metrics/, as a hybrid run has it
        folder = run_dir / "metrics" / ("" if result.model == cfg.name else "no-adapt")
        write_json([result], folder / f"{result.protocol}-{result.split}.json")
    if cfg.strategy != "alone":  # one model for every market: a hybrid run, exportable
        _save_model(run_dir, outcome, model_cfg=model_cfg, markets=data.markets)
    traffic.save(run_dir / "traffic.json")
    summary: dict[str, Any] = {
        "rounds": cfg.rounds,
        "strategy": cfg.strategy,
        "clients": len(clients),
        "bytes_total": traffic.total,
        "seconds": {"setup": setup, **outcome.seconds, "total": time.perf_counter() - began},
        "train_loss_per_round": outcome.train_loss,
        "valid_per_round": outcome.valid_per_round,  # mean over markets
        "best_round": {data.markets[m]: r for m, r in sorted(outcome.best_round.items())},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "federation %s: %.0f s, %d bytes over the wire",
        cfg.name,
        summary["seconds"]["total"],
        traffic.total,
    )
    return results


def _save_model(
    run_dir: Path, outcome: Outcome, *, model_cfg: Any, markets: tuple[str, ...]
) -> None:
    """The layout ``load_hybrid`` reads: the model after the rounds as pretrained/, each
    market's adapted rows as markets/<code>/."""
    rounds = {m: {**outcome.parts[m], **outcome.round_rows[m]} for m in outcome.parts}
    model = assemble(model_cfg, shared=outcome.shared, parts=rounds)
    save_file(model.closed_form.tensors(), run_dir / CLOSED_FORM_FILE)
    (run_dir / "pretrained").mkdir(exist_ok=True)
    learned = {n: p.detach().contiguous() for n, p in model.named_parameters()}
    save_file(learned, run_dir / "pretrained" / "best.safetensors")
    done = json.dumps({"done": True})
    (run_dir / "pretrained" / "stage.json").write_text(done)
    for m, parts in outcome.parts.items():
        folder = run_dir / "markets" / markets[m]
        folder.mkdir(parents=True, exist_ok=True)
        rows = {n: t.contiguous() for n, t in parts.items() if n in outcome.round_rows[m]}
        save_file(rows, folder / "best.safetensors")
        (folder / "stage.json").write_text(done)
