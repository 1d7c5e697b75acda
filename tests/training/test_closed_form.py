"""The hybrid's closed form: EASE^R's blocks, pairs weighed by time apart, out-of-fold fits."""

from __future__ import annotations

import numpy as np
import torch

from training.baselines import Ease, EaseBlock, gram_matrix
from training.closed_form import Blocks, Cooccurrence, fit_closed_form, fold_fits, weighted_gram
from training.linalg import solve_ease
from training.protocols import build_eval_set
from training.split import Split

BLOCKS = Blocks(global_lambda=50.0, market_lambda=20.0)


def test_the_closed_form_is_ease(synth_split: Split) -> None:
    closed = fit_closed_form(synth_split, BLOCKS)
    valid = build_eval_set(synth_split, "full", "valid")
    batch = next(valid.batches(64, markets=[1]))
    inputs = (batch.histories, batch.candidates, batch.markets)
    scores = closed.scores(*map(torch.from_numpy, inputs))
    for col, (markets, lam) in enumerate((((0, 1, 2), 50.0), ((1,), 20.0))):
        items, gram = gram_matrix(synth_split, markets)
        block = EaseBlock(markets=(1,), items=items, weights=solve_ease(gram, lam), lam=lam)
        expected = Ease("ease", [block]).score(batch.histories, batch.candidates, batch.markets)
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


def test_folds_leave_their_users_out(synth_split: Split) -> None:
    fits = fold_fits(synth_split, BLOCKS, folds=3, seed=0)
    users = np.flatnonzero(fits.fold == 1)
    without = fit_closed_form(synth_split, BLOCKS, users_kept=fits.fold != 1, dtype=torch.float32)
    torch.testing.assert_close(fits.fits[1].global_weights, without.global_weights)
    assert len(users) > 50 and fits.fits[1].global_weights.dtype == torch.float32


def test_the_popularity_penalty_divides_each_column_by_its_items_count(
    synth_split: Split,
) -> None:
    plain = fit_closed_form(synth_split, BLOCKS, dtype=torch.float32)
    penalty = 0.2
    blocks = Blocks(global_lambda=50.0, market_lambda=20.0, popularity_penalty=penalty)
    penalised = fit_closed_form(synth_split, blocks, dtype=torch.float32)
    _, gram = gram_matrix(synth_split, (0, 1, 2))
    counts = np.diag(gram)
    n = len(counts)
    expected = plain.global_weights.numpy().reshape(n, n) / counts[None, :] ** penalty
    got = penalised.global_weights.numpy().reshape(n, n)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    # A popular item's column shrinks more than a rare one's.
    ratio = np.abs(got).sum(0) / np.abs(plain.global_weights.numpy().reshape(n, n)).sum(0)
    assert ratio[counts.argmax()] < ratio[counts.argmin()]
    # The markets' blocks too, each by its own counts.
    assert not torch.allclose(penalised.market_weights, plain.market_weights)
