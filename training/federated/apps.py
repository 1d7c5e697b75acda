"""The Flower apps: a ServerApp that runs the rounds with Flower's own strategies
(``FedAvg``, ``FedProx``) and then the publish step, and a ClientApp that answers
for one market (training/federated/client.py does the work).

Messages, in order:
- ``train`` (each round, Flower's strategy): the global shared weights down; the
  client's shared weights, its number of training users and its loss up.
- ``train.publish`` (once): the final shared weights down; the client evaluates its
  market, adapts its own rows (when asked), evaluates again, and sends up its own
  parts (rows and EASE^R block) and its metrics, before and after adaptation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx

from training.federated.assemble import assemble
from training.federated.client import MarketClient
from training.federated.strategy import ITEM_COUNTS, RowFedAvg, RowFedProx
from training.federated.wire import (
    ARRAYS,
    CONFIG,
    EXAMPLES,
    METRICS,
    shared_weights,
)
from training.hybrid import HybridConfig

PUBLISH = "train.publish"
PARTS, ROUND_ROWS = "parts", "round-rows"


def client_app(client_for: Callable[[Context], MarketClient]) -> ClientApp:
    """``client_for``: the node's market client (built once per node and kept)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        client = client_for(context)
        config = msg.content.config_records[CONFIG]
        weights = msg.content.array_records[ARRAYS].to_torch_state_dict()
        mu = float(config.get("proximal-mu", 0.0))  # type: ignore[arg-type]
        server_round = int(config["server-round"])  # type: ignore[arg-type]
        new, loss = client.fit(weights, server_round=server_round, mu=mu)
        if bool(config.get(ITEM_COUNTS, False)):
            new[ITEM_COUNTS] = client.item_counts()
        metrics = MetricRecord({EXAMPLES: client.n_examples, "train-loss": loss})
        return Message(RecordDict({ARRAYS: ArrayRecord(new), METRICS: metrics}), reply_to=msg)

    @app.train("publish")
    def publish(msg: Message, context: Context) -> Message:
        client = client_for(context)
        config = msg.content.config_records[CONFIG]
        weights = msg.content.array_records[ARRAYS].to_torch_state_dict()
        parts, round_rows, metrics = client.finish(weights, adapt=bool(config["adapt"]))
        record = MetricRecord({"market": client.market, EXAMPLES: client.n_examples, **metrics})
        content = RecordDict(
            {PARTS: ArrayRecord(parts), ROUND_ROWS: ArrayRecord(round_rows), METRICS: record}
        )
        return Message(content, reply_to=msg)

    return app


@dataclass
class Outcome:
    """What the server ends with: the published model's pieces and the clients' metrics."""

    shared: dict[str, torch.Tensor] = field(default_factory=dict)
    parts: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    round_rows: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    train_loss: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def server_app(outcome: Outcome) -> ServerApp:
    """Run settings (``context.run_config``): ``model-config`` (the HybridConfig as
    JSON), ``seed``, ``rounds``, ``strategy`` (fedavg or fedprox), ``proximal-mu``,
    ``item-weighting``, ``adapt``. ``outcome`` is filled in."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run = context.run_config
        config = HybridConfig(**json.loads(str(run["model-config"])))
        torch.manual_seed(int(run["seed"]))
        start = shared_weights(assemble(config, shared={}, parts={}))
        nodes = len(list(grid.get_node_ids()))
        mu = float(run["proximal-mu"])
        rows = bool(run["item-weighting"])
        # Every market in every round; evaluation happens once, at the publish step.
        strategy: FedAvg
        if run["strategy"] == "fedprox":
            prox = RowFedProx if rows else FedProx
            strategy = prox(
                proximal_mu=mu, fraction_evaluate=0.0, min_available_nodes=nodes,
                min_train_nodes=nodes,
            )  # fmt: skip
        else:
            plain = RowFedAvg if rows else FedAvg
            strategy = plain(
                fraction_evaluate=0.0, min_available_nodes=nodes, min_train_nodes=nodes
            )
        rounds = int(run["rounds"])
        began = time.perf_counter()
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(start),
            num_rounds=rounds,
            train_config=ConfigRecord({ITEM_COUNTS: rows}),
        )
        outcome.seconds["rounds"] = time.perf_counter() - began
        losses = result.train_metrics_clientapp.values()
        outcome.train_loss = [float(m["train-loss"]) for m in losses]  # type: ignore[arg-type]
        outcome.shared = result.arrays.to_torch_state_dict()
        began = time.perf_counter()
        messages = [
            Message(
                RecordDict({ARRAYS: result.arrays, CONFIG: ConfigRecord({"adapt": run["adapt"]})}),
                dst_node_id=node,
                message_type=PUBLISH,
            )
            for node in grid.get_node_ids()
        ]
        for reply in grid.send_and_receive(messages):
            metrics = dict(reply.content.metric_records[METRICS])
            m = int(metrics.pop("market"))  # type: ignore[arg-type]
            outcome.parts[m] = reply.content.array_records[PARTS].to_torch_state_dict()
            outcome.round_rows[m] = reply.content.array_records[ROUND_ROWS].to_torch_state_dict()
            outcome.metrics[m] = {k: float(v) for k, v in metrics.items()}  # type: ignore[arg-type]
        outcome.seconds["publish"] = time.perf_counter() - began

    return app
