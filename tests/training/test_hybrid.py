"""The hybrid: its two scoring paths agree, and each market scores with its own rows."""

from __future__ import annotations

import pytest
import torch

from model_store.vocab import PAD
from training.closed_form import Blocks, fit_closed_form
from training.hybrid import HybridConfig, HybridRecommender
from training.split import Split

BLOCKS = Blocks(global_lambda=50.0, market_lambda=20.0)


@pytest.fixture(scope="module")
def model(synth_split: Split) -> HybridRecommender:
    """A hybrid with random (not trained) learned parts, so every term counts."""
    torch.manual_seed(0)
    closed = fit_closed_form(synth_split, BLOCKS)
    config = HybridConfig(n_items=synth_split.data.items.size, n_markets=3, d_model=16, n_layers=1)
    model = HybridRecommender(config, closed).eval()
    with torch.no_grad():
        for name in ("shared_bias", "market_bias", "market_vectors", "market_mix"):
            model.get_parameter(name).normal_()
        model.market_vectors[model.shared_row] = 0.0  # the shared row stays zero
        model.market_bias[model.shared_row] = 0.0
        model.market_mix[model.shared_row] = 0.0
    return model


def _inputs(n_items: int, b: int, n: int, c: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    history = torch.randint(1, n_items, (b, n), generator=gen)
    history[0] = PAD  # a user without history
    history[1, n // 2 :] = PAD  # a short one
    candidates = torch.randint(1, n_items, (b, c), generator=gen)
    markets = torch.arange(b) % 4  # three markets and the shared row
    return history, candidates, markets


def test_candidate_and_catalogue_scoring_agree(model: HybridRecommender) -> None:
    history, candidates, markets = _inputs(model.config.n_items, 9, 12, 40)
    with torch.no_grad():
        gathered = model.catalogue_logits(history, markets).gather(1, candidates)
        torch.testing.assert_close(model(history, candidates, markets), gathered, atol=1e-5, rtol=0)


def test_markets_score_with_their_own_rows(model: HybridRecommender) -> None:
    history, candidates, _ = _inputs(model.config.n_items, 4, 12, 40)
    with torch.no_grad():
        per_market = [model(history, candidates, torch.full((4,), m)) for m in range(4)]
    assert all((per_market[m] - per_market[3]).abs().max() > 1e-3 for m in range(3))
