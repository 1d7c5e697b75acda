"""The publish step: one hybrid, the one-graph model the service serves, from the
server's final shared weights and each market's own parts (its parameter rows and
EASE^R block, training/federated/client.py ``parts``). These are model parameters,
which each market sends once, at the end; the graph cannot serve a market without
them. No shared EASE^R block: it needs every market's users in one place.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from training.federated.wire import load_weights
from training.hybrid import ClosedForm, HybridConfig, HybridRecommender
from training.hybrid_stage import MARKET_ROWS


def assemble(
    config: HybridConfig,
    *,
    shared: Mapping[str, torch.Tensor],
    parts: Mapping[int, Mapping[str, torch.Tensor]],
) -> HybridRecommender:
    """``parts``: market index -> its rows and block; a market without parts keeps the
    shared row (zeros: the shared parameters alone) and no block."""
    n_items, n_markets = config.n_items, config.n_markets
    market_index = torch.full((n_markets + 1, n_items), -1, dtype=torch.int64)
    sizes = torch.zeros(n_markets + 1, dtype=torch.int64)
    flats = []
    dtype = torch.float16
    for m in range(n_markets):
        if m not in parts:
            continue
        items, weights = parts[m]["block_items"], parts[m]["block_weights"]
        market_index[m, items] = torch.arange(len(items))
        sizes[m] = len(items)
        flats.append(weights)
        dtype = weights.dtype
    offsets = torch.zeros(n_markets + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(sizes[:-1] ** 2, 0)
    closed = ClosedForm(
        global_index=torch.full((n_items,), -1, dtype=torch.int64),
        global_weights=torch.zeros(1, dtype=dtype),
        market_index=market_index,
        market_offset=offsets,
        market_size=sizes,
        market_weights=torch.cat([*flats, torch.zeros(1, dtype=dtype)]),
        global_size=0,
    )
    model = HybridRecommender(config, closed)
    load_weights(model, shared)
    with torch.no_grad():
        for m, own in parts.items():
            for name in MARKET_ROWS:
                getattr(model, name)[m] = own[name]
    return model.eval()
