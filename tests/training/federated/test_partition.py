"""A client's share of the split: its users only, and the very candidates central
evaluation ranks for them; a deployed client's split from its own file alone is that
share."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from training.data import load_interactions
from training.federated.partition import market_split, own_split
from training.federated.shared import SharedInfo
from training.market_files import find_market_files
from training.protocols import build_eval_set
from training.split import Scheme, Split, make_split


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


@pytest.mark.parametrize("scheme", ["random", "temporal"])
def test_a_market_split_from_its_own_file_is_its_share_of_the_central_split(
    synth_dir: Path, tmp_path: Path, scheme: Scheme
) -> None:
    data = load_interactions(synth_dir)
    central = make_split(data, scheme, seed=5)
    shared = SharedInfo.from_data(data)
    shared.save(tmp_path / "shared.json")
    shared = SharedInfo.load(tmp_path / "shared.json")
    for code, path in find_market_files(synth_dir).items():
        own = own_split(path, code, shared, scheme=scheme, seed=5)
        share = market_split(central, data.markets.index(code))
        for field in fields(Split):
            mine, theirs = getattr(own, field.name), getattr(share, field.name)
            if field.name == "data":
                for part in fields(mine):
                    assert same(getattr(mine, part.name), getattr(theirs, part.name)), part
            else:
                assert same(mine, theirs), (code, field.name)


def same(a: object, b: object) -> bool:
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else a == b
