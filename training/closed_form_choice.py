"""Choosing the closed form's settings on the user's own validation split.

The blocks' L2 (lambda) and the time scale of co-occurrence weighting depend on the
data: EASE^R alone wants lambda 200 under `market` and 10 under `full` on XMarket,
400 under `market` elsewhere. ``cmr train`` chooses them here, before anything is
trained, scoring the closed form alone by validation NDCG@10 under the run's
``choice_protocols`` (default `full`: in the hybrid the closed form carries the
`full` protocol and the network the `market` one, docs/results.md "Trials"), on at
most ``USERS_PER_MARKET`` validation users of each market:

1. the shared block: each co-occurrence time scale (only "every pair counts 1" when
   the data has no dates) on lambdas 4x apart; for the best time scale, the grid is
   extended while its best lambda sits at an edge (upwards, until a plateau: larger
   lambdas only switch a block off), then the best's neighbours 2x apart are tried;
2. the markets' blocks, mixed with the chosen shared block as the model starts
   (``INITIAL_MIX``): the same lambda search, one lambda for every market (a
   market's own would follow its few validation users: noise); then, at that
   lambda, the markets' blocks' share of the closed form's weight in the mix
   (``MARKET_SHARES``; the model starts from it: the learned mix moves little);
3. the popularity penalty of every block (``PENALTIES``, training/closed_form.py
   ``penalised``), on the mix chosen: no new fit, the weights' columns rescaled.

One Gram matrix per block and time scale serves every lambda (the co-occurrences
are counted once). A factorisation is not shared: an eigendecomposition would serve
every lambda, but scoring the validation users from it costs more per lambda than
the Cholesky inverse it replaces. Settings given in the recipe are kept as given.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.baselines import Ease, EaseBlock, FloatArray
from training.closed_form import Blocks, Cooccurrence, penalised, weighted_gram
from training.evaluate import evaluate_sets
from training.hybrid import INITIAL_MIX, HybridConfig, start_share
from training.lambda_search import COARSE_LAMBDAS, search_lambda
from training.linalg import solve_ease
from training.protocols import EvalSet, Protocol, at_most, build_eval_set
from training.split import Split

log = logging.getLogger(__name__)

CHOICE_FILE = "closed_form_choice.json"
# Validation users per market that score each fit, drawn at random from larger markets:
# a fit's scoring then costs at most markets x this, whatever the data's size.
USERS_PER_MARKET = 2000
DAYS_GRID = (0.0, 7.0, 30.0)  # 0: every pair counts 1
# The markets' blocks' shares of the closed form's weight tried (INITIAL_MIX's is 1/3).
MARKET_SHARES = (1 / 3, 1 / 2, 2 / 3)
PENALTIES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One fit scored on validation."""

    block: str  # "shared", or "markets" (every market's block at one lambda)
    lam: float
    days: float
    share: float = 0.0  # the markets' blocks' share of the mix ("markets" only)
    penalty: float = 0.0  # the blocks' popularity penalty ("penalty" only)
    valid: float  # mean NDCG@10 over the validation protocols
    seconds: float


@dataclass(frozen=True, kw_only=True)
class ClosedFormChoice:
    """The chosen settings (None: given in the recipe, not chosen) and every trial."""

    ease_lambda: float | None
    market_ease_lambda: float | None
    cooccurrence_days: float | None
    protocols: tuple[str, ...]  # the validation protocols that chose them
    trials: tuple[Trial, ...]
    seconds: float
    market_ease_share: float | None = None
    popularity_penalty: float | None = None

    def settings(self) -> dict[str, Any]:
        """What the choice sets in the model's settings."""
        chosen = {
            "ease_lambda": self.ease_lambda,
            "market_ease_lambda": self.market_ease_lambda,
            "cooccurrence_days": self.cooccurrence_days,
            "market_ease_share": self.market_ease_share,
            "popularity_penalty": self.popularity_penalty,
        }
        return {name: value for name, value in chosen.items() if value is not None}

    def save(self, path: Path) -> None:
        payload = asdict(self) | {"chosen": self.settings()}
        path.write_text(json.dumps(payload, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> ClosedFormChoice:
        raw = json.loads(path.read_text())
        raw.pop("chosen")
        raw["protocols"] = tuple(raw["protocols"])
        raw["trials"] = tuple(Trial(**t) for t in raw["trials"])
        return cls(**raw)


def choice_of_run(
    run_dir: Path, split: Split, model: HybridConfig, *, protocols: Sequence[Protocol]
) -> ClosedFormChoice | None:
    """What a run chose for the settings ``model`` leaves open, on the validation sets of
    ``protocols``: read from its folder when it chose before (a resumed run), else
    chosen now and saved there; None when nothing is left open."""
    if not left_to_choose(model):
        return None
    path = run_dir / CHOICE_FILE
    if path.is_file():
        return ClosedFormChoice.load(path)
    valid = [build_eval_set(split, p, "valid", seed=split.seed) for p in protocols]
    choice = choose_closed_form(split, model, valid)
    run_dir.mkdir(parents=True, exist_ok=True)
    choice.save(path)
    return choice


def left_to_choose(model: HybridConfig) -> bool:
    """Whether any closed-form setting of ``model`` is left to validation."""
    return (
        model.ease_lambda is None
        or model.cooccurrence_days is None
        or (model.market_ease_lambda is None and not model.market_ease_lambdas)
        or (model.market_ease and model.market_ease_share is None)
        or model.popularity_penalty is None
    )


class _Mix:
    """Closed-form scores only: a weighted sum of EASE^R models."""

    name = "closed-form"

    def __init__(self, parts: Sequence[tuple[float, Ease]]) -> None:
        self.parts = tuple(parts)

    def score(self, histories: Any, candidates: Any, markets: Any) -> FloatArray:
        total = np.zeros(candidates.shape, np.float32)
        for weight, model in self.parts:
            total += weight * model.score(histories, candidates, markets)
        return total


def _valid_ndcg(model: _Mix, valid: Sequence[EvalSet], markets: Sequence[int]) -> float:
    scores = [r.mean["ndcg@10"] for r in evaluate_sets(model, valid, markets=markets)]
    return float(np.mean(scores))


def choose_closed_form(
    split: Split, model: HybridConfig, valid: Sequence[EvalSet]
) -> ClosedFormChoice:
    """Choose what ``model`` leaves to validation (its None settings), on ``valid``
    (at most USERS_PER_MARKET users of each market)."""
    started = time.perf_counter()
    valid = [at_most(v, USERS_PER_MARKET) for v in valid]
    trials: list[Trial] = []
    n_markets = len(split.data.markets)
    every = tuple(range(n_markets))
    floor = model.cooccurrence_floor

    given_penalty = model.popularity_penalty or 0.0  # the fits' penalty until step 3

    def block(markets: tuple[int, ...], lam: float, gram: Any) -> EaseBlock:
        items, matrix = gram
        weights = solve_ease(matrix, lam) if len(items) else np.zeros((0, 0), np.float32)
        penalised(weights, np.diag(matrix), given_penalty)
        return EaseBlock(markets=markets, items=items, weights=weights, lam=lam)

    # 1. The shared block: its time scale and lambda.
    if model.cooccurrence_days is not None:
        days_grid: tuple[float, ...] = (model.cooccurrence_days,)
    else:
        days_grid = DAYS_GRID if split.data.has_time else (0.0,)
    coarse = COARSE_LAMBDAS if model.ease_lambda is None else (model.ease_lambda,)
    seen: dict[float, dict[float, float]] = {}  # days -> lambda -> score
    grams: dict[float, Any] = {}  # days -> (items, Gram matrix)

    def best_score(days: float) -> float:
        return max(seen[days].values())

    def shared_score(lam: float, days: float) -> float:
        start = time.perf_counter()
        ease = Ease("ease", [block(every, lam, grams[days])])
        ndcg = _valid_ndcg(_Mix([(1.0, ease)]), valid, every)
        trials.append(_trial("shared", lam, days, ndcg, start))
        return ndcg

    # Every time scale on the coarse lambdas; the best one's lambda is then refined.
    for days in days_grid:
        grams[days] = weighted_gram(split, every, Cooccurrence(days, floor))
        seen[days] = {lam: shared_score(lam, days) for lam in coarse}
        if days != max(seen, key=best_score):
            del grams[days]  # keep the best time scale's co-occurrences only
    days = max(seen, key=best_score)
    global_lambda, score = max(seen[days].items(), key=lambda item: item[1])
    if model.ease_lambda is None:
        global_lambda, score = search_lambda(
            lambda lam: shared_score(lam, days), coarse=coarse, seen=seen[days]
        )
    shared_counts = [np.diag(grams[days][1]).astype(np.float32)]  # items' counts, a copy
    shared_model = Ease("ease", [block(every, global_lambda, grams.pop(days))])
    log.info(
        "closed form, shared block: days %g, lambda %g (valid NDCG@10 %.4f)",
        days, global_lambda, score,
    )  # fmt: skip

    # 2. The markets' blocks, one lambda for all (each market's own would follow its
    # few validation users), mixed with the shared block as the model starts: each fit
    # is scored at every share of the mix still open (scoring costs less than a fit).
    market_lambda, market_share = model.market_ease_lambda, model.market_ease_share
    open_lambda = market_lambda is None and not model.market_ease_lambdas
    if model.market_ease and (open_lambda or market_share is None):
        own_grams = [weighted_gram(split, (m,), Cooccurrence(days, floor)) for m in every]
        shares = MARKET_SHARES if market_share is None else (market_share,)
        total = INITIAL_MIX[0] + INITIAL_MIX[1]
        scored: dict[float, dict[float, float]] = {}  # lambda -> share -> score
        kept: list[Ease] = []  # the markets' blocks scoring best so far, for step 3
        given = Blocks.of(model)  # lambdas given: each market's own, if the recipe has them

        def market_score(lam: float) -> float:
            lams = [lam if open_lambda else given.lambda_of(m) for m in every]
            own = Ease("own", [block((m,), lams[m], own_grams[m]) for m in every])
            scored[lam] = {}
            for share in shares:
                start = time.perf_counter()
                parts = [(total * share, own)]
                parts += [(total * (1 - share), shared_model)] if model.global_ease else []
                ndcg = _valid_ndcg(_Mix(parts), valid, every)
                trials.append(_trial("markets", lam, days, ndcg, start, share=share))
                scored[lam][share] = ndcg
            best = max(scored[lam].values())
            if best >= max(max(s.values()) for s in scored.values()):
                kept[:] = [own]
            return best

        if open_lambda:
            market_lambda, ndcg = search_lambda(market_score)
        else:
            market_lambda = given.market_lambda
            ndcg = market_score(market_lambda)
        best_share = max(scored[market_lambda], key=scored[market_lambda].__getitem__)
        log.info(
            "closed form, markets' blocks: lambda %g, share %.2f (valid NDCG@10 %.4f)",
            market_lambda, best_share, ndcg,
        )  # fmt: skip
        mix = [(total * best_share, kept[0], [np.diag(g[1]).astype(np.float32) for g in own_grams])]
        if model.global_ease:
            mix.append((total * (1 - best_share), shared_model, shared_counts))
        market_share = best_share if model.market_ease_share is None else None
        market_lambda = market_lambda if open_lambda else None
    else:
        mix = [(1.0, shared_model, shared_counts)]
        market_lambda = market_share = None

    # 3. The blocks' popularity penalty, on the mix chosen (both blocks' settings given:
    # the shared block alone stands for it).
    penalty = None
    if model.popularity_penalty is None:
        penalty = _choose_penalty(mix, valid, every, trials=trials, days=days)
    seconds = time.perf_counter() - started
    # A markets' fit is scored at every share; the penalties rescale fits made before.
    fits = len({(t.block, t.lam, t.days) for t in trials if t.block != "penalty"})
    log.info("closed form settings chosen on validation in %.0f s, %d fits", seconds, fits)
    return ClosedFormChoice(
        ease_lambda=global_lambda if model.ease_lambda is None else None,
        market_ease_lambda=market_lambda,
        market_ease_share=market_share,
        popularity_penalty=penalty,
        cooccurrence_days=days if model.cooccurrence_days is None else None,
        protocols=tuple(v.protocol for v in valid),
        trials=tuple(trials),
        seconds=seconds,
    )


def _choose_penalty(
    mix: Sequence[tuple[float, Ease, list[FloatArray]]],
    valid: Sequence[EvalSet],
    markets: tuple[int, ...],
    *,
    trials: list[Trial],
    days: float,
) -> float:
    """The best of PENALTIES for ``mix`` (weight, model, its blocks' item counts) on
    ``valid``. Its blocks are rescaled in place, step by step: unused after the choice."""
    scores: dict[float, float] = {}
    applied = 0.0
    model = _Mix([(weight, ease) for weight, ease, _ in mix])
    for penalty in PENALTIES:
        start = time.perf_counter()
        for _, ease, counts in mix:
            for fit, count in zip(ease.blocks, counts, strict=True):
                penalised(fit.weights, count, penalty - applied)
        applied = penalty
        scores[penalty] = _valid_ndcg(model, valid, markets)
        trials.append(_trial("penalty", 0.0, days, scores[penalty], start, penalty=penalty))
    best = max(scores, key=scores.__getitem__)
    log.info("closed form, popularity penalty %g (valid NDCG@10 %.4f)", best, scores[best])
    return best


def _trial(
    block: str,
    lam: float,
    days: float,
    ndcg: float,
    start: float,
    *,
    share: float = 0.0,
    penalty: float = 0.0,
) -> Trial:
    seconds = time.perf_counter() - start
    is_penalty = block == "penalty"
    what = f"every block, days {days:g}, popularity penalty {penalty:g}"
    what = what if is_penalty else f"{block} block, days {days:g}, lambda {lam:g}"
    log.info(
        "closed form trial: %s%s: valid NDCG@10 %.4f (%.1f s)",
        what, f", share {share:.2f}" if share else "", ndcg, seconds,
    )  # fmt: skip
    return Trial(
        block=block, lam=lam, days=days, valid=ndcg, seconds=seconds, share=share, penalty=penalty
    )


def resolved(model: HybridConfig, choice: ClosedFormChoice | None) -> HybridConfig:
    """``model`` with the choice's settings, and the fallbacks for what nothing chose
    (a market block switched off, say), so a run's config.json holds numbers only."""
    model = replace(model, **(choice.settings() if choice else {}))
    blocks = Blocks.of(model)
    return replace(
        model,
        ease_lambda=blocks.global_lambda,
        market_ease_lambda=blocks.market_lambda,
        cooccurrence_days=blocks.cooccurrence.days,
        market_ease_share=start_share(model),
        popularity_penalty=blocks.popularity_penalty,
    )
