"""Popularity and EASE^R: the closed form, the counts, and that they find planted structure."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.vocab import PAD
from training.baselines import EaseBlock, Popularity, evaluate_baselines
from training.linalg import solve_ease
from training.split import Split


def test_ease_closed_form_matches_textbook_inverse() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((40, 12)) < 0.3).astype(np.float64)
    gram, lam = x.T @ x, 5.0
    p = np.linalg.inv(gram + lam * np.eye(12))
    expected = np.eye(12) - p / np.diag(p)  # B = I - P diag(1/diag(P))
    b = solve_ease(gram, lam)
    np.testing.assert_allclose(b, expected, atol=1e-5)
    assert np.all(np.diag(b) == 0)


def test_ease_block_scores_sum_weights_of_history_items() -> None:
    weights = np.array([[0, 1, 2], [3, 0, 4], [5, 6, 0]], np.float32)
    block = EaseBlock(markets=(0,), items=np.array([10, 20, 30]), weights=weights, lam=1.0)
    histories = np.array([[10, 30, PAD], [20, 20, 99]])  # 99 is unknown to the block
    candidates = np.array([[20, 10, 77], [30, 10, PAD]])
    scores = block.score(histories, candidates)
    # user 0: rows 10 and 30 -> [5, 7, 2]; user 1: row 20 once -> [3, 0, 4]
    assert scores.tolist() == [[7.0, 5.0, 0.0], [4.0, 3.0, 0.0]]


def test_popularity_counts_training_rows_per_market(synth_split: Split) -> None:
    pop = Popularity.fit(synth_split, per_market=True)
    everywhere = Popularity.fit(synth_split, per_market=False)
    market = synth_split.data.user_market[synth_split.train_users()]
    item = int(synth_split.train_items[0])
    for m in range(len(synth_split.data.markets)):
        assert pop.counts[m, item] == np.sum((synth_split.train_items == item) & (market == m))
    assert everywhere.counts[0, item] == np.sum(synth_split.train_items == item)
    scores = pop.score(np.zeros((2, 1), np.int64), np.array([[item], [item]]), np.array([0, 1]))
    assert scores[:, 0].tolist() == [pop.counts[0, item], pop.counts[1, item]]


def test_baselines_find_the_planted_structure(synth_split: Split) -> None:
    """Synthetic markets have own tastes and shared topics: the order must show it."""
    results = evaluate_baselines(
        synth_split,
        ["popularity", "global-popularity", "ease", "ease-per-market"],
        ["market"],
        grid=(10.0, 100.0),
    )
    ndcg = {r.model: r.mean["ndcg@10"] for r in results}
    assert ndcg["ease"] > ndcg["popularity"] + 0.1
    assert ndcg["popularity"] > ndcg["global-popularity"]
    # The starved market gains most from the other markets' data.
    by_market = {r.model: r.markets for r in results}
    assert by_market["ease"]["cc"]["ndcg@10"] > by_market["ease-per-market"]["cc"]["ndcg@10"]
    ease = next(r for r in results if r.model == "ease")
    assert ease.params["lambda"] in (10.0, 100.0)
    per_market = next(r for r in results if r.model == "ease-per-market")
    assert set(per_market.params["lambda"]) == set(synth_split.data.markets)


def test_unknown_baseline_is_refused(synth_split: Split) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        evaluate_baselines(synth_split, ["bert"], ["market"])
