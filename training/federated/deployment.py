"""The federation on Flower's deployment engine: ``server`` (a ServerApp) and ``client``
(a ClientApp) for the Flower App folder training/federated/app/, which ``flwr run``
sends to a SuperLink with one SuperNode per market (training/federated/loopback.py
starts them all on one machine).

A SuperNode's node config names its market and the only files its client reads:

    market = "de"                  its market code
    data = "/markets/de/de.tsv"    its own interactions, no other market's
    shared = "/markets/de/shared.json"   what every party holds (training/federated/shared.py)

The run config (the App folder's pyproject.toml declares every key and its default):
``federation`` (the FederatedConfig as JSON, training settings included), ``model``
(the hybrid's settings as JSON, as ``--set`` gives them), ``shared`` (the server's
copy of shared.json), ``run-dir`` (where the server writes the run folder),
``command`` (for commands.txt), ``item-text`` (item metadata for semantics=text:
catalogue information, the same file for everyone) and ``node-wait`` (seconds the
server waits for every market's SuperNode).

Flower 1.32 starts a new ``flwr-clientapp`` process for every message (it pulls one
task, pushes one reply and exits: flwr/supernode/runtime/run_clientapp.py), so a client
is rebuilt from its own file for each message, and finds its own rows (the parameters
the server does not replace, and those of each round) again in ``context.state``, which
its SuperNode keeps.
The rebuilt client is the one the simulation keeps: building it is seeded.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, UserConfig
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from training.federated.apps import Outcome, client_app, run_federation, server_settings
from training.federated.client import MarketClient, federated_model_config
from training.federated.config import FederatedConfig, from_json
from training.federated.errors import FederationError
from training.federated.grid import MeteredGrid
from training.federated.partition import own_split
from training.federated.run_folder import write_run
from training.federated.shared import SharedInfo
from training.federated.wire import Traffic
from training.runs import start_run
from training.semantics import FloatArray, read_item_text, text_embeddings

log = logging.getLogger(__name__)

# context.state: the client's parameters the server does not replace, and its rows of
# each validated round (the publish step goes back to the best round's)
OWN_STATE = "own-state"
NODE_POLL_SECONDS = 0.5


def run_settings(run: UserConfig) -> tuple[FederatedConfig, dict[str, Any]]:
    """The federation's settings and the hybrid's, from the run config."""
    model: dict[str, Any] = json.loads(str(run["model"]))
    return from_json(str(run["federation"])), model


def _text_vectors(run: UserConfig, cfg: FederatedConfig, shared: SharedInfo) -> FloatArray | None:
    path = str(run["item-text"])
    if not path:
        return None
    return text_embeddings(read_item_text(Path(path)), shared.items, dim=cfg.walk_dim)


def node_client(context: Context) -> MarketClient:
    """This node's market client, from its own file and the shared file alone, with its
    own rows as the last message left them."""
    node = context.node_config
    cfg, model_settings = run_settings(context.run_config)
    start_run(cfg.train.threads, cfg.train.seed, cfg.train.device)
    shared = SharedInfo.load(Path(str(node["shared"])))
    code = str(node["market"])
    train = cfg.train
    split = own_split(
        Path(str(node["data"])), code, shared, scheme=train.split_scheme, seed=train.seed
    )
    client = MarketClient.build(
        split, shared.market(code), model_settings=model_settings, cfg=cfg,
        text_vectors=_text_vectors(context.run_config, cfg, shared),
    )  # fmt: skip
    if OWN_STATE in context.state:
        client.load_own_state(context.state.array_records[OWN_STATE].to_torch_state_dict())
    return client


def keep_state(client: MarketClient, context: Context) -> None:
    context.state[OWN_STATE] = ArrayRecord(client.own_state())


client: ClientApp = client_app(node_client, keep_state)
server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    """Wait for every market's node, run the federation, write the run folder."""
    began = time.perf_counter()
    run = context.run_config
    cfg, model_settings = run_settings(run)
    if cfg.strategy == "alone":
        raise FederationError("strategy alone trains no shared model: run it in simulation")
    shared = SharedInfo.load(Path(str(run["shared"])))
    model_cfg = federated_model_config(
        markets=shared.markets, items=shared.items, model_settings=model_settings
    )
    wait_for_nodes(grid, len(shared.markets), timeout=float(run["node-wait"]))
    setup = time.perf_counter() - began
    outcome, traffic = Outcome(), Traffic()
    run_federation(MeteredGrid(grid, traffic), server_settings(cfg, model_cfg), outcome)
    write_run(
        Path(str(run["run-dir"])), outcome, cfg=cfg, model_cfg=model_cfg, shared=shared,
        traffic=traffic, data_dir=None, command=str(run["command"]), began=began,
        setup_seconds=setup,
    )  # fmt: skip


def wait_for_nodes(grid: Grid, n: int, *, timeout: float) -> None:
    """Until ``n`` SuperNodes are connected: the strategies train on the nodes there are."""
    deadline = time.monotonic() + timeout
    while (found := len(list(grid.get_node_ids()))) < n:
        if time.monotonic() > deadline:
            raise FederationError(f"{found} of {n} markets' SuperNodes connected in {timeout} s")
        time.sleep(NODE_POLL_SECONDS)
    if found > n:
        raise FederationError(f"{found} SuperNodes connected for {n} markets")
    log.info("all %d markets' SuperNodes connected", n)
