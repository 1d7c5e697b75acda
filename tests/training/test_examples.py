"""Training examples: no target in its own history, honest negatives, complete batches."""

from __future__ import annotations

import numpy as np

from model_store.vocab import PAD
from training.examples import NegativeSampler, batches, build_examples
from training.split import Split


def test_history_never_holds_its_target(xmarket_split: Split) -> None:
    ex = build_examples(xmarket_split, max_history=50)
    assert len(ex) == sum(
        len(xmarket_split.history(u))
        for u in range(xmarket_split.data.n_users)
        if len(xmarket_split.history(u)) >= 2
    )
    assert not (ex.history == ex.target[:, None]).any()
    assert ((ex.history != PAD).sum(1) == ex.length).all()
    for row in range(0, len(ex), 1013):
        user_items = xmarket_split.history(int(ex.user[row]))
        others = user_items[user_items != ex.target[row]][-50:]  # the most recent others
        assert ex.history[row, : ex.length[row]].tolist() == others.tolist()


def test_long_histories_keep_the_most_recent(synth_split: Split) -> None:
    ex = build_examples(synth_split, max_history=3)
    assert ex.history.shape[1] == 3 and ex.length.max() == 3
    row = int(np.flatnonzero(ex.user == ex.user[0])[0])  # the user's oldest item as target
    items = synth_split.history(int(ex.user[row]))
    assert ex.target[row] == items[0]
    assert ex.history[row].tolist() == items[-3:].tolist()


def test_examples_of_chosen_markets_only(synth_split: Split) -> None:
    ex = build_examples(synth_split, markets=[1])
    assert set(ex.market.tolist()) == {1}


def test_negatives_are_unbought_items_of_the_market(synth_split: Split) -> None:
    ex = build_examples(synth_split)
    sampler = NegativeSampler(synth_split, pool="market")
    negatives = sampler.sample(np.random.default_rng(0), ex, k=4)
    catalogues = [set(synth_split.data.market_items(m).tolist()) for m in range(3)]
    for row in range(len(ex)):
        bought = set(synth_split.history(int(ex.user[row])).tolist())
        drawn = set(negatives[row].tolist())
        assert PAD not in drawn
        assert drawn.isdisjoint(bought)
        assert drawn <= catalogues[int(ex.market[row])]
    again = sampler.sample(np.random.default_rng(1), ex, k=4)
    assert not np.array_equal(negatives, again)  # re-sampled each epoch


def test_batches_cover_every_example_once_with_little_padding(synth_split: Split) -> None:
    ex = build_examples(synth_split)
    negatives = np.arange(len(ex) * 4).reshape(-1, 4) + 10_000  # traceable stand-ins
    seen, padded, total = [], 0, 0
    for batch in batches(np.random.default_rng(0), ex, negatives, batch_size=64):
        seen += ((batch.candidates[:, 1] - 10_000) // 4).tolist()
        padded += int((batch.histories == PAD).sum())
        total += batch.histories.size
    assert sorted(seen) == list(range(len(ex)))
    assert padded / total < 0.05  # bucketing by length
