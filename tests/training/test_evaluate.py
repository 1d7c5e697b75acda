"""Ranks and metrics against hand-computed values; the evaluate() contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_store.vocab import PAD, IntArray
from training.evaluate import evaluate, evaluate_sets, positive_ranks, ranking_metrics
from training.protocols import build_eval_set
from training.split import Split


def test_rank_counts_ties_against_the_positive_and_skips_padding() -> None:
    candidates = np.array([[5, 6, 7, 8], [5, 6, PAD, PAD], [5, 6, 7, 8]])
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [0.5, 0.4, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0]])
    assert positive_ranks(scores, candidates).tolist() == [3, 1, 4]


def test_metrics_by_hand() -> None:
    m = ranking_metrics(np.array([1, 3, 11]), ks=(5, 10))
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    # NDCG of rank r is 1 / log2(r + 1): rank 1 -> 1, rank 3 -> 1/2, rank 11 -> 0 at K=10.
    assert m["ndcg@5"] == pytest.approx((1 + 0.5) / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 0.5) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 3)
    m = ranking_metrics(np.array([2, 7]), ks=(5,))
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3)) / 2)
    assert set(m) == {"ndcg@5", "recall@5", "mrr"}


class Oracle:
    """Knows the answer: scores column 0 highest."""

    name = "oracle"

    def score(self, histories: IntArray, candidates: IntArray, markets: IntArray) -> np.ndarray:
        scores = np.zeros(candidates.shape)
        scores[:, 0] = 1.0
        return scores


class Constant:
    """Scores everything alike, so every tie goes against the positive."""

    name = "constant"

    def score(self, histories: IntArray, candidates: IntArray, markets: IntArray) -> np.ndarray:
        return np.ones(candidates.shape)


def test_evaluate_perfect_and_worst_models(synth_split: Split) -> None:
    es = build_eval_set(synth_split, "market", "test", seed=0)
    best = evaluate(Oracle(), es)
    assert best.mean["ndcg@10"] == 1.0 and best.mean["mrr"] == 1.0
    worst = evaluate(Constant(), es)
    assert worst.mean["recall@10"] == 0.0
    assert worst.mean["mrr"] == pytest.approx(1 / 100, rel=0.02)  # ranked last of ~100


def test_result_json_schema(synth_split: Split) -> None:
    es = build_eval_set(synth_split, "paper", "valid", seed=0)
    payload = evaluate(Oracle(), es).to_json()
    assert {"model", "protocol", "split", "seed", "markets", "mean"} <= set(payload)
    assert (payload["model"], payload["protocol"], payload["split"]) == ("oracle", "paper", "valid")
    assert set(payload["markets"]) == set(synth_split.data.markets)
    for metrics in [*payload["markets"].values(), payload["mean"]]:
        assert set(metrics) == {"ndcg@10", "recall@10", "ndcg@5", "recall@5", "mrr", "users"}
        assert isinstance(metrics["users"], int)
    assert payload["mean"]["users"] == len(es)


def test_evaluate_rejects_bad_scores(synth_split: Split) -> None:
    es = build_eval_set(synth_split, "market", "test", seed=0)

    class Broken(Constant):
        def score(self, histories: IntArray, candidates: IntArray, markets: IntArray) -> np.ndarray:
            return np.full(candidates.shape, np.nan)

    class Misshapen(Constant):
        def score(self, histories: IntArray, candidates: IntArray, markets: IntArray) -> np.ndarray:
            return np.ones((len(candidates), 3))

    with pytest.raises(ValueError, match="non-finite"):
        evaluate(Broken(), es)
    with pytest.raises(ValueError, match="shape"):
        evaluate(Misshapen(), es)


class UserOracle:
    """Knows each user's test item by user index: evaluate must hand it the right users."""

    name = "user-oracle"

    def __init__(self, answers: IntArray) -> None:
        self.answers = answers  # (U,) the test item of each user

    def score_users(
        self, users: IntArray, histories: IntArray, candidates: IntArray, markets: IntArray
    ) -> np.ndarray:
        return (candidates == self.answers[users][:, None]).astype(np.float32)


def test_evaluate_gives_a_user_scorer_the_users(synth_split: Split) -> None:
    result = evaluate(UserOracle(synth_split.test), build_eval_set(synth_split, "market"))
    assert result.mean["mrr"] == 1.0


class Counting:
    """A scorer with a per-user cost (a whole-catalogue pass): counts its calls."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0
        self.table = np.random.default_rng(0).random((50, 4000)).astype(np.float32)

    def score(self, histories: IntArray, candidates: IntArray, markets: IntArray) -> np.ndarray:
        self.calls += 1
        catalogue = self.table[histories.sum(1) % 50]  # (B, V): depends on the history only
        return np.take_along_axis(catalogue, candidates % 4000, axis=1)


def test_protocols_of_one_split_are_scored_together_with_the_same_results(
    synth_split: Split,
) -> None:
    sets = [build_eval_set(synth_split, p, "valid", seed=0) for p in ("paper", "market", "full")]
    alone, together = Counting(), Counting()
    expected = [evaluate(alone, s).to_json() for s in sets]
    assert [r.to_json() for r in evaluate_sets(together, sets)] == expected
    assert together.calls * 3 == alone.calls  # one call per batch, not one per set and batch
    # Sets of other users (another split) form their own group, results in the given order.
    tests = [build_eval_set(synth_split, p, "test", seed=0) for p in ("market", "full")]
    mixed, tests_alone = Counting(), Counting()
    results = evaluate_sets(mixed, [tests[0], sets[1], tests[1], sets[2]])
    assert [r.to_json() for r in results] == [
        evaluate(Counting(), s).to_json() for s in (tests[0], sets[1], tests[1], sets[2])
    ]
    evaluate_sets(tests_alone, tests)
    assert mixed.calls == together.calls + tests_alone.calls  # two groups, each in one pass
