"""The closed form's settings chosen on validation: the search, what is kept as given,
and the choice beating every grid point it skipped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.baselines import Ease, EaseBlock, gram_matrix
from training.closed_form import FALLBACK_DAYS, Blocks, fit_closed_form
from training.closed_form_choice import (
    MARKET_SHARES,
    PENALTIES,
    ClosedFormChoice,
    choose_closed_form,
    left_to_choose,
    resolved,
)
from training.evaluate import evaluate
from training.hybrid import INITIAL_MIX, HybridConfig, HybridRecommender
from training.lambda_search import FLAT, search_lambda
from training.linalg import solve_ease
from training.protocols import at_most, build_eval_set
from training.split import Split


@pytest.mark.parametrize("peak", [3.0, 55.0, 900.0, 20_000.0])
def test_search_finds_the_peak_within_a_factor_of_two(peak: float) -> None:
    calls: list[float] = []

    def score(lam: float) -> float:
        calls.append(lam)
        return -abs(np.log(lam / peak))

    best, value = search_lambda(score)
    assert peak / 2 <= best <= peak * 2
    assert value == score(best)
    assert len(set(calls)) == len(calls) - 1  # each lambda fitted once (but the check)


def test_search_stops_where_larger_lambdas_gain_nothing() -> None:
    calls: list[float] = []

    def score(lam: float) -> float:  # rises to 640, then flat to within FLAT / 2
        calls.append(lam)
        return min(lam, 640.0) / 640.0 + (FLAT / 2 if lam > 640 else 0.0)

    best, value = search_lambda(score)
    assert (best, value) == (640.0, 1.0)  # not 2560, which gains less than FLAT
    assert sorted(calls) == [10.0, 40.0, 160.0, 640.0, 2560.0]  # no refinement on a plateau
    # A peak upwards is still found and refined: the score falls past it, not flat.
    calls.clear()

    def peaked(lam: float) -> float:
        calls.append(lam)
        return -abs(np.log(lam / 20_000.0))

    best, _ = search_lambda(peaked)
    assert best == 20_480.0 and {40_960.0, 5_120.0} <= set(calls)


def _config(split: Split, **settings: object) -> HybridConfig:
    n_markets = len(split.data.markets)
    return HybridConfig(n_items=split.data.items.size, n_markets=n_markets, **settings)  # type: ignore[arg-type]


def test_choice_beats_every_lambda_of_the_baselines_grid(synth_split: Split) -> None:
    valid = [build_eval_set(synth_split, p, "valid") for p in ("market", "full")]
    model = _config(synth_split, market_ease=False, cooccurrence_days=0.0)
    choice = choose_closed_form(synth_split, model, valid)
    assert choice.cooccurrence_days is None  # given, so not chosen
    assert choice.market_ease_lambda is None  # no market blocks
    assert choice.ease_lambda is not None
    every = tuple(range(len(synth_split.data.markets)))
    items, gram = gram_matrix(synth_split, every)

    def mean_ndcg(lam: float) -> float:
        block = EaseBlock(markets=every, items=items, weights=solve_ease(gram, lam), lam=lam)
        model = Ease("ease", [block])
        return float(np.mean([evaluate(model, v).mean["ndcg@10"] for v in valid]))

    chosen = mean_ndcg(choice.ease_lambda)
    assert chosen == pytest.approx(max(t.valid for t in choice.trials if t.block == "shared"))
    # The baselines' grid, ten points, is no better than the six the search fitted.
    for lam in (2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0):
        assert mean_ndcg(lam) <= chosen + 0.005, lam


def test_settings_given_are_kept_and_the_rest_chosen(synth_split: Split) -> None:
    valid = [build_eval_set(synth_split, "market", "valid")]
    model = _config(synth_split, ease_lambda=33.0)
    assert left_to_choose(model)
    choice = choose_closed_form(synth_split, model, valid)
    assert choice.ease_lambda is None
    assert {t.lam for t in choice.trials if t.block == "shared"} == {33.0}
    assert choice.cooccurrence_days in (0.0, 7.0, 30.0)  # the data has dates
    assert {t.days for t in choice.trials if t.block == "shared"} == {0.0, 7.0, 30.0}
    assert {t.block for t in choice.trials} == {"shared", "markets", "penalty"}
    assert {t.days for t in choice.trials if t.block == "markets"} == {choice.cooccurrence_days}
    assert choice.protocols == ("market",)
    # Every markets' fit was scored at each share of the mix; the chosen pair is the best.
    markets = [t for t in choice.trials if t.block == "markets"]
    assert {t.share for t in markets} == set(MARKET_SHARES)
    assert len(markets) == len(MARKET_SHARES) * len({t.lam for t in markets})
    best = max(markets, key=lambda t: t.valid)
    assert (choice.market_ease_lambda, choice.market_ease_share) == (best.lam, best.share)
    # Then the penalty, every one of PENALTIES on the chosen mix: 0 is that mix as it was.
    penalties = [t for t in choice.trials if t.block == "penalty"]
    assert [t.penalty for t in penalties] == list(PENALTIES)
    assert penalties[0].valid == pytest.approx(best.valid)
    assert choice.popularity_penalty == max(penalties, key=lambda t: t.valid).penalty
    final = resolved(model, choice)
    assert final.popularity_penalty == choice.popularity_penalty
    assert final.ease_lambda == 33.0
    assert final.market_ease_lambda == choice.market_ease_lambda is not None
    assert final.market_ease_share == choice.market_ease_share
    # The model starts from the chosen share, the closed form's weight as INITIAL_MIX's.
    mix = HybridRecommender(final, fit_closed_form(synth_split, Blocks.of(final))).shared_mix
    total = INITIAL_MIX[0] + INITIAL_MIX[1]
    assert mix.tolist() == pytest.approx([total * (1 - best.share), total * best.share, 1.0])
    assert not left_to_choose(final)
    blocks = Blocks.of(final)
    assert [blocks.lambda_of(m) for m in range(3)] == [choice.market_ease_lambda] * 3
    # A market's own lambda is kept when given, whatever the choice.
    given = Blocks.of(replace(final, market_ease_lambdas=(1.0, 2.0, 3.0)))
    assert [given.lambda_of(m) for m in range(3)] == [1.0, 2.0, 3.0]


def test_the_share_is_chosen_with_each_markets_own_lambda_when_given(
    synth_split: Split,
) -> None:
    valid = [build_eval_set(synth_split, "full", "valid")]
    own_lambdas = (1.0, 200.0, 5000.0)
    model = _config(
        synth_split, ease_lambda=20.0, cooccurrence_days=0.0, market_ease_lambdas=own_lambdas
    )
    choice = choose_closed_form(synth_split, replace(model, popularity_penalty=0.0), valid)
    assert choice.settings().keys() == {"market_ease_share"}  # the rest was given
    assert "penalty" not in {t.block for t in choice.trials}
    every = tuple(range(3))

    def ease(markets: tuple[int, ...], lam: float) -> Ease:
        items, gram = gram_matrix(synth_split, markets)
        return Ease(
            "e", [EaseBlock(markets=markets, items=items, weights=solve_ease(gram, lam), lam=lam)]
        )

    shared = ease(every, 20.0)
    own = [ease((m,), own_lambdas[m]) for m in every]

    class Mixed:
        name = "mixed"

        def __init__(self, share: float) -> None:
            self.share = share

        def score(self, histories: Any, candidates: Any, markets: Any) -> Any:
            total = INITIAL_MIX[0] + INITIAL_MIX[1]
            out = total * (1 - self.share) * shared.score(histories, candidates, markets)
            for m in every:  # each market's users, by its own block
                rows = markets == m
                out[rows] += (
                    total
                    * self.share
                    * own[m].score(histories[rows], candidates[rows], markets[rows])
                )
            return out

    trials = [t for t in choice.trials if t.block == "markets"]
    assert {t.share for t in trials} == set(MARKET_SHARES)
    for t in trials:  # scored with the lambdas given, market by market
        assert t.valid == pytest.approx(evaluate(Mixed(t.share), valid[0]).mean["ndcg@10"])


def test_data_without_dates_tries_plain_cooccurrences_only(synth_split: Split) -> None:
    no_dates = replace(synth_split, data=replace(synth_split.data, has_time=False))
    valid = [build_eval_set(no_dates, "market", "valid")]
    choice = choose_closed_form(no_dates, _config(no_dates, market_ease=False), valid)
    assert choice.cooccurrence_days == 0.0
    assert {t.days for t in choice.trials} == {0.0}


def test_a_choice_survives_its_file_and_nothing_chosen_falls_back(
    synth_split: Split, tmp_path: Path
) -> None:
    valid = [build_eval_set(synth_split, "market", "valid")]
    model = _config(synth_split, market_ease=False)
    choice = choose_closed_form(synth_split, model, valid)
    choice.save(tmp_path / "choice.json")
    assert ClosedFormChoice.load(tmp_path / "choice.json") == choice
    given = resolved(model, None)  # nothing chose: the fallbacks, as numbers
    assert given.cooccurrence_days == FALLBACK_DAYS and given.ease_lambda is not None
    assert given.market_ease_share == pytest.approx(1 / 3)  # INITIAL_MIX's


def test_at_most_keeps_that_many_users_of_each_market(synth_split: Split) -> None:
    valid = build_eval_set(synth_split, "market", "valid")
    sizes = np.bincount(valid.market)
    small = at_most(valid, 100)
    assert np.bincount(small.market).tolist() == [min(n, 100) for n in sizes]
    assert set(small.users) <= set(valid.users)
    assert at_most(valid, 10_000) is valid
