"""The baselines every model must beat: popularity and EASE^R (Steck, 2019).

- ``popularity``: how often each item was bought in the user's market (training split).
- ``global-popularity``: the same count over all markets.
- ``ease``: EASE^R fitted on every market's training users at once, one lambda.
- ``ease-per-market``: one EASE^R per market on that market alone, lambda per market;
  against ``ease`` it shows what the other markets' data adds.
- ``nmf`` and ``forec``: the XMarket paper's single-market NeuMF and FOREC
  (training/forec.py), trained with torch, settings chosen on validation.
- ``m3rec``: the M3Rec paper's model (training/m3rec.py), EASE^R's and random walks'
  item similarities adapted per market; trained with torch.

EASE^R's closed form (training/linalg.py): P = (X^T X + lambda I)^-1,
B = I - P diag(1/diag(P)), so B_ij = -P_ij / P_jj with a zero diagonal; a user's
scores are x_u B.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from model_store.vocab import PAD, IntArray, find_sorted
from training.evaluate import Result, evaluate, evaluate_sets
from training.linalg import ensure_fits, solve_ease
from training.protocols import EvalSet, Protocol, build_eval_set
from training.split import Split, SplitName

if TYPE_CHECKING:
    from training.forec import NeuMFTraining

log = logging.getLogger(__name__)

LAMBDA_GRID = (2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)
BASELINES = (
    "popularity",
    "global-popularity",
    "ease",
    "ease-per-market",
    "nmf",
    "forec",
    "m3rec",
)
FloatArray = NDArray[np.float32]


class Popularity:
    """Scores an item by its training count in the user's market (or in all markets)."""

    def __init__(self, name: str, counts: FloatArray) -> None:
        self.name = name
        self.counts = counts  # (M, V): row m holds market m's counts

    @classmethod
    def fit(cls, split: Split, per_market: bool = True) -> Popularity:
        n_markets, n_items = len(split.data.markets), split.data.items.size
        market = split.data.user_market[split.train_users()]
        counts = np.zeros((n_markets, n_items), np.float32)
        np.add.at(counts, (market, split.train_items), 1.0)
        if not per_market:
            counts[:] = counts.sum(axis=0)
        return cls("popularity" if per_market else "global-popularity", counts)

    def score(self, histories: IntArray, candidates: IntArray, markets: IntArray) -> FloatArray:
        return self.counts[markets[:, None], candidates]


@dataclass(frozen=True, kw_only=True)
class EaseBlock:
    """One EASE^R weight matrix over ``items``, serving the users of ``markets``."""

    markets: tuple[int, ...]
    items: IntArray  # (Vb,) sorted global item indices
    weights: FloatArray  # (Vb, Vb)
    lam: float

    def local(self, items: IntArray) -> tuple[IntArray, NDArray[np.bool_]]:
        """Positions of global item indices in this block, and which ones it knows."""
        at, found = find_sorted(self.items, items)
        return at, found & (items != PAD)

    def score(self, histories: IntArray, candidates: IntArray) -> FloatArray:
        at, known = self.local(histories)
        rows = np.broadcast_to(np.arange(len(histories))[:, None], histories.shape)
        x = sp.csr_matrix(
            (np.ones(known.sum(), np.float32), (rows[known], at[known])),
            shape=(len(histories), len(self.items)),
        )
        x.data[:] = 1.0  # a repeated history item still counts once
        user_scores = np.asarray(x @ self.weights)  # (B, Vb)
        at, known = self.local(candidates)
        # An item the block never saw in training has no co-occurrence: score 0.
        return np.where(known, np.take_along_axis(user_scores, at, axis=1), 0.0).astype(np.float32)


class Ease:
    """EASE^R over one or more blocks; a user is scored by the block of its market."""

    def __init__(self, name: str, blocks: Sequence[EaseBlock]) -> None:
        self.name = name
        self.blocks = tuple(blocks)
        self._block_of = {m: b for b in self.blocks for m in b.markets}

    def params(self, codes: Sequence[str]) -> dict[str, Any]:
        """The chosen lambda: one number, or one per market code."""
        if len(self.blocks) == 1:
            return {"lambda": self.blocks[0].lam}
        return {"lambda": {codes[m]: b.lam for m, b in sorted(self._block_of.items())}}

    def score(self, histories: IntArray, candidates: IntArray, markets: IntArray) -> FloatArray:
        scores = np.zeros(candidates.shape, np.float32)
        for market in np.unique(markets):
            rows = markets == market
            block = self._block_of.get(int(market))
            if block is None:
                raise ValueError(f"{self.name} has no weights for market index {market}")
            scores[rows] = block.score(histories[rows], candidates[rows])
        return scores


def gram_matrix(
    split: Split, markets: tuple[int, ...], users_kept: NDArray[np.bool_] | None = None
) -> tuple[IntArray, NDArray[np.float64]]:
    """Items seen in training in ``markets`` and their co-occurrence counts X^T X;
    ``users_kept`` (U,) leaves the other users out."""
    users = split.train_users()
    keep = np.isin(split.data.user_market[users], markets)
    if users_kept is not None:
        keep &= users_kept[users]
    items, local = np.unique(split.train_items[keep], return_inverse=True)
    ensure_fits(len(items), bytes_per_cell=8, what="The co-occurrence matrix")
    x = sp.csr_matrix(
        (np.ones(keep.sum(), np.float64), (users[keep], local)),
        shape=(split.data.n_users, len(items)),
    )
    x.data[:] = 1.0
    return items, (x.T @ x).toarray()


def tune_ease(
    split: Split,
    valid_sets: Sequence[EvalSet],
    *,
    per_market: bool = False,
    grid: Sequence[float] = LAMBDA_GRID,
) -> list[Ease]:
    """Fit EASE^R for every lambda in ``grid``; one model per validation set, each
    made of the blocks with the best mean validation NDCG@10 on that set."""
    if not grid:
        raise ValueError("the lambda grid is empty")
    n_markets = len(split.data.markets)
    every = tuple(range(n_markets))
    groups: list[tuple[int, ...]] = [(m,) for m in range(n_markets)] if per_market else [every]
    name = "ease-per-market" if per_market else "ease"
    chosen: list[list[EaseBlock]] = [[] for _ in valid_sets]
    for markets in groups:
        codes = ",".join(split.data.markets[m] for m in markets)
        items, gram = gram_matrix(split, markets)
        best: list[tuple[float, EaseBlock | None]] = [(-1.0, None) for _ in valid_sets]
        for lam in grid:
            start = time.perf_counter()
            block = EaseBlock(markets=markets, items=items, weights=solve_ease(gram, lam), lam=lam)
            model = Ease(name, [block])
            line = []
            for i, valid in enumerate(valid_sets):
                ndcg = evaluate(model, valid, markets=markets).mean["ndcg@10"]
                line.append(f"{valid.protocol} {ndcg:.4f}")
                if ndcg > best[i][0]:
                    best[i] = (ndcg, block)
            log.info(
                "%s [%s] lambda %g: valid NDCG@10 %s (%.1f s)",
                name,
                codes,
                lam,
                ", ".join(line),
                time.perf_counter() - start,
            )
        for i, (_, winner) in enumerate(best):
            assert winner is not None  # the grid is not empty
            if len(grid) > 1 and winner.lam in (min(grid), max(grid)):
                log.warning(
                    "%s [%s], %s protocol: the best lambda %g is at the edge of the grid",
                    name,
                    codes,
                    valid_sets[i].protocol,
                    winner.lam,
                )
            chosen[i].append(winner)
    return [Ease(name, blocks) for blocks in chosen]


def evaluate_baselines(
    split: Split,
    models: Sequence[str],
    protocols: Sequence[Protocol],
    *,
    split_name: SplitName = "test",
    seed: int = 0,
    grid: Sequence[float] = LAMBDA_GRID,
    targets: Sequence[EvalSet] | None = None,
    neural: NeuMFTraining | None = None,
) -> list[Result]:
    """Fit each baseline on the training split and evaluate it under each protocol.

    Every model sees the same candidates (one EvalSet per protocol); EASE^R's
    lambda is chosen per protocol on the validation split. ``targets``, one per
    protocol, replace the protocols' own sets (a candidates file): the protocol
    then only picks the validation candidates that choose the lambda. ``neural`` sets
    how ``nmf`` and ``forec`` train (default: NeuMFTraining's), seeded by ``seed``;
    they are fitted once and evaluated under every protocol.
    """
    unknown = set(models) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown model {sorted(unknown)}; choose from {', '.join(BASELINES)}")
    if targets is None:
        targets = [build_eval_set(split, p, split_name, seed=seed) for p in protocols]
    if len(targets) != len(protocols):
        raise ValueError(f"{len(targets)} evaluation sets for {len(protocols)} protocols")
    results: list[Result] = []
    for name in models:
        start = time.perf_counter()
        if name in ("popularity", "global-popularity"):
            scorer = Popularity.fit(split, per_market=name == "popularity")
            results += evaluate_sets(scorer, targets)
        elif name in ("nmf", "forec"):
            from training.forec import NeuMFTraining, fit_forec, fit_nmf

            cfg = replace(neural or NeuMFTraining(), seed=seed)
            neumf = fit_nmf(split, cfg) if name == "nmf" else fit_forec(split, cfg)
            results += [replace(r, params=neumf.params) for r in evaluate_sets(neumf, targets)]
        elif name == "m3rec":
            from training.m3rec import M3RecSettings, fit_m3rec

            m3rec = fit_m3rec(split, M3RecSettings(seed=seed))
            results += [replace(r, params=m3rec.params) for r in evaluate_sets(m3rec, targets)]
        else:
            valid_sets = [build_eval_set(split, p, "valid", seed=seed) for p in protocols]
            tuned = tune_ease(split, valid_sets, per_market=name == "ease-per-market", grid=grid)
            for target, model in zip(targets, tuned, strict=True):
                result = evaluate(model, target)
                results.append(replace(result, params=model.params(split.data.markets)))
        log.info("%s: fitted and evaluated in %.1f s", name, time.perf_counter() - start)
    return results
