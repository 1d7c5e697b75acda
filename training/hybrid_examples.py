"""What the hybrid learns from: its users' item sets, the items hidden each epoch, the
batches, the market catalogues, and the losses over the hidden items
(training/hybrid_epoch.py's ``batch_loss`` puts them together for one batch).

Each epoch hides a random ``mask_rate`` of each user's training items; the model
predicts the hidden ones from the rest, with a softmax over the user's market
catalogue (plain, or S2CE's soft targets over semantic neighbours: training/semantics.py)
or a binary cross-entropy against sampled items. A batch holds users of one fold and
one market, so it is scored by one out-of-fold closed form.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model_store.vocab import PAD
from training.protocols import market_catalogues
from training.split import Split


@dataclass(frozen=True, kw_only=True)
class UserSets:
    """Every training user with at least two items: its most recent items, market, fold."""

    users: torch.Tensor  # (U',)
    items: torch.Tensor  # (U', L) oldest first, right-padded
    market: torch.Tensor  # (U',)
    fold: torch.Tensor  # (U',)

    @classmethod
    def build(cls, split: Split, *, fold: np.ndarray, max_history: int) -> UserSets:
        lengths = np.diff(split.train_ptr)
        users = np.flatnonzero(lengths >= 2)
        items = np.zeros((len(users), max_history), np.int64)
        for row, u in enumerate(users):
            h = split.history(int(u))[-max_history:]
            items[row, : len(h)] = h
        return cls(
            users=torch.from_numpy(users),
            items=torch.from_numpy(items),
            market=torch.from_numpy(split.data.user_market[users]),
            fold=torch.from_numpy(fold[users]),
        )


def hide(rng: torch.Generator, items: torch.Tensor, rate: float) -> torch.Tensor:
    """(B, L) -> (B, L) bool: the items to hide, about ``rate`` of each row's items,
    at least one, never all of them."""
    real = items != PAD
    hidden = (torch.rand(items.shape, generator=rng) < rate) & real
    # One random real item per row, to hide where nothing is and to keep where all is.
    pick = (torch.rand(items.shape, generator=rng) * real).argmax(1, keepdim=True)
    one = torch.zeros_like(real).scatter_(1, pick, True)
    hidden |= one & ~hidden.any(1, keepdim=True)
    hidden &= ~(one & (hidden == real).all(1, keepdim=True))
    return hidden


def user_batches(
    rng: np.random.Generator, sets: UserSets, rows: np.ndarray, *, batch_size: int
) -> Iterator[np.ndarray]:
    """Users of ``rows`` in batches that share a fold and a market, in random order."""
    keys = sets.fold.numpy()[rows] * 1000 + sets.market.numpy()[rows]
    chunks = []
    for key in np.unique(keys):
        group = rng.permutation(rows[keys == key])
        chunks += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    for i in rng.permutation(len(chunks)):
        yield chunks[i]


def masked_softmax_loss(
    logits: torch.Tensor,
    *,
    allowed: torch.Tensor,
    items: torch.Tensor,
    hidden: torch.Tensor,
    count: int | None = None,
) -> torch.Tensor:
    """-log softmax over the ``allowed`` (B, V) items, summed over hidden items and
    divided by ``count`` (default: their number; the whole batch's when these rows are
    one process's share of it, so the shares' losses add up to the batch's)."""
    log_p = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)
    picked = log_p.gather(1, items).masked_fill(~hidden, 0.0)
    return -picked.sum() / (hidden.sum() if count is None else count)


def sample_negatives(rng: torch.Generator, allowed: torch.Tensor, n: int) -> torch.Tensor:
    """(B, V) bool -> (B, n): random allowed items of each row, with replacement."""
    return torch.multinomial(allowed.float(), n, True, generator=rng)


def sampled_bce_loss(
    logits: torch.Tensor,
    *,
    negatives: torch.Tensor,
    items: torch.Tensor,
    hidden: torch.Tensor,
    count: int | None = None,
) -> torch.Tensor:
    """Binary cross-entropy: each hidden item of ``items`` (B, L) against its ``k``
    ``negatives`` (B, L * k), averaged over ``count`` (as in ``masked_softmax_loss``)
    hidden items."""
    k = negatives.shape[1] // items.shape[1]
    negative_logits = logits.gather(1, negatives).view(*items.shape, k)  # (B, L, k)
    positive = F.softplus(-logits.gather(1, items))  # (B, L)
    negative = F.softplus(negative_logits).sum(-1)
    total = hidden.sum() if count is None else count
    return ((positive + negative) * hidden).sum() / (total * (1 + k))


def semantic_softmax_loss(
    logits: torch.Tensor,
    *,
    allowed: torch.Tensor,
    items: torch.Tensor,
    hidden: torch.Tensor,
    neighbours: torch.Tensor,
    weights: torch.Tensor,
    alpha: float,
    count: int | None = None,
) -> torch.Tensor:
    """S2CE (FeCoSR): cross-entropy against a soft target per hidden item, 1 - alpha on
    the item and alpha spread over its semantic ``neighbours`` (V, K) by ``weights``
    (V, K), among the ``allowed`` ones only; an item without allowed neighbours keeps
    the one-hot target. Divided by ``count`` as in ``masked_softmax_loss``, which is
    alpha = 0."""
    log_p = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)  # (B, V)
    own = log_p.gather(1, items)  # (B, L)
    near = neighbours[items]  # (B, L, K)
    flat = near.flatten(1)  # (B, L * K)
    w = weights[items] * allowed.gather(1, flat).view_as(near).float()
    total = w.sum(-1, keepdim=True)  # (B, L, 1)
    w = w / total.clamp(min=1e-12)
    near_log_p = log_p.gather(1, flat).view_as(near)
    # 0 * -inf is nan: a neighbour the market does not sell weighs nothing, exactly.
    soft = torch.where(w > 0, w * near_log_p, torch.zeros_like(w)).sum(-1)  # (B, L)
    a = alpha * (total.squeeze(-1) > 0).float()
    picked = ((1.0 - a) * own + a * soft).masked_fill(~hidden, 0.0)
    return -picked.sum() / (hidden.sum() if count is None else count)


def catalogue_mask(split: Split) -> torch.Tensor:
    """(M, V) bool: the items each market sells, PAD never."""
    data = split.data
    catalogue = torch.zeros((len(data.markets), data.items.size), dtype=torch.bool)
    for m, sold in enumerate(market_catalogues(split)):
        catalogue[m, torch.from_numpy(sold)] = True
    catalogue[:, PAD] = False
    return catalogue
