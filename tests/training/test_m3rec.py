"""M3Rec: its similarities are what the paper defines, it finds the planted structure,
and a seed fixes its scores."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from training.baselines import Popularity
from training.evaluate import evaluate
from training.item_walks import (
    WalkSettings,
    interaction_matrix,
    intra_similarity,
    random_walks,
    skipgram_pairs,
)
from training.m3rec import M3RecScorer, M3RecSettings, fit_m3rec, market_similarity, user_rows
from training.protocols import build_eval_set
from training.split import Split

SMALL_WALKS = WalkSettings(walks_per_item=4, walk_length=8, window=3, epochs=1, dim=32)
FAST = M3RecSettings(max_epochs=8, eval_every=4, lambdas=(25.0,), gammas=(0.2,), walks=SMALL_WALKS)


@pytest.fixture(scope="module")
def fitted(synth_split: Split) -> M3RecScorer:
    return fit_m3rec(synth_split, FAST)


@pytest.mark.parametrize("split_name", ["valid", "test"])
def test_beats_popularity_on_planted_data(
    synth_split: Split, fitted: M3RecScorer, split_name: str
) -> None:
    eval_set = build_eval_set(synth_split, "market", split_name)
    m3rec = evaluate(fitted, eval_set).mean["ndcg@10"]
    popularity = evaluate(Popularity.fit(synth_split), eval_set).mean["ndcg@10"]
    assert m3rec > popularity + 0.05, (m3rec, popularity)


def test_records_what_it_chose(fitted: M3RecScorer) -> None:
    assert fitted.params["lambda"] == 25.0
    assert fitted.params["gamma"] == 0.2
    assert fitted.params["epochs"] in (4, 8)
    assert fitted.params["kept_similarities"] > 0


def test_same_seed_same_scores(synth_split: Split) -> None:
    tiny = replace(FAST, max_epochs=1, eval_every=1)
    valid = build_eval_set(synth_split, "market", "valid")
    first, again = (evaluate(fit_m3rec(synth_split, tiny), valid) for _ in range(2))
    assert first.markets == again.markets


def test_intra_similarity_filters_small_weights_and_normalises_rows() -> None:
    weights = np.array([[0.0, 0.5, 0.001], [0.2, 0.0, 0.2], [0.0, 0.0, 0.0]], np.float32)
    items = np.array([1, 3, 4])  # local index -> item index
    b = intra_similarity(weights, items, n_items=5, epsilon=0.01).toarray()
    assert b.shape == (5, 5)
    assert b[1, 3] == pytest.approx(1.0)  # 0.5 alone survives in item 1's row
    assert b[1, 4] == 0.0  # 0.001 < epsilon
    assert b[3, 1] == pytest.approx(0.5) and b[3, 4] == pytest.approx(0.5)
    assert not b[4].any()  # nothing kept: an empty row, not a division by zero


def test_market_similarity_keeps_the_markets_items_only() -> None:
    b = sp.csr_matrix(np.array([[0, 0.5, 0.5], [1.0, 0, 0], [0.5, 0.5, 0]], np.float32))
    local = market_similarity(b, np.array([0, 1])).toarray()
    np.testing.assert_allclose(local, [[0, 1.0, 0], [1.0, 0, 0], [0, 0, 0]])


def test_user_rows_fall_back_to_the_users_own_items() -> None:
    similarity = sp.csr_matrix(np.array([[0, 1.0, 0], [0, 0, 0], [0, 0, 0]], np.float32))
    own = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 1]], np.float32))
    rows = user_rows(own, similarity).toarray()
    np.testing.assert_allclose(rows, [[0, 1.0, 0], [0, 0.5, 0.5]])


def test_walks_step_along_cooccurrence_edges(synth_split: Split) -> None:
    x = interaction_matrix(synth_split)
    graph = (x.T @ x).tocsr()
    walks = random_walks(graph, np.random.default_rng(0), SMALL_WALKS)
    assert walks.shape[1] == SMALL_WALKS.walk_length
    here, there = walks[:, :-1].ravel(), walks[:, 1:].ravel()
    assert (np.asarray(graph[here, there]).ravel() > 0).all()
    assert (here != there).all()  # the diagonal (an item with itself) is no edge
    centres, contexts = skipgram_pairs(walks, window=2)
    assert len(centres) == 2 * walks.shape[0] * (2 * walks.shape[1] - 3)
    pairs = set(zip(centres.tolist(), contexts.tolist(), strict=True))
    assert pairs == {(b, a) for a, b in pairs}  # each pair both ways
    assert (int(walks[0, 0]), int(walks[0, 2])) in pairs  # two steps apart: in the window
