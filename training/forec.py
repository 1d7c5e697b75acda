"""FOREC (Bonab et al., 2021) and single-market NMF: comparators from the XMarket paper.

- ``nmf``: one NeuMF per market, trained on that market's training interactions alone
  (the paper's reference point, "NMF on single market").
- ``forec``: pre-train one NeuMF on every market's training interactions (NMF++),
  fork it per market (a fresh [16, 32, 16] market head and output; embeddings and
  the MLP's first layers frozen, training/neumf.py), fine-tune each fork on its
  market with a higher L2 (0.001). The paper's FOREC pre-trains with MAML; this is its
  ablation "NMF-FOREC" (NMF++ pre-training), the variant the issue asks for.

Training is pointwise: each training (user, item) pair is a positive, with 4 negatives
re-drawn every epoch from the items of the user's market the user has not bought in
training; binary cross-entropy; Adam at lr 0.01, the paper's settings. Users are many
per market and items are shared, so NMF++'s shared representations are the items'.

User representation: NeuMF embeds user ids, as the paper does, so these models are
``UserScorer``s: ``evaluate`` hands them each batch's user indices (EvalBatch.users)
and they ignore the histories. Consequence: at test time the validation item, which
joins the history of history-based models, is not seen by these (they are fitted on
the training split only, as in the paper); and they cannot score a user unknown to
the split, which the evaluation never asks of them.

L2: the paper's text gives the pre-training coefficient as "1e" with the exponent
lost; we use 1e-7, small, as Adam weight decay. Epochs are fixed, not chosen on
validation. Training runs on the CPU, seeded: the same seed gives the same scores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from model_store.vocab import PAD, IntArray
from training.examples import Examples, NegativeSampler
from training.neumf import NeuMF, NeuMFConfig, fork
from training.split import Split

log = logging.getLogger(__name__)

SCORE_PAIRS = 1 << 18  # (user, candidate) pairs scored per forward pass


@dataclass(frozen=True, kw_only=True)
class NeuMFTraining:
    """How NMF and FOREC are fitted; defaults: the paper's, epochs kept modest."""

    epochs: int = 20  # NMF per market, and FOREC's pre-training
    finetune_epochs: int = 10
    lr: float = 0.01
    finetune_lr: float = 0.01
    l2: float = 1e-7
    finetune_l2: float = 1e-3
    negatives: int = 4
    batch_size: int = 1024
    head: tuple[int, ...] = (16, 32, 16)
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.epochs, self.finetune_epochs, self.negatives, self.batch_size) < 1:
            raise ValueError("epochs, negatives and batch size must be at least 1")


class NeuMFScorer:
    """Scores a user's candidates with the NeuMF of the user's market."""

    def __init__(self, name: str, models: Mapping[int, NeuMF], params: dict[str, Any]) -> None:
        self.name = name
        self.models = dict(models)
        self.params = params

    def score_users(
        self, users: IntArray, histories: IntArray, candidates: IntArray, markets: IntArray
    ) -> NDArray[np.float32]:
        scores = np.zeros(candidates.shape, np.float32)
        for market in np.unique(markets):
            model = self.models.get(int(market))
            if model is None:
                raise ValueError(f"{self.name} has no model for market index {market}")
            model.eval()
            rows = np.flatnonzero(markets == market)
            # Under `full` a row holds the whole catalogue: bound the (rows, C, 64) MLP
            # activations by scoring a few rows at a time.
            step = max(1, SCORE_PAIRS // max(1, candidates.shape[1]))
            for chunk in (rows[i : i + step] for i in range(0, len(rows), step)):
                with torch.no_grad():
                    logits = model(
                        torch.from_numpy(users[chunk]), torch.from_numpy(candidates[chunk])
                    )
                scores[chunk] = logits.numpy()
        return scores


def positives(split: Split, markets: Sequence[int]) -> Examples:
    """Every training (user, item) pair of the users of ``markets``; no histories."""
    users = split.train_users()
    market = split.data.user_market[users]
    keep = np.isin(market, markets)
    if not keep.any():
        raise ValueError(f"no training interactions in markets {list(markets)}")
    n = int(keep.sum())
    return Examples(
        user=users[keep],
        market=market[keep],
        target=split.train_items[keep],
        history=np.zeros((n, 0), np.int64),
        length=np.zeros(n, np.int64),
    )


def train_epochs(
    model: NeuMF,
    split: Split,
    *,
    markets: Sequence[int],
    epochs: int,
    lr: float,
    l2: float,
    cfg: NeuMFTraining,
    rng: np.random.Generator,
    label: str,
) -> list[float]:
    """Pointwise BCE on the markets' positives and fresh negatives each epoch; returns
    the mean loss per epoch. Only parameters that require grad are updated."""
    examples = positives(split, markets)
    sampler = NegativeSampler(split, pool="market")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=l2)
    bce = nn.BCEWithLogitsLoss(reduction="none")
    labels = torch.zeros(1, 1 + cfg.negatives)
    labels[0, 0] = 1.0
    losses = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        negatives = sampler.sample(rng, examples, cfg.negatives)  # (E, k)
        items = torch.from_numpy(np.concatenate([examples.target[:, None], negatives], axis=1))
        users = torch.from_numpy(examples.user)
        order = torch.from_numpy(rng.permutation(len(examples)))
        total, count = 0.0, 0
        for chunk in order.split(cfg.batch_size):
            batch_items = items[chunk]  # (B, 1 + k)
            logits = model(users[chunk], batch_items)  # (B, 1 + k)
            real = (batch_items != PAD).float()  # a market with nothing unbought gives PAD
            loss = (bce(logits, labels.expand_as(logits)) * real).sum() / real.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(chunk)
            count += len(chunk)
        losses.append(total / count)
        log.info(
            "%s epoch %d/%d: loss %.4f (%.1f s)",
            label,
            epoch,
            epochs,
            losses[-1],
            time.perf_counter() - start,
        )
    return losses


def new_model(split: Split, cfg: NeuMFTraining) -> NeuMF:
    torch.manual_seed(cfg.seed)
    return NeuMF(NeuMFConfig(n_users=split.data.n_users, n_items=split.data.items.size))


def pretrain(split: Split, cfg: NeuMFTraining) -> NeuMF:
    """NMF++: one NeuMF on every market's training interactions."""
    model = new_model(split, cfg)
    train_epochs(
        model,
        split,
        markets=range(len(split.data.markets)),
        epochs=cfg.epochs,
        lr=cfg.lr,
        l2=cfg.l2,
        cfg=cfg,
        rng=np.random.default_rng([cfg.seed, 1]),
        label="forec pre-training",
    )
    return model


def finetune(general: NeuMF, split: Split, market: int, cfg: NeuMFTraining) -> NeuMF:
    """Fork ``general`` for ``market`` and fine-tune the fork on that market alone."""
    torch.manual_seed(cfg.seed + market)  # the market head's initial weights
    forked = fork(general, cfg.head)
    train_epochs(
        forked,
        split,
        markets=[market],
        epochs=cfg.finetune_epochs,
        lr=cfg.finetune_lr,
        l2=cfg.finetune_l2,
        cfg=cfg,
        rng=np.random.default_rng([cfg.seed, 2, market]),
        label=f"forec [{split.data.markets[market]}] fine-tuning",
    )
    return forked


def fit_forec(split: Split, cfg: NeuMFTraining) -> NeuMFScorer:
    general = pretrain(split, cfg)
    forks = {m: finetune(general, split, m, cfg) for m in range(len(split.data.markets))}
    return NeuMFScorer("forec", forks, asdict(cfg))


def fit_nmf(split: Split, cfg: NeuMFTraining) -> NeuMFScorer:
    """One NeuMF per market, on that market's training interactions alone."""
    models = {}
    for m, code in enumerate(split.data.markets):
        model = new_model(split, cfg)
        train_epochs(
            model,
            split,
            markets=[m],
            epochs=cfg.epochs,
            lr=cfg.lr,
            l2=cfg.l2,
            cfg=cfg,
            rng=np.random.default_rng([cfg.seed, 3, m]),
            label=f"nmf [{code}]",
        )
        models[m] = model
    params = {k: v for k, v in asdict(cfg).items() if not k.startswith(("finetune", "head"))}
    return NeuMFScorer("nmf", models, params)
