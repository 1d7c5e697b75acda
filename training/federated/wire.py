"""What crosses the wire between a market and the server, and how much of it.

During the rounds a client sends only the hybrid's shared weights (item embeddings,
self-attention layers, shared mix and item bias) and its number of training users;
its own parameter rows stay with it until the end, and its interactions never leave.
At the end (the publish step) each client sends its own parts: its parameter rows
and its EASE^R block (item-item weights over the items its users bought, and which
items those are): model parameters, fitted from its data, not the data.

``Traffic`` counts every message as Flower serialises it for the wire (protobuf
bytes: records, metadata and all) and keeps a summary of what each reply held, so
a test can assert what the server received.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Message

from training.hybrid import HybridRecommender
from training.hybrid_stage import MARKET_ROWS

ARRAYS = "arrays"  # the record keys Flower's strategies use
CONFIG = "config"
METRICS = "metrics"
EXAMPLES = "num-examples"  # FedAvg's weight: a client's training users
CLIENT = "client"  # a reply's ConfigRecord: the market index of the client that sent it


def shared_names(model: HybridRecommender) -> list[str]:
    """Parameters every market shares: what the server aggregates."""
    return [n for n, _ in model.named_parameters() if n not in MARKET_ROWS]


def shared_weights(model: HybridRecommender) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().cpu().contiguous() for n in shared_names(model)}


@torch.no_grad()
def load_weights(model: HybridRecommender, weights: Mapping[str, torch.Tensor]) -> None:
    for name, value in weights.items():
        target = model.get_parameter(name)
        target.copy_(value.to(target.device))


@dataclass(kw_only=True)
class Transfer:
    """One message each way between the server and one client."""

    stage: str  # the message type: train, query.publish, ...
    round: int  # the server round (0 outside the rounds)
    node: int
    sent: int  # bytes, server -> client
    received: int  # bytes, client -> server
    seconds: float  # from sending to the reply, the client's work included
    arrays: dict[str, tuple[str, list[int]]]  # what the reply held: name -> (dtype, shape)
    config: dict[str, Any]
    metrics: dict[str, float]


@dataclass
class Traffic:
    transfers: list[Transfer] = field(default_factory=list)

    def record(
        self, sent: Message, reply: Message, *, sent_bytes: int, reply_bytes: int, seconds: float
    ) -> None:
        content = reply.content
        arrays = {
            f"{key}/{name}": (array.dtype, list(array.shape))
            for key, record in content.array_records.items()
            for name, array in record.items()
        }
        config = {
            f"{key}/{name}": value
            for key, record in content.config_records.items()
            for name, value in record.items()
        }
        metrics = {
            f"{key}/{name}": float(value)  # type: ignore[arg-type]
            for key, record in content.metric_records.items()
            for name, value in record.items()
        }
        sent_config = sent.content.config_records.get(CONFIG, ConfigRecord())
        self.transfers.append(
            Transfer(
                stage=sent.metadata.message_type,
                round=int(sent_config.get("server-round", 0)),  # type: ignore[arg-type]
                node=sent.metadata.dst_node_id,
                sent=sent_bytes,
                received=reply_bytes,
                seconds=seconds,
                arrays=arrays,
                config=config,
                metrics=metrics,
            )
        )

    def per_round(self) -> list[dict[str, Any]]:
        """Bytes per round and stage, per client and in total."""
        keys = sorted({(t.round, t.stage) for t in self.transfers})
        rows = []
        for round_, stage in keys:
            these = [t for t in self.transfers if (t.round, t.stage) == (round_, stage)]
            rows.append(
                {
                    "round": round_,
                    "stage": stage,
                    "clients": len(these),
                    "sent_per_client": float(np.mean([t.sent for t in these])),
                    "received_per_client": float(np.mean([t.received for t in these])),
                    "total": sum(t.sent + t.received for t in these),
                    "seconds": sum(t.seconds for t in these),
                }
            )
        return rows

    @property
    def total(self) -> int:
        return sum(t.sent + t.received for t in self.transfers)

    def save(self, path: Path) -> None:
        payload = {
            "total_bytes": self.total,
            "per_round": self.per_round(),
            "transfers": [vars(t) for t in self.transfers],
        }
        path.write_text(json.dumps(payload, indent=1) + "\n")
