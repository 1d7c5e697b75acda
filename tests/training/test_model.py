"""Bert4CMR: both variants, padding, the split attention against a dense reference."""

from __future__ import annotations

import pytest
import torch

from model_store.vocab import PAD
from training.model import MASKED, Bert4CMR, Bert4CMRConfig


def make(paper: bool, **kw: object) -> Bert4CMR:
    torch.manual_seed(0)
    cfg = Bert4CMRConfig(
        n_items=50,
        n_markets=3,
        d_model=16,
        n_layers=2,
        n_heads=4,
        dropout=0.0,
        variant="paper" if paper else "history-once",
        **kw,  # type: ignore[arg-type]
    )
    return Bert4CMR(cfg).eval()


HISTORIES = torch.tensor([[1, 2, 3, PAD], [4, 5, PAD, PAD], [PAD, PAD, PAD, PAD]])
CANDIDATES = torch.tensor([[7, 8, 9], [10, PAD, 11], [12, 13, 14]])
MARKETS = torch.tensor([0, 1, 2])


@pytest.mark.parametrize("paper", [True, False])
def test_candidates_are_scored_independently(paper: bool) -> None:
    model = make(paper)
    together = model(HISTORIES, CANDIDATES, MARKETS)
    alone = torch.cat([model(HISTORIES, CANDIDATES[:, j : j + 1], MARKETS) for j in range(3)], 1)
    assert together.shape == (3, 3)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(together).all()  # the empty history included


@pytest.mark.parametrize("paper", [True, False])
def test_padding_changes_nothing(paper: bool) -> None:
    model = make(paper)
    wider = torch.cat([HISTORIES, torch.zeros(3, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(
        model(wider, CANDIDATES, MARKETS), model(HISTORIES, CANDIDATES, MARKETS)
    )
    # History order does not matter either: no position embedding.
    shuffled = HISTORIES[:, [2, 0, 1, 3]]
    torch.testing.assert_close(
        model(shuffled, CANDIDATES, MARKETS), model(HISTORIES, CANDIDATES, MARKETS)
    )


def test_history_once_equals_dense_masked_attention() -> None:
    """The O(C*N) split attention against full attention over history + candidates with
    the mask it stands for: history sees history, a candidate sees history and itself."""
    model = make(False)
    h = model.embed(HISTORIES, MARKETS)
    c = model.embed(CANDIDATES, MARKETS)
    n, k = HISTORIES.shape[1], CANDIDATES.shape[1]
    tokens = torch.cat([HISTORIES, CANDIDATES], 1)
    is_history = torch.arange(n + k) < n
    sees = is_history[None, :] | (torch.eye(n + k, dtype=torch.bool) & ~is_history[:, None])
    # PAD history keys are hidden; a candidate always sees itself, even a PAD one.
    allowed = sees[None] & ((tokens != PAD) | ~is_history)[:, None, :]
    bias = torch.where(allowed, 0.0, MASKED)[:, None]  # (B, 1, T, T)
    x = torch.cat([h, c], 1)
    for layer in model.layers:
        h, c = layer.forward_split(h, c, model.key_bias(HISTORIES))
        x = layer(x, bias)
    # Rows 0 and 1; row 2's history is empty, its (unused) history outputs differ by design.
    torch.testing.assert_close(torch.cat([h, c], 1)[:2], x[:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c[2], x[2, n:], atol=1e-5, rtol=1e-5)


def test_market_embedding_switch() -> None:
    with_markets = make(True)
    other_market = torch.tensor([1, 2, 0])
    assert not torch.allclose(
        with_markets(HISTORIES, CANDIDATES, MARKETS),
        with_markets(HISTORIES, CANDIDATES, other_market),
    )
    without = make(True, market_embedding=False)
    assert without.markets is None
    torch.testing.assert_close(
        without(HISTORIES, CANDIDATES, MARKETS), without(HISTORIES, CANDIDATES, other_market)
    )


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        Bert4CMR(Bert4CMRConfig(n_items=5, n_markets=1, d_model=10, n_heads=4))
