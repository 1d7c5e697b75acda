"""Fitting the hybrid's closed-form part: EASE^R over all markets and per market.

The blocks go into a ``ClosedForm`` (training/hybrid.py): the shared block over
every market's training users, and one block per market over that market's users
alone, each only as wide as the items its users bought in training.

EASE^R solves for item-item weights from the co-occurrence (Gram) matrix X^T X,
where every pair of a user's items counts 1. Here a pair can count by how close in
time the two were bought, ``floor + (1 - floor) * exp(-|days apart| / days)``:
items bought together (a camera and its memory card) then weigh more than items
bought years apart, and the closed form stays EASE^R's. Each user's kernel matrix
is positive semi-definite, so the weighted Gram is too.

Scores of training users must not come from weights fitted on those same users
(their held-back items would be predicted by co-occurrences they created
themselves, far better than any held-out item ever is). ``fold_fits`` gives each
user the blocks fitted without its fold: out-of-fold scores, as at test time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors.torch import load_file, save_file

from model_store.vocab import IntArray
from training.baselines import gram_matrix
from training.data import Interactions
from training.hybrid import ClosedForm, HybridConfig
from training.linalg import ensure_fits, solve_ease
from training.split import Split, every_row

log = logging.getLogger(__name__)

CLOSED_FORM_FILE = "closed_form.safetensors"  # a run's blocks, fitted on its training split
REFIT_FILE = "closed_form_refit.safetensors"  # a run's blocks refitted on every row


@dataclass(frozen=True)
class Cooccurrence:
    """How a pair of one user's items counts in the Gram matrix."""

    days: float = 0.0  # time scale of the decay; 0: every pair counts 1 (plain EASE^R)
    floor: float = 0.2  # what a pair bought far apart still counts

    def weights(self, seconds: NDArray[np.int64]) -> NDArray[np.float64]:
        """(n,) purchase times of one user -> (n, n) pair weights."""
        apart = np.abs(seconds[:, None] - seconds[None, :]) / 86_400.0
        return self.floor + (1.0 - self.floor) * np.exp(-apart / self.days)


# What a setting left to validation (None in HybridConfig) is where nothing chooses it:
# a federation, where no one sees every market's validation users, and benchmarks.
# These were XMarket's choices.
FALLBACK_LAMBDA, FALLBACK_MARKET_LAMBDA, FALLBACK_DAYS = 20.0, 10.0, 30.0


@dataclass(frozen=True, kw_only=True)
class Blocks:
    """Which EASE^R blocks to fit, and how."""

    global_lambda: float  # L2 of the shared block
    market_lambda: float  # L2 of each market's block
    market_lambdas: tuple[float, ...] = ()  # per market, in market order; else market_lambda
    global_ease: bool = True  # False: the shared block is left empty
    market_ease: bool = True
    cooccurrence: Cooccurrence = Cooccurrence()
    popularity_penalty: float = 0.0

    @classmethod
    def of(cls, model: HybridConfig, *, global_ease: bool | None = None) -> Blocks:
        """The blocks a model's settings ask for; ``global_ease`` overrides the model's
        (a federated client or an onboarded market fits no shared block of its own)."""
        days = model.cooccurrence_days
        return cls(
            global_lambda=_or(model.ease_lambda, FALLBACK_LAMBDA),
            market_lambda=_or(model.market_ease_lambda, FALLBACK_MARKET_LAMBDA),
            market_lambdas=tuple(model.market_ease_lambdas),
            global_ease=model.global_ease if global_ease is None else global_ease,
            market_ease=model.market_ease,
            cooccurrence=Cooccurrence(_or(days, FALLBACK_DAYS), model.cooccurrence_floor),
            popularity_penalty=_or(model.popularity_penalty, 0.0),
        )

    def lambda_of(self, market: int) -> float:
        """The L2 of ``market``'s own block."""
        own = market < len(self.market_lambdas)
        return self.market_lambdas[market] if own else self.market_lambda


def _or(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def weighted_gram(
    split: Split,
    markets: tuple[int, ...],
    cooccurrence: Cooccurrence,
    *,
    users_kept: NDArray[np.bool_] | None = None,
) -> tuple[IntArray, NDArray[np.float64]]:
    """Items seen in training in ``markets`` and their (time-weighted) Gram matrix."""
    if not cooccurrence.days or not split.data.has_time:
        return gram_matrix(split, markets, users_kept)
    users = np.flatnonzero(np.isin(split.data.user_market, markets))
    if users_kept is not None:
        users = users[users_kept[users]]
    rows, cols, values = [], [], []
    for u in users:
        span = slice(split.train_ptr[u], split.train_ptr[u + 1])
        items = split.train_items[span]
        if not len(items):
            continue
        rows.append(np.repeat(items, len(items)))
        cols.append(np.tile(items, len(items)))
        values.append(cooccurrence.weights(split.train_time[span]).ravel())
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0))
    present, local = np.unique(np.concatenate(rows), return_inverse=True)
    col = np.searchsorted(present, np.concatenate(cols))
    n = len(present)
    ensure_fits(n, bytes_per_cell=8, what="The co-occurrence matrix")
    gram = np.zeros(n * n)
    np.add.at(gram, local * n + col, np.concatenate(values))
    return present, gram.reshape(n, n)


def penalised(weights: NDArray[np.float32], counts: NDArray[np.floating], penalty: float) -> None:
    """Divide column c of a block's ``weights`` by ``counts[c] ** penalty``, in place.

    EASE^R's weights carry the items' popularity: a popular item co-occurs with most
    histories. Under the `full` protocol, where the held-out item competes with every
    popular item of the market, a small penalty ranked better on XMarket's validation
    split without dates (docs/results.md); how much is chosen on validation."""
    if penalty:
        weights *= (np.maximum(counts, 1.0) ** -penalty).astype(np.float32)[None, :]


def _block(
    split: Split,
    markets: tuple[int, ...],
    *,
    lam: float,
    blocks: Blocks,
    users_kept: NDArray[np.bool_] | None,
) -> tuple[IntArray, NDArray[np.float32]]:
    items, gram = weighted_gram(split, markets, blocks.cooccurrence, users_kept=users_kept)
    if not len(items):
        return items, np.zeros((0, 0), np.float32)
    weights = solve_ease(gram, lam)
    penalised(weights, np.diag(gram), blocks.popularity_penalty)
    return items, weights


def fit_closed_form(
    split: Split,
    blocks: Blocks,
    *,
    users_kept: NDArray[np.bool_] | None = None,
    dtype: torch.dtype = torch.float16,
) -> ClosedForm:
    """EASE^R blocks from the training rows of ``users_kept`` (default: every user).
    A block that is switched off is left empty (every item without a row)."""
    n_items, n_markets = split.data.items.size, len(split.data.markets)
    global_index = np.full(n_items, -1, np.int64)
    global_weights = np.zeros((1,), np.float32)
    if blocks.global_ease:
        every = tuple(range(n_markets))
        items, weights = _block(
            split, every, lam=blocks.global_lambda, blocks=blocks, users_kept=users_kept
        )
        global_index[items] = np.arange(len(items))
        global_weights = weights.ravel() if weights.size else global_weights
    market_index = np.full((n_markets + 1, n_items), -1, np.int64)  # last row: shared
    sizes = np.zeros(n_markets + 1, np.int64)
    flats = []
    for m in range(n_markets if blocks.market_ease else 0):
        items, weights = _block(
            split, (m,), lam=blocks.lambda_of(m), blocks=blocks, users_kept=users_kept
        )
        market_index[m, items] = np.arange(len(items))
        sizes[m] = len(items)
        flats.append(weights.ravel())
    offsets = np.zeros(n_markets + 1, np.int64)
    offsets[1:] = np.cumsum(sizes[:-1] ** 2)
    market_weights = np.concatenate([*flats, np.zeros(1, np.float32)])  # never empty
    return ClosedForm(
        global_index=torch.from_numpy(global_index),
        global_weights=torch.from_numpy(global_weights).to(dtype),
        market_index=torch.from_numpy(market_index),
        market_offset=torch.from_numpy(offsets),
        market_size=torch.from_numpy(sizes),
        market_weights=torch.from_numpy(market_weights).to(dtype),
        global_size=int((global_index >= 0).sum()),
    )


@dataclass(frozen=True)
class FoldFits:
    """Each user's fold and, per fold, the blocks fitted without that fold's users."""

    fold: IntArray  # (U,)
    fits: tuple[ClosedForm, ...]


def fold_fits(split: Split, blocks: Blocks, *, folds: int, seed: int) -> FoldFits:
    """``folds`` fits, each leaving out one random fold of users (float32: these
    scores are training inputs, not a served model)."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    fold = np.random.default_rng([seed, folds]).integers(0, folds, split.data.n_users)
    fits = []
    for k in range(folds):
        start = time.perf_counter()
        fits.append(fit_closed_form(split, blocks, users_kept=fold != k, dtype=torch.float32))
        seconds = time.perf_counter() - start
        log.info("closed form without fold %d of %d: %.0f s", k + 1, folds, seconds)
    return FoldFits(fold.astype(np.int64), tuple(fits))


def refit_closed_form(path: Path, data: Interactions, blocks: Blocks) -> None:
    """The blocks fitted on every row, held-out items included, saved to ``path``: what
    a run publishes once its settings were chosen and its metrics measured on a split."""
    start = time.perf_counter()
    save_file(fit_closed_form(every_row(data), blocks).tensors(), path)
    seconds = time.perf_counter() - start
    log.info("closed form refitted on all %d rows (%s): %.0f s", len(data.user), path.name, seconds)


def load_closed_form(path: Path) -> ClosedForm:
    """The closed form a run saved (its shared block's size is counted from the index)."""
    tensors = load_file(path)
    size = int((tensors["global_index"] >= 0).sum())
    return ClosedForm(**tensors, global_size=size)
