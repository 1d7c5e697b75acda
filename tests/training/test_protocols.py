"""Candidates per protocol: never a known item, the right pool, identical for all models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.vocab import PAD, IntArray
from training.data import load_interactions
from training.evaluate import evaluate
from training.protocols import N_NEGATIVES, PROTOCOLS, EvalSet, build_eval_set
from training.split import Split, make_split


def known_items(eval_set: EvalSet, row: int) -> set[int]:
    return set(eval_set.history(row).tolist())


@pytest.mark.parametrize("protocol", ["paper", "market"])
@pytest.mark.parametrize("split_name", ["valid", "test"])
def test_sampled_negatives(xmarket_split: Split, protocol: str, split_name: str) -> None:
    es = build_eval_set(xmarket_split, protocol, split_name, seed=0)  # type: ignore[arg-type]
    data = xmarket_split.data
    catalogues = [set(c.tolist()) for c in es.catalogues]
    outside_market = 0
    for row in range(len(es)):
        negatives = es.negatives[row]
        assert len(set(negatives.tolist())) == N_NEGATIVES  # distinct, none padded here
        assert es.positive[row] not in negatives
        assert not known_items(es, row) & set(negatives.tolist())
        # Nothing the user interacted with is a negative: training, validation or test item.
        user = int(es.users[row])
        interacted = {
            *xmarket_split.history(user).tolist(),
            *(xmarket_split.valid[user], xmarket_split.test[user]),
        }
        assert interacted.isdisjoint(negatives.tolist())
        in_market = set(negatives.tolist()) <= catalogues[int(es.market[row])]
        if protocol == "market":
            assert in_market
        outside_market += not in_market
    if protocol == "paper":
        # The global pool: most users get items their market never sold.
        assert outside_market > len(es) // 2
        assert es.negatives.max() < data.items.size


def test_test_history_includes_validation_item(xmarket_split: Split) -> None:
    es = build_eval_set(xmarket_split, "market", "test", seed=0)
    for row in range(0, len(es), 97):
        user = int(es.users[row])
        assert es.history(row)[-1] == xmarket_split.valid[user]
        assert xmarket_split.valid[user] not in es.negatives[row]


@pytest.mark.parametrize("split_name", ["valid", "test"])
def test_full_protocol_ranks_catalogue_minus_known(xmarket_split: Split, split_name: str) -> None:
    es = build_eval_set(xmarket_split, "full", split_name, seed=0)  # type: ignore[arg-type]
    for market in range(len(es.markets)):
        rows = es.market_rows(market)
        rows = slice(rows.start, min(rows.start + 5, rows.stop))
        cands = es.candidates(rows)
        for r, row in enumerate(range(rows.start, rows.stop)):
            present = set(cands[r, 1:].tolist()) - {PAD}
            user = int(es.users[row])
            interacted = {
                *xmarket_split.history(user).tolist(),
                xmarket_split.valid[user],
                xmarket_split.test[user],
            }
            assert present == set(es.catalogues[market].tolist()) - interacted
            assert cands[r, 0] == es.positive[row]


def test_same_seed_same_candidates(xmarket_split: Split) -> None:
    a = build_eval_set(xmarket_split, "paper", "test", seed=3)
    b = build_eval_set(xmarket_split, "paper", "test", seed=3)
    c = build_eval_set(xmarket_split, "paper", "test", seed=4)
    assert np.array_equal(a.negatives, b.negatives)
    assert not np.array_equal(a.negatives, c.negatives)


class Recorder:
    """A scorer that remembers every candidate matrix it was shown."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.seen: list[IntArray] = []
        self.rng = np.random.default_rng(seed)

    def score(self, histories: IntArray, candidates: IntArray, markets: IntArray) -> np.ndarray:
        self.seen.append(candidates.copy())
        return self.rng.random(candidates.shape)


def rows_by_width(seen: list[IntArray]) -> dict[int, IntArray]:
    """Candidate rows in the order scored, grouped by width (one width per market under full)."""
    groups: dict[int, list[IntArray]] = {}
    for cands in seen:
        groups.setdefault(cands.shape[1], []).append(cands)
    return {width: np.concatenate(parts) for width, parts in groups.items()}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_model_sees_identical_candidates(synth_split: Split, protocol: str) -> None:
    es = build_eval_set(synth_split, protocol, "test", seed=0)  # type: ignore[arg-type]
    first, second = Recorder("a", 1), Recorder("b", 2)
    evaluate(first, es)
    evaluate(second, es, batch_size=64)  # other chunks, same users and candidates
    a, b = rows_by_width(first.seen), rows_by_width(second.seen)
    assert a.keys() == b.keys()
    for width in a:
        assert np.array_equal(a[width], b[width])
    assert sum(len(rows) for rows in a.values()) == len(es)


def test_small_pool_is_padded(tmp_path: Path) -> None:
    # Market "de" sells 6 items; each user has 4 of them: 2 remain as negatives.
    rows = ["user item"] + [f"u{k} {i}" for k in range(3) for i in "ABCDEF"[k : k + 4]]
    (tmp_path / "de.txt").write_text("\n".join(rows) + "\n")
    split = make_split(load_interactions(tmp_path), "random", seed=0)
    es = build_eval_set(split, "market", "valid", seed=0)
    for row in range(len(es)):
        negatives = es.negatives[row]
        assert (negatives != PAD).sum() == 2
        user = int(es.users[row])
        all_items = {*known_items(es, row), int(split.valid[user]), int(split.test[user])}
        assert set(negatives[negatives != PAD].tolist()).isdisjoint(all_items)
