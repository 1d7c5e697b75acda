"""What a request asks of a loaded version (fakes): known history, candidates,
popularity and the top k."""

from __future__ import annotations

import numpy as np

from service.graphs import best_first
from tests.service.fakes import fake_version


def test_known_history_drops_unknown_items_and_keeps_the_most_recent() -> None:
    loaded = fake_version(items=120)
    ids = [f"I{i:05d}" for i in range(1, 61)] + ["never-seen"]
    known = loaded.known_history(ids)
    assert known.tolist() == list(range(11, 61))  # max_history 50, oldest first


def test_candidates_are_known_unique_in_order_and_exclude_seen_on_request() -> None:
    loaded = fake_version(items=10)
    model = loaded.markets["aa"]
    seen = np.array([2, 3])
    asked = ["I00003", "I00001", "x", "I00001", "I00005"]
    got = model.candidates(loaded.vocabulary, asked, seen=seen, exclude_seen=True)
    assert got.tolist() == [1, 5]
    got = model.candidates(loaded.vocabulary, asked, seen=seen, exclude_seen=False)
    assert got.tolist() == [3, 1, 5]
    whole = model.candidates(loaded.vocabulary, None, seen=seen, exclude_seen=True)
    assert whole.tolist() == [1, 4, 5, 6, 7, 8, 9, 10]


def test_popularity_is_each_candidates_share_and_zero_for_unsold_items() -> None:
    loaded = fake_version(items=4)  # counts 4, 3, 2, 1 for items 1..4
    scores = loaded.markets["aa"].popularity(np.array([4, 1, 99]))
    np.testing.assert_allclose(scores, [0.1, 0.4, 0.0])


def test_top_k_is_highest_first_and_ties_keep_the_candidates_order() -> None:
    loaded = fake_version(items=5)
    ranked = loaded.top_k(np.array([5, 3, 1, 2]), np.array([0.5, 0.9, 0.5, 0.1], "f4"), 3)
    assert ranked == [("I00003", 0.8999999761581421), ("I00005", 0.5), ("I00001", 0.5)]


def test_best_first_over_a_catalogue_is_the_full_stable_sort() -> None:
    """Long score lists take the partition path; with many ties at the k-th score it
    must still give the full sort's order."""
    rng = np.random.default_rng(0)
    for trial in range(200):
        n, k = int(rng.integers(50, 3000)), int(rng.integers(1, 12))
        if trial % 2:
            scores = rng.integers(0, 8, size=n).astype(np.float32)  # ties everywhere
        else:
            scores = rng.standard_normal(n).astype(np.float32)
        expected = np.argsort(-scores, kind="stable")[:k]
        assert best_first(scores, k).tolist() == expected.tolist()
