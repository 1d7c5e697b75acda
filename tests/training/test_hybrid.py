"""The hybrid: its closed form against EASE^R, its two scoring paths, training pieces,
adaptation touching one market only, and `cmr train` end to end on planted structure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cmr.cli import app
from model_store.vocab import PAD
from tests.conftest import train_args
from training.baselines import Ease, EaseBlock, Popularity, gram_matrix, solve_ease
from training.closed_form import Blocks, Cooccurrence, fit_closed_form, fold_fits, weighted_gram
from training.evaluate import evaluate
from training.hybrid import HybridConfig, HybridRecommender
from training.hybrid_train import MARKET_ROWS, hide, masked_softmax_loss
from training.protocols import build_eval_set
from training.recipe import load_hybrid
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


def test_the_closed_form_is_ease(synth_split: Split) -> None:
    closed = fit_closed_form(synth_split, BLOCKS)
    valid = build_eval_set(synth_split, "full", "valid")
    batch = next(valid.batches(64, markets=[1]))
    inputs = (batch.histories, batch.candidates, batch.markets)
    scores = closed.scores(*map(torch.from_numpy, inputs))
    for col, (markets, lam) in enumerate((((0, 1, 2), 50.0), ((1,), 20.0))):
        items, gram = gram_matrix(synth_split, markets)
        ease = Ease("ease", [EaseBlock((1,), items, solve_ease(gram, lam), lam)])
        expected = ease.score(batch.markets, batch.histories, batch.candidates)
        # float16 weights: a few 1e-4 of the largest score
        tolerance = 2e-3 * abs(expected).max()
        np.testing.assert_allclose(scores[:, col].numpy(), expected, atol=tolerance)


def test_cooccurrences_weigh_pairs_by_time_apart(synth_split: Split) -> None:
    assert synth_split.data.has_time
    plain_items, plain = gram_matrix(synth_split, (0, 1, 2))
    items, same = weighted_gram(synth_split, (0, 1, 2), Cooccurrence(days=0.0))
    np.testing.assert_array_equal(items, plain_items)
    np.testing.assert_allclose(same, plain)  # 0 days: every pair counts 1, plain EASE^R
    items, timed = weighted_gram(synth_split, (0, 1, 2), Cooccurrence(days=30.0, floor=0.2))
    np.testing.assert_array_equal(items, plain_items)
    np.testing.assert_allclose(np.diag(timed), np.diag(plain))  # an item with itself: 0 days
    off = ~np.eye(len(items), dtype=bool)
    assert (timed[off] <= plain[off] + 1e-9).all() and (timed[off] >= 0.2 * plain[off] - 1e-9).all()
    assert (timed[off] < plain[off] - 1e-6).any()  # some pairs were bought apart
    assert np.linalg.eigvalsh(timed).min() > -1e-6  # still a Gram matrix: EASE^R's solve holds


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


def test_folds_leave_their_users_out(synth_split: Split) -> None:
    fits = fold_fits(synth_split, BLOCKS, folds=3, seed=0)
    users = np.flatnonzero(fits.fold == 1)
    without = fit_closed_form(synth_split, BLOCKS, users_kept=fits.fold != 1, dtype=torch.float32)
    torch.testing.assert_close(fits.fits[1].global_weights, without.global_weights)
    assert len(users) > 50 and fits.fits[1].global_weights.dtype == torch.float32


def test_hide_hides_some_never_all() -> None:
    items = torch.tensor([[5, 6, 7, 8, 0, 0], [3, 4, 0, 0, 0, 0], [9, 0, 0, 0, 0, 0]])
    items = items.repeat(200, 1)
    hidden = hide(torch.Generator().manual_seed(0), items, 0.3)
    real = items != PAD
    assert not (hidden & ~real).any()  # padding is never a target
    two_or_more = real.sum(1) >= 2
    assert (hidden.sum(1)[two_or_more] >= 1).all()
    assert (hidden.sum(1)[two_or_more] < real.sum(1)[two_or_more]).all()
    assert 0.25 < hidden[::3, :4].float().mean() < 0.45  # about the rate, where it can be


def test_softmax_loss_is_over_allowed_items_only() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    allowed = torch.tensor([[True, True, True, False]])
    items = torch.tensor([[2, 1]])
    hidden = torch.tensor([[True, False]])
    expected = -torch.log_softmax(logits[0, :3], 0)[2]
    torch.testing.assert_close(masked_softmax_loss(logits, allowed, items, hidden), expected)


def test_cmr_train_of_the_hybrid_learns_the_planted_structure(
    synth_dir: Path, synth_split: Split, tiny_run: Path
) -> None:
    run = tiny_run  # the default family with the TINY settings, once per session
    for path in [
        "config.json", "items.json", "train.log", "curves.png", "summary.json",
        "closed_form.safetensors", "pretrained/best.safetensors",
        "markets/aa/best.safetensors", "metrics/market-test.json", "metrics/full-valid.json",
    ]:  # fmt: skip
        assert (run / path).is_file(), path
    assert json.loads((run / "config.json").read_text())["family"] == "hybrid"
    for protocol in ("market", "full"):
        hybrid = json.loads((run / f"metrics/{protocol}-test.json").read_text())
        popularity = evaluate(
            Popularity.fit(synth_split), build_eval_set(synth_split, protocol, "test")
        )
        # The structure is learnable: well above market popularity on identical candidates.
        assert hybrid["mean"]["ndcg@10"] > popularity.mean["ndcg@10"] + 0.1, protocol
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"pretrain", "aa", "bb", "cc"}
    # Adaptation changed each market's own rows and nothing else.
    model = load_hybrid(run, json.loads((run / "config.json").read_text()))
    pretrained = load_file(run / "pretrained/best.safetensors")
    for m, code in enumerate(("aa", "bb", "cc")):
        own = load_file(run / "markets" / code / "best.safetensors")
        assert set(own) == set(MARKET_ROWS)
        for name in MARKET_ROWS:
            torch.testing.assert_close(model.get_parameter(name)[m], own[name])
        # Kept only if it validated better than the pre-trained row (epoch 0).
        stage = json.loads((run / "markets" / code / "stage.json").read_text())
        changed = bool((own["market_bias"] - pretrained["market_bias"][m]).abs().max() > 0)
        assert changed == (stage["best_epoch"] > 0), code
    assert any(s["best_epoch"] > 0 for code, s in summary.items() if code != "pretrain")
    for name, value in pretrained.items():
        if name not in MARKET_ROWS:  # the shared weights are the pre-trained ones
            torch.testing.assert_close(model.get_parameter(name), value)
    for name in MARKET_ROWS:  # the row of markets without parameters of their own
        assert model.get_parameter(name)[model.shared_row].abs().sum() == 0
    # A finished run resumes to the same result without training again.
    before = json.loads((run / "metrics/market-test.json").read_text())
    again = CliRunner().invoke(app, train_args(synth_dir, run))
    assert again.exit_code == 0, again.output
    assert json.loads((run / "metrics/market-test.json").read_text())["mean"] == before["mean"]
