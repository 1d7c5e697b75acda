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

Chosen on validation (the `market` protocol's validation candidates, NDCG@10), as
EASE^R's lambda is: NMF's epochs and L2 per market (each market's model is its own);
FOREC's pre-training epochs and L2 for all markets together, and each fork's
fine-tuning epochs and learning rate per market. A run trains to the largest epoch
count of the grid and scores the snapshots at the others. The paper states the
fine-tuning L2 (0.001) and the learning rate (0.01), which stay fixed; its
pre-training L2 is printed as "1e" with the exponent lost, hence a grid. Training
runs on the CPU, seeded: the same seed gives the same scores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from model_store.vocab import PAD, IntArray
from training.evaluate import evaluate
from training.examples import Examples, NegativeSampler
from training.neumf import NeuMF, NeuMFConfig, fork
from training.protocols import EvalSet, build_eval_set
from training.split import Split

log = logging.getLogger(__name__)

SCORE_PAIRS = 1 << 18  # (user, candidate) pairs scored per forward pass


@dataclass(frozen=True, kw_only=True)
class NeuMFTraining:
    """How NMF and FOREC are fitted. A tuple is a grid chosen on validation; one value
    means no choice. Defaults: the paper's fixed settings, grids where it is silent."""

    epochs: tuple[int, ...] = (10, 20, 40)  # NMF per market, and FOREC's pre-training
    finetune_epochs: tuple[int, ...] = (5, 10, 20)
    l2: tuple[float, ...] = (1e-7, 1e-5)  # NMF's and FOREC's pre-training L2
    finetune_lr: tuple[float, ...] = (0.01, 0.001)
    lr: float = 0.01
    finetune_l2: float = 1e-3
    negatives: int = 4
    batch_size: int = 1024
    head: tuple[int, ...] = (16, 32, 16)
    seed: int = 0

    def __post_init__(self) -> None:
        grids = (self.epochs, self.finetune_epochs, self.l2, self.finetune_lr)
        if not all(grids):
            raise ValueError("every grid of NeuMFTraining needs at least one value")
        if min(*self.epochs, *self.finetune_epochs, self.negatives, self.batch_size) < 1:
            raise ValueError("epochs, negatives and batch size must be at least 1")

    def settings(self) -> dict[str, Any]:
        """The fixed settings, for a result's params (the chosen ones are added there)."""
        fixed = ("lr", "finetune_l2", "negatives", "batch_size", "head", "seed")
        return {k: v for k, v in asdict(self).items() if k in fixed}


State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Choice:
    """A snapshot and the validation NDCG@10 it scored, with the settings that made it."""

    ndcg: float
    state: State
    settings: dict[str, float]


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


def snapshot(model: nn.Module) -> State:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_epochs(
    model: NeuMF,
    split: Split,
    *,
    markets: Sequence[int],
    epochs: Sequence[int],
    lr: float,
    l2: float,
    cfg: NeuMFTraining,
    rng: np.random.Generator,
    label: str,
) -> Iterator[tuple[int, State]]:
    """Pointwise BCE on the markets' positives and fresh negatives each epoch, up to
    the largest of ``epochs``; yields (epoch, snapshot) at each of them. Only
    parameters that require grad are updated."""
    examples = positives(split, markets)
    sampler = NegativeSampler(split, pool="market")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=l2)
    bce = nn.BCEWithLogitsLoss(reduction="none")
    labels = torch.zeros(1, 1 + cfg.negatives)
    labels[0, 0] = 1.0
    last = max(epochs)
    for epoch in range(1, last + 1):
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
        log.info(
            "%s epoch %d/%d: loss %.4f (%.1f s)",
            label,
            epoch,
            last,
            total / count,
            time.perf_counter() - start,
        )
        if epoch in epochs:
            yield epoch, snapshot(model)


def validation_set(split: Split, cfg: NeuMFTraining) -> EvalSet:
    return build_eval_set(split, "market", "valid", seed=cfg.seed)


def valid_ndcg(model: NeuMF, valid: EvalSet, market: int) -> float:
    probe = NeuMFScorer("probe", {market: model}, {})
    return evaluate(probe, valid, markets=[market]).mean["ndcg@10"]


def new_model(split: Split, cfg: NeuMFTraining) -> NeuMF:
    torch.manual_seed(cfg.seed)
    return NeuMF(NeuMFConfig(n_users=split.data.n_users, n_items=split.data.items.size))


def best_run(
    model: NeuMF,
    runs: Iterator[tuple[int, State]],
    *,
    valid: EvalSet,
    market: int,
    **settings: float,
) -> Iterator[Choice]:
    """Each snapshot of ``runs`` scored on ``market``'s validation users."""
    for epoch, state in runs:
        model.load_state_dict(state)
        yield Choice(valid_ndcg(model, valid, market), state, {"epochs": epoch, **settings})


def fit_nmf(split: Split, cfg: NeuMFTraining) -> NeuMFScorer:
    """One NeuMF per market, on that market's training interactions alone; epochs and
    L2 chosen per market on validation."""
    valid = validation_set(split, cfg)
    models, chosen = {}, {}
    for m, code in enumerate(split.data.markets):
        choices: list[Choice] = []
        for l2 in cfg.l2:
            model = new_model(split, cfg)  # every L2 starts from the same weights
            runs = train_epochs(
                model,
                split,
                markets=[m],
                epochs=cfg.epochs,
                lr=cfg.lr,
                l2=l2,
                cfg=cfg,
                rng=np.random.default_rng([cfg.seed, 3, m]),
                label=f"nmf [{code}] l2 {l2:g}",
            )
            choices += best_run(model, runs, valid=valid, market=m, l2=l2)
        best = max(choices, key=lambda c: c.ndcg)
        model.load_state_dict(best.state)
        models[m], chosen[code] = model, best.settings
        log.info("nmf [%s]: chose %s (valid NDCG@10 %.4f)", code, best.settings, best.ndcg)
    return NeuMFScorer("nmf", models, {**cfg.settings(), "chosen": chosen})


def fit_forks(
    general: NeuMF, split: Split, cfg: NeuMFTraining, valid: EvalSet
) -> tuple[dict[int, NeuMF], dict[str, dict[str, float]]]:
    """Each market's fork of ``general``, fine-tuned with its own best settings."""
    forks, chosen = {}, {}
    for m, code in enumerate(split.data.markets):
        choices: list[Choice] = []
        for lr in cfg.finetune_lr:
            torch.manual_seed(cfg.seed + m)  # the market head's initial weights
            forked = fork(general, cfg.head)
            runs = train_epochs(
                forked,
                split,
                markets=[m],
                epochs=cfg.finetune_epochs,
                lr=lr,
                l2=cfg.finetune_l2,
                cfg=cfg,
                rng=np.random.default_rng([cfg.seed, 2, m]),
                label=f"forec [{code}] fine-tuning, lr {lr:g}",
            )
            choices += best_run(forked, runs, valid=valid, market=m, finetune_lr=lr)
        best = max(choices, key=lambda c: c.ndcg)
        forked.load_state_dict(best.state)
        forks[m], chosen[code] = forked, best.settings
    return forks, chosen


def fit_forec(split: Split, cfg: NeuMFTraining) -> NeuMFScorer:
    """NMF++ pre-trained on every market, forked and fine-tuned per market; the
    pre-training's epochs and L2 are the ones whose forks score best on validation."""
    valid = validation_set(split, cfg)
    best: tuple[float, NeuMFScorer] | None = None
    for l2 in cfg.l2:
        general = new_model(split, cfg)
        runs = train_epochs(
            general,
            split,
            markets=range(len(split.data.markets)),
            epochs=cfg.epochs,
            lr=cfg.lr,
            l2=l2,
            cfg=cfg,
            rng=np.random.default_rng([cfg.seed, 1]),
            label=f"forec pre-training, l2 {l2:g}",
        )
        for epoch, state in runs:
            general.load_state_dict(state)
            forks, chosen = fit_forks(general, split, cfg, valid)
            pretrained = {"epochs": epoch, "l2": l2}
            params = {**cfg.settings(), "pretraining": pretrained, "chosen": chosen}
            scorer = NeuMFScorer("forec", forks, params)
            ndcg = evaluate(scorer, valid).mean["ndcg@10"]
            log.info("forec: pre-training %s gives valid NDCG@10 %.4f", pretrained, ndcg)
            if best is None or ndcg > best[0]:
                best = (ndcg, scorer)
    assert best is not None  # the grids are not empty
    return best[1]
