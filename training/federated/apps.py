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
  parts (rows and EASE^R block), its catalogue (items and interaction counts) and its
  metrics, before and after adaptation.

Every reply names its market (``CLIENT``), so replies can be taken in market order.
``run_federation`` is the server's work, for any grid: the in-process one
(training/federated/run.py) and Flower's own (training/federated/deployment.py).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
    UserConfig,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx

from model_store.catalogue import Catalogue
from training.federated.assemble import assemble
from training.federated.client import MarketClient
from training.federated.config import FederatedConfig
from training.federated.errors import FederationError
from training.federated.strategy import ITEM_COUNTS, RowFedAvg, RowFedProx
from training.federated.wire import (
    ARRAYS,
    CLIENT,
    CONFIG,
    EXAMPLES,
    METRICS,
    shared_weights,
)
from training.hybrid import HybridConfig

PUBLISH = "train.publish"
PARTS, ROUND_ROWS, CATALOGUE = "parts", "round-rows", "catalogue"
VALID, BEST_ROUND = "valid-metric", "best-round"
Keep = Callable[[MarketClient, Context], None]
Records = dict[str, ArrayRecord | MetricRecord | ConfigRecord]


def train_reply(client: MarketClient, msg: Message) -> Message:
    """One round on the client: the global shared weights in, its own out."""
    config = msg.content.config_records[CONFIG]
    weights = msg.content.array_records[ARRAYS].to_torch_state_dict()
    mu = float(config.get("proximal-mu", 0.0))  # type: ignore[arg-type]
    server_round = int(config["server-round"])  # type: ignore[arg-type]
    new, loss = client.fit(weights, server_round=server_round, mu=mu)
    if bool(config.get(ITEM_COUNTS, False)):
        new[ITEM_COUNTS] = client.item_counts()
    metrics = MetricRecord({EXAMPLES: client.n_examples, "train-loss": loss})
    content: Records = {ARRAYS: ArrayRecord(new), METRICS: metrics, CLIENT: _origin(client)}
    return Message(RecordDict(content), reply_to=msg)


def validate_reply(client: MarketClient, msg: Message) -> Message:
    """A round's check on the client: the new global weights in, its validation metric
    out (weight 1: the server's mean is over markets, as central training's is)."""
    weights = msg.content.array_records[ARRAYS].to_torch_state_dict()
    server_round = int(msg.content.config_records[CONFIG]["server-round"])  # type: ignore[arg-type]
    score = client.validate(weights, server_round=server_round)
    content: Records = {
        METRICS: MetricRecord({EXAMPLES: 1, VALID: score}), CLIENT: _origin(client)
    }  # fmt: skip
    return Message(RecordDict(content), reply_to=msg)


def publish_reply(client: MarketClient, msg: Message) -> Message:
    """The publish step on the client: the chosen round's weights in; its parts,
    catalogue and metrics out."""
    config = msg.content.config_records[CONFIG]
    weights = msg.content.array_records[ARRAYS].to_torch_state_dict()
    best = int(config[BEST_ROUND])  # type: ignore[arg-type]
    parts, round_rows, metrics = client.finish(
        weights, adapt=bool(config["adapt"]), best_round=best
    )
    catalogue = client.catalogue()
    content: Records = {
        PARTS: ArrayRecord(parts),
        ROUND_ROWS: ArrayRecord(round_rows),
        CATALOGUE: ArrayRecord(
            {
                "items": torch.from_numpy(catalogue.items),
                "counts": torch.from_numpy(catalogue.counts),
            }
        ),
        METRICS: MetricRecord({EXAMPLES: client.n_examples, **metrics}),
        CLIENT: _origin(client),
    }
    return Message(RecordDict(content), reply_to=msg)


def _origin(client: MarketClient) -> ConfigRecord:
    return ConfigRecord({"market": client.market})


def client_app(
    client_for: Callable[[Context], MarketClient], keep: Keep | None = None
) -> ClientApp:
    """``client_for``: the node's market client; ``keep`` (optional) saves what the
    client must find again at the next message, after each reply is made."""
    app = ClientApp()

    def answer(
        make: Callable[[MarketClient, Message], Message], msg: Message, context: Context
    ) -> Message:
        client = client_for(context)
        reply = make(client, msg)
        if keep is not None:
            keep(client, context)
        return reply

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return answer(train_reply, msg, context)

    @app.evaluate()
    def validate(msg: Message, context: Context) -> Message:
        return answer(validate_reply, msg, context)

    @app.train("publish")
    def publish(msg: Message, context: Context) -> Message:
        return publish_reply(client_for(context), msg)

    return app


@dataclass
class Outcome:
    """What the server ends with: the published model's pieces and the clients' metrics."""

    shared: dict[str, torch.Tensor] = field(default_factory=dict)
    parts: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    round_rows: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    catalogues: dict[int, Catalogue] = field(default_factory=dict)
    train_loss: list[float] = field(default_factory=list)
    valid_per_round: list[float] = field(default_factory=list)  # mean over markets
    best_round: dict[int, int] = field(default_factory=dict)  # per market
    seconds: dict[str, float] = field(default_factory=dict)


def server_app(outcome: Outcome) -> ServerApp:
    """The ServerApp of ``run_federation``; ``outcome`` is filled in."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, context.run_config, outcome)

    return app


def server_settings(cfg: FederatedConfig, model_cfg: HybridConfig) -> UserConfig:
    """``run_federation``'s settings from the federation's and the model's."""
    return {
        "model-config": json.dumps(dataclasses.asdict(model_cfg)),
        "seed": cfg.train.seed,
        "rounds": cfg.rounds,
        "strategy": cfg.strategy,
        "proximal-mu": cfg.proximal_mu,
        "item-weighting": cfg.item_weighting,
        "adapt": cfg.adapt,
    }


def best_round(curve: Sequence[float]) -> int:
    """The round (from 1) of ``curve``'s best validation metric, the earliest of ties."""
    return 1 + max(range(len(curve)), key=lambda r: (curve[r], -r))


def run_federation(grid: Grid, run: UserConfig, outcome: Outcome) -> None:
    """The rounds, then the publish step, over ``grid``'s nodes, into ``outcome``. Run
    settings (``run``): ``model-config`` (the HybridConfig as JSON), ``seed``,
    ``rounds``, ``strategy`` (fedavg or fedprox), ``proximal-mu``, ``item-weighting``,
    ``adapt``."""
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
    if len(outcome.valid_per_round) != rounds:
        raise FederationError(f"validation came back for {len(valid)} of {rounds} rounds")
    best = best_round(outcome.valid_per_round)
    outcome.shared = kept[best].to_torch_state_dict()
    began = time.perf_counter()
    publish = ConfigRecord({"adapt": run["adapt"], BEST_ROUND: best})
    messages = [
        Message(RecordDict({ARRAYS: kept[best], CONFIG: publish}), dst_node_id=node,
                message_type=PUBLISH)
        for node in grid.get_node_ids()
    ]  # fmt: skip
    for reply in grid.send_and_receive(messages):
        if reply.has_error():
            raise FederationError(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
        content = reply.content
        m = int(content.config_records[CLIENT]["market"])  # type: ignore[arg-type]
        outcome.parts[m] = content.array_records[PARTS].to_torch_state_dict()
        outcome.round_rows[m] = content.array_records[ROUND_ROWS].to_torch_state_dict()
        catalogue = content.array_records[CATALOGUE]
        outcome.catalogues[m] = Catalogue(
            catalogue["items"].numpy().astype(np.int64),
            catalogue["counts"].numpy().astype(np.int64),
        )
        metrics = content.metric_records[METRICS]
        outcome.metrics[m] = {k: float(v) for k, v in metrics.items()}  # type: ignore[arg-type]
        outcome.best_round[m] = best
    outcome.seconds["publish"] = time.perf_counter() - began
