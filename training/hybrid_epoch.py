"""One epoch of the hybrid's training, on one process or on its share of every batch.

Every process (rank, training/distributed.py) walks the same batches in the same
order and draws the same hidden items and negatives for the whole batch, from
generators seeded alike; it then scores only its own share of the batch's users,
and divides its loss by the whole batch's count of hidden items. The shares' losses
add up to the one-process loss, DistributedDataParallel sums their gradients (it
averages: each share's loss is scaled by the number of ranks), so a step is the
one-process step up to the order of floating-point sums, dropout aside.
``batch_loss`` is that per-batch loss, and the federated client's too
(training/federated/client.py, one process, optionally with S2CE's soft targets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from model_store.vocab import PAD, IntArray
from training.closed_form import FoldFits
from training.config import HybridTrainConfig
from training.distributed import ONE, Ranks
from training.hybrid import HybridRecommender
from training.hybrid_examples import (
    UserSets,
    catalogue_mask,
    hide,
    masked_softmax_loss,
    sample_negatives,
    sampled_bce_loss,
    semantic_softmax_loss,
    user_batches,
)
from training.semantics import ItemSemantics
from training.split import Split


class HybridStep(nn.Module):
    """The hybrid's training forward: closed-form scores in, catalogue logits out. Its
    own module because DistributedDataParallel wraps a module's ``forward``."""

    def __init__(self, model: HybridRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, market: Tensor, closed: Tensor) -> Tensor:
        """inputs (B, L), market (B,), closed-form scores (B, 2, V) -> logits (B, V)."""
        model = self.model
        network = closed.new_zeros((inputs.shape[0], model.config.n_items))
        if model.config.neural:
            users = model.user_vectors(inputs, market)
            network = model.catalogue_network_scores(users, market)
        return model.combine(closed, network, market)


@dataclass(frozen=True, kw_only=True)
class EpochData:
    """What an epoch draws its batches from."""

    sets: UserSets
    folds: FoldFits
    rows: IntArray  # rows of ``sets`` this stage trains on
    catalogue: Tensor  # (M, V) bool: what each market sells, on the CPU

    @classmethod
    def build(
        cls, sets: UserSets, folds: FoldFits, *, markets: Sequence[int], split: Split
    ) -> EpochData:
        """The users of ``markets``, and the catalogues of ``split``'s markets."""
        rows = np.flatnonzero(np.isin(sets.market.numpy(), markets))
        return cls(sets=sets, folds=folds, rows=rows, catalogue=catalogue_mask(split))


def batch_loss(
    step: nn.Module,
    batch: IntArray,
    *,
    data: EpochData,
    cfg: HybridTrainConfig,
    rng: torch.Generator,
    ranks: Ranks = ONE,
    semantics: ItemSemantics | None = None,
) -> Tensor:
    """The loss of one batch of users (one fold, one market) of ``data``: hide some of
    each user's items and predict them from the rest with ``step`` (a ``HybridStep``,
    in DDP or not). With ``ranks``, this rank's share of the batch, divided by the
    whole batch's hidden items (the shares' losses add up to the batch's).
    ``semantics``: S2CE's soft targets (training/semantics.py) instead of
    ``cfg.loss``."""
    device = next(step.parameters()).device
    sets, catalogue = data.sets, data.catalogue
    # The whole batch's draws on every rank: ``rng`` advances as in one process.
    items = sets.items[batch]
    width = max(int((items != PAD).sum(1).max()), 1)
    items = items[:, :width]
    hidden = hide(rng, items, cfg.mask_rate)
    count = int(hidden.sum())
    inputs = items.masked_fill(hidden, PAD)
    market = sets.market[batch]
    negatives = None
    if semantics is None and cfg.loss == "bce":
        allowed = catalogue[market]
        allowed.scatter_(1, inputs, False)  # what the user has is no negative
        allowed.scatter_(1, items, False)
        negatives = sample_negatives(rng, allowed, cfg.negatives * width)
    fold = int(sets.fold[batch[0]])  # a batch shares its fold
    mine = ranks.share(len(batch))
    items, hidden, inputs, market = items[mine], hidden[mine], inputs[mine], market[mine]
    closed = data.folds.fits[fold].catalogue_scores(inputs, market).to(device)
    targets, hidden = items.to(device), hidden.to(device)
    inputs, market = inputs.to(device), market.to(device)
    logits = cast(Tensor, step(inputs, market, closed))
    if negatives is not None:
        return sampled_bce_loss(
            logits, negatives=negatives[mine].to(device), items=targets, hidden=hidden,
            count=count,
        )  # fmt: skip
    allowed = catalogue[market.cpu()].to(device)
    allowed.scatter_(1, inputs, False)  # what the user has is no negative
    if semantics is None:
        return masked_softmax_loss(
            logits, allowed=allowed, items=targets, hidden=hidden, count=count
        )
    return semantic_softmax_loss(
        logits, allowed=allowed, items=targets, hidden=hidden,
        neighbours=semantics.neighbours.to(device), weights=semantics.weights.to(device),
        alpha=semantics.alpha, count=count,
    )  # fmt: skip


def train_epoch(
    step: nn.Module,
    opt: torch.optim.Optimizer,
    *,
    data: EpochData,
    cfg: HybridTrainConfig,
    rng: np.random.Generator,
    torch_rng: torch.Generator,
    ranks: Ranks,
    desc: str,
) -> float:
    """Train ``step`` (a ``HybridStep``, in DDP when ``ranks.world`` > 1) for one epoch
    over ``data``; the mean batch loss, the same on every rank."""
    total, steps = 0.0, 0
    bar = tqdm(
        user_batches(rng, data.sets, data.rows, batch_size=cfg.batch_size),
        total=-(-len(data.rows) // cfg.batch_size),
        desc=desc,
        leave=False,
        disable=None if ranks.main else True,  # no bar when not on a terminal; one bar
    )
    for batch in bar:
        loss = batch_loss(step, batch, data=data, cfg=cfg, rng=torch_rng, ranks=ranks)
        opt.zero_grad(set_to_none=True)
        # DDP averages the ranks' gradients; scaled by their number, the average is the
        # sum of the shares', which is the whole batch's gradient.
        (loss * ranks.world).backward()
        opt.step()
        total, steps = total + float(loss.detach()), steps + 1
    return ranks.total(total) / max(steps, 1)
