"""Flower's FedAvg and FedProx, with item rows averaged by who bought the item.

Plain FedAvg weighs a client's whole array by its number of training users. For
the rows of an item table (item embeddings, shared item bias) that dilutes every
item's update by the share of clients that had nothing to say about it: a camera
bought only in one market moves a third as far with three markets as it would alone.
Here row i of an item table is averaged with weights proportional to each client's
training interactions with item i (``ITEM_COUNTS``, sent with its weights: the item
popularity the published catalogues hold anyway); other arrays, and rows nobody
bought, keep FedAvg's weights. ``ITEM_COUNTS`` itself is dropped from the result.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg, FedProx

from training.federated.wire import EXAMPLES

ITEM_COUNTS = "item-counts"


def row_weighted_average(
    arrays: list[dict[str, np.ndarray]], examples: list[float]
) -> dict[str, np.ndarray]:
    """Each client's ``ITEM_COUNTS`` (V,) weighs the rows of its (V, ...) arrays."""
    counts = np.stack([a[ITEM_COUNTS] for a in arrays])  # (clients, V)
    share = np.asarray(examples, np.float64) / sum(examples)  # (clients,)
    bought = counts.sum(0)  # (V,)
    rows = np.where(bought > 0, counts / np.maximum(bought, 1e-12), share[:, None])
    out = {}
    for name in arrays[0]:
        if name == ITEM_COUNTS:
            continue
        stacked = np.stack([a[name] for a in arrays]).astype(np.float64)  # (clients, ...)
        by_row = stacked.ndim > 1 and stacked.shape[1] == counts.shape[1]
        weights = rows if by_row else share[:, None]
        weights = weights.reshape(weights.shape + (1,) * (stacked.ndim - weights.ndim))
        out[name] = (stacked * weights).sum(0).astype(arrays[0][name].dtype)
    return out


class _RowWeighted(FedAvg):
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [m.content for m in valid]
        arrays = [
            {k: v.numpy() for k, v in c.array_records[self.arrayrecord_key].items()}
            for c in contents
        ]
        examples = [float(next(iter(c.metric_records.values()))[EXAMPLES]) for c in contents]  # type: ignore[arg-type]
        averaged = row_weighted_average(arrays, examples)
        record = ArrayRecord({k: Array(v) for k, v in averaged.items()})
        return record, self.train_metrics_aggr_fn(contents, self.weighted_by_key)


class RowFedAvg(_RowWeighted):
    """FedAvg, item rows weighted by the clients' item counts."""


class RowFedProx(_RowWeighted, FedProx):
    """FedProx (clients add mu/2 ||w - w_global||^2), item rows weighted likewise."""
