"""A client's share of the split: its users only, and the very candidates central
evaluation ranks for them."""

from __future__ import annotations

import numpy as np

from training.federated.partition import market_split
from training.protocols import build_eval_set
from training.split import Split


def test_a_market_share_holds_its_users_and_the_same_candidates(synth_split: Split) -> None:
    data = synth_split.data
    for m in range(len(data.markets)):
        part = market_split(synth_split, m)
        assert (part.data.user_market == m).all()
        assert part.data.n_users == int((data.user_market == m).sum())
        assert len(part.train_items) == int(
            np.diff(synth_split.train_ptr)[data.user_market == m].sum()
        )
        for protocol in ("market", "full", "paper"):
            central = build_eval_set(synth_split, protocol, "test", seed=3)
            own = build_eval_set(part, protocol, "test", seed=3)
            rows = central.market_rows(m)
            assert (own.positive == central.positive[rows]).all()
            assert (own.negatives == central.negatives[rows]).all()
            for r in range(len(own)):
                assert (own.history(r) == central.history(rows.start + r)).all()
