"""The hybrid: its two scoring paths agree, each market scores with its own rows, two
networks summed side by side score as the weighted sum of the two models, and a network
scaled in the mix scales its term of the logits alone."""

from __future__ import annotations

import pytest
import torch

from model_store.vocab import PAD
from training.closed_form import Blocks, fit_closed_form
from training.hybrid import HybridConfig, HybridRecommender, scaled_network, summed_networks
from training.split import Split

BLOCKS = Blocks(global_lambda=50.0, market_lambda=20.0)


@pytest.fixture(scope="module")
def model(synth_split: Split) -> HybridRecommender:
    return _random_model(synth_split, seed=0, n_layers=1)


def _random_model(split: Split, *, seed: int, n_layers: int = 0) -> HybridRecommender:
    """A hybrid with random (not trained) learned parts, so every term counts."""
    torch.manual_seed(seed)
    closed = fit_closed_form(split, BLOCKS)
    config = HybridConfig(n_items=split.data.items.size, n_markets=3, d_model=16, n_layers=n_layers)
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


def test_summed_networks_score_as_the_weighted_sum_of_the_two_models(synth_split: Split) -> None:
    first, second = (_random_model(synth_split, seed=s) for s in (1, 2))
    with torch.no_grad():  # the networks' mixes in one ratio in every market: exact
        for m in (first, second):
            m.shared_mix.copy_(torch.rand(3) * 5)
            m.market_mix[:, 2] = 0.0
    weights = summed_networks(
        {n: p.detach() for n, p in first.named_parameters()},
        {n: p.detach() for n, p in second.named_parameters()},
        weight=0.7,
    )
    config = HybridConfig(**{**vars(first.config), "networks": 2})
    summed = HybridRecommender(config, first.closed_form).eval()
    with torch.no_grad():
        for name, value in weights.items():
            summed.get_parameter(name).copy_(value)
        history, candidates, markets = _inputs(first.config.n_items, 9, 12, 40)
        expected = 0.7 * first(history, candidates, markets) + 0.3 * second(
            history, candidates, markets
        )
        torch.testing.assert_close(
            summed(history, candidates, markets), expected, atol=1e-4, rtol=1e-5
        )
    assert summed.items.weight.shape[1] == 2 * first.items.weight.shape[1]


def test_a_scaled_network_scales_the_network_term_alone(model: HybridRecommender) -> None:
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    history, candidates, markets = _inputs(model.config.n_items, 9, 12, 40)

    def logits(scale: float) -> torch.Tensor:
        scaled = HybridRecommender(model.config, model.closed_form).eval()
        for name, value in scaled_network(weights, scale).items():
            scaled.get_parameter(name).detach().copy_(value)
        with torch.no_grad():
            return scaled(history, candidates, markets)

    whole, none, half = logits(1.0), logits(0.0), logits(0.5)
    assert (whole - none).abs().max() > 1e-2  # the network counts
    torch.testing.assert_close(half, (whole + none) / 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights["shared_mix"], model.shared_mix.detach())  # not in place
