"""One ``evaluate`` for every model: rank each held-out item among its candidates.

A model is anything with a ``name`` and a ``score`` method in the shapes of the
scoring contract (docs in the architecture note): popularity, EASE^R, a torch
model, or an exported ONNX graph all go through this same function. A model that
knows users by index instead of by history (NeuMF, FOREC: a user embedding per
user) is a ``UserScorer``; the same function hands it the batch's user indices.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from model_store.vocab import PAD, IntArray
from training.protocols import EvalSet

log = logging.getLogger(__name__)

DEFAULT_KS = (5, 10)
Metrics = dict[str, float]


class Scorer(Protocol):
    """Scores candidates for users: higher = more likely to be bought."""

    name: str

    def score(
        self, histories: IntArray, candidates: IntArray, markets: IntArray
    ) -> NDArray[np.floating[Any]]:
        """histories (B, N), candidates (B, C), markets (B,) -> scores (B, C), the order
        of the scoring contract and of every model's ``forward``.

        Histories are oldest first and PAD-padded; scores at PAD candidates are ignored.
        """
        ...


@runtime_checkable
class UserScorer(Protocol):
    """Scores candidates for users it knows by index (the split's user indices)."""

    name: str

    def score_users(
        self, users: IntArray, histories: IntArray, candidates: IntArray, markets: IntArray
    ) -> NDArray[np.floating[Any]]:
        """users (B,) and then ``Scorer.score``'s arguments -> scores (B, C)."""
        ...


def positive_ranks(scores: NDArray[np.floating[Any]], candidates: IntArray) -> IntArray:
    """1-based rank of column 0 among the non-PAD candidates; a tie counts against it."""
    rivals = candidates != PAD
    rivals[:, 0] = False
    beaten_by = ((scores >= scores[:, :1]) & rivals).sum(axis=1)
    return np.asarray(beaten_by + 1, dtype=np.int64)


def ranking_metrics(ranks: IntArray, ks: Sequence[int] = DEFAULT_KS) -> Metrics:
    """Recall@K (= HR@K, one positive), NDCG@K and MRR, averaged over users."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: Metrics = {}
    for k in ks:
        hit = ranks <= k
        out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)))
        out[f"recall@{k}"] = float(np.mean(hit))
    out["mrr"] = float(np.mean(1.0 / ranks))
    return out


@dataclass(frozen=True, kw_only=True)
class Result:
    """Per-market metrics of one model under one protocol and split."""

    model: str
    protocol: str
    split: str
    seed: int
    markets: dict[str, Metrics]  # each with "users" as well
    params: dict[str, Any] = field(default_factory=dict)  # e.g. a baseline's chosen lambda

    @property
    def mean(self) -> Metrics:
        """Unweighted mean over markets (each market counts once), users summed."""
        names = [k for k in next(iter(self.markets.values())) if k != "users"]
        mean = {k: float(np.mean([m[k] for m in self.markets.values()])) for k in names}
        mean["users"] = float(sum(m["users"] for m in self.markets.values()))
        return mean

    def to_json(self) -> dict[str, Any]:
        def clean(m: Metrics) -> dict[str, float | int]:
            return {k: int(v) if k == "users" else round(v, 6) for k, v in m.items()}

        return {
            "model": self.model,
            "protocol": self.protocol,
            "split": self.split,
            "seed": self.seed,
            "markets": {code: clean(m) for code, m in self.markets.items()},
            "mean": clean(self.mean),
            "params": self.params,
        }


def evaluate(
    model: Scorer | UserScorer,
    eval_set: EvalSet,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 512,
    markets: Sequence[int] | None = None,
) -> Result:
    """Score every user's candidates in market-pure batches and rank the positives.

    ``markets`` (indices) limits the evaluation to those markets; default all.
    """
    return evaluate_sets(model, [eval_set], ks=ks, batch_size=batch_size, markets=markets)[0]


def evaluate_sets(
    model: Scorer | UserScorer,
    eval_sets: Sequence[EvalSet],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 512,
    markets: Sequence[int] | None = None,
) -> list[Result]:
    """``evaluate`` on each of ``eval_sets``. Sets of the same users (the protocols of one
    split) are scored together, their candidates side by side in one call per batch: a
    model whose cost is per user (a whole-catalogue pass) pays it once, not once a set.
    Sets of other users are grouped likewise; the results are those of ``evaluate`` on each
    set alone, in the order of ``eval_sets``."""
    first = eval_sets[0]
    if not all(_same_users(first, other) for other in eval_sets[1:]):
        groups: list[list[int]] = []  # positions of sets of the same users
        for i, s in enumerate(eval_sets):
            group = next((g for g in groups if _same_users(eval_sets[g[0]], s)), None)
            if group is None:
                groups.append([i])
            else:
                group.append(i)
        results: dict[int, Result] = {}
        for group in groups:
            together = [eval_sets[i] for i in group]
            done = evaluate_sets(model, together, ks=ks, batch_size=batch_size, markets=markets)
            results |= dict(zip(group, done, strict=True))
        return [results[i] for i in range(len(eval_sets))]
    ranks = [np.zeros(len(s), np.int64) for s in eval_sets]
    wanted = range(len(first.markets)) if markets is None else markets
    for batches in zip(*(s.batches(batch_size, markets=wanted) for s in eval_sets), strict=True):
        batch = batches[0]
        candidates = np.concatenate([b.candidates for b in batches], axis=1)
        if isinstance(model, UserScorer):
            raw = model.score_users(batch.users, batch.histories, candidates, batch.markets)
        else:
            raw = model.score(batch.histories, candidates, batch.markets)
        scores = np.asarray(raw)
        if scores.shape != candidates.shape:
            raise ValueError(
                f"{model.name} returned scores of shape {scores.shape} "
                f"for candidates of shape {candidates.shape}"
            )
        if not np.isfinite(scores[candidates != PAD]).all():
            raise ValueError(f"{model.name} returned non-finite scores")
        at = 0
        for b, set_ranks in zip(batches, ranks, strict=True):
            width = b.candidates.shape[1]
            set_ranks[b.rows] = positive_ranks(scores[:, at : at + width], b.candidates)
            at += width
    return [
        _result(model.name, s, r, markets=wanted, ks=ks)
        for s, r in zip(eval_sets, ranks, strict=True)
    ]


def _same_users(a: EvalSet, b: EvalSet) -> bool:
    """Whether two sets hold the same users with the same histories (one split)."""
    return (
        a.split is b.split
        and a.split_name == b.split_name
        and np.array_equal(a.users, b.users)
        and np.array_equal(a.history_ptr, b.history_ptr)
        and np.array_equal(a.history_items, b.history_items)
    )


def _result(
    name: str, eval_set: EvalSet, ranks: IntArray, *, markets: Sequence[int], ks: Sequence[int]
) -> Result:
    """Per-market metrics of one set's ranks."""
    per_market: dict[str, Metrics] = {}
    for m in markets:
        rows = eval_set.market_rows(m)
        if rows.stop > rows.start:
            per_market[eval_set.markets[m]] = {
                **ranking_metrics(ranks[rows], ks),
                "users": rows.stop - rows.start,
            }
    if not per_market:
        raise ValueError("nothing to evaluate: no user has a held-out item")
    result = Result(
        model=name,
        protocol=eval_set.protocol,
        split=eval_set.split_name,
        seed=eval_set.seed,
        markets=per_market,
    )
    log.debug(
        "%s, %s protocol, %s: mean NDCG@10 %.4f",
        name,
        eval_set.protocol,
        eval_set.split_name,
        result.mean.get("ndcg@10", float("nan")),
    )
    return result
