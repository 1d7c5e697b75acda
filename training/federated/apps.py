"""The Flower apps: a ServerApp that runs the rounds with Flower's own strategies
(``FedAvg``, ``FedProx``) and then the publish step, and a ClientApp that answers
for one market (training/federated/client.py does the work).

Messages, in order:
- ``train`` (each round, Flower's strategy): the global shared weights down; the
  client's shared weights, its number of training users and its loss up.
- ``evaluate`` (each round, after the average): the new global weights down; the
  client's validation metric up. The server keeps the round whose mean over markets is
  best, as central training keeps its best epoch.
- ``train.publish`` (once): the best round's shared weights down; the client evaluates its
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
VALID = "valid-metric"


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

    @app.evaluate()
    def validate(msg: Message, context: Context) -> Message:
        client = client_for(context)
        weights = msg.content.array_records[ARRAYS].to_torch_state_dict()
        server_round = int(msg.content.config_records[CONFIG]["server-round"])  # type: ignore[arg-type]
        score = client.validate(weights, server_round=server_round)
        # Weight 1: the server's mean is over markets, as central training's is.
        metrics = MetricRecord({EXAMPLES: 1, VALID: score})
        return Message(RecordDict({METRICS: metrics}), reply_to=msg)

    @app.train("publish")
    def publish(msg: Message, context: Context) -> Message:
        client = client_for(context)
        config = msg.content.config_records[CONFIG]
        weights = msg.content.array_records[ARRAYS].to_torch_state_dict()
        best = int(config["best-round"])  # type: ignore[arg-type]
        parts, round_rows, metrics = client.finish(
            weights, adapt=bool(config["adapt"]), best_round=best
        )
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
    valid_per_round: list[float] = field(default_factory=list)  # mean over markets
    best_round: dict[int, int] = field(default_factory=dict)  # per market
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
        # Every market trains and validates in every round.
        strategy: FedAvg
        if run["strategy"] == "fedprox":
            prox = RowFedProx if rows else FedProx
            strategy = prox(
                proximal_mu=mu, min_available_nodes=nodes, min_train_nodes=nodes,
                min_evaluate_nodes=nodes,
            )  # fmt: skip
        else:
            strategy = (RowFedAvg if rows else FedAvg)(
                min_available_nodes=nodes, min_train_nodes=nodes, min_evaluate_nodes=nodes
            )
        rounds = int(run["rounds"])
        kept: dict[int, ArrayRecord] = {}  # the global weights after each round

        def keep(server_round: int, arrays: ArrayRecord) -> None:
            kept[server_round] = arrays

        began = time.perf_counter()
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(start),
            num_rounds=rounds,
            train_config=ConfigRecord({ITEM_COUNTS: rows}),
            evaluate_fn=keep,
        )
        outcome.seconds["rounds"] = time.perf_counter() - began
        losses = result.train_metrics_clientapp.values()
        outcome.train_loss = [float(m["train-loss"]) for m in losses]  # type: ignore[arg-type]
        valid = result.evaluate_metrics_clientapp
        outcome.valid_per_round = [float(valid[r][VALID]) for r in sorted(valid)]  # type: ignore[arg-type]
        best = 1 + max(range(rounds), key=lambda r: (outcome.valid_per_round[r], -r))
        outcome.shared = kept[best].to_torch_state_dict()
        began = time.perf_counter()
        publish = ConfigRecord({"adapt": run["adapt"], "best-round": best})
        messages = [
            Message(
                RecordDict({ARRAYS: kept[best], CONFIG: publish}),
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
            outcome.best_round[m] = best
        outcome.seconds["publish"] = time.perf_counter() - began

    return app
