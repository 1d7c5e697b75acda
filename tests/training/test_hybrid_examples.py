"""What the hybrid learns from: the hidden items and the loss over them; a batch's loss
is the sum of its shares' (processes, training/hybrid_epoch.py), whatever the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_store.vocab import PAD
from training.closed_form import Blocks, fold_fits
from training.config import HybridTrainConfig
from training.distributed import ONE, Ranks
from training.hybrid import HybridConfig, HybridRecommender
from training.hybrid_epoch import EpochData, HybridStep, batch_loss
from training.hybrid_examples import UserSets, hide, masked_softmax_loss
from training.semantics import ItemSemantics
from training.split import Split


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
    torch.testing.assert_close(
        masked_softmax_loss(logits, allowed=allowed, items=items, hidden=hidden), expected
    )


@pytest.mark.parametrize("loss", ["softmax", "bce", "s2ce"])
def test_the_shares_of_a_batch_add_up_to_its_loss(synth_split: Split, loss: str) -> None:
    fits = fold_fits(synth_split, Blocks(global_lambda=50.0, market_lambda=20.0), folds=2, seed=0)
    sets = UserSets.build(synth_split, fold=fits.fold, max_history=20)
    data = EpochData.build(sets, fits, markets=[0, 1, 2], split=synth_split)
    n_items = synth_split.data.items.size
    torch.manual_seed(0)
    config = HybridConfig(n_items=n_items, n_markets=3, d_model=8, dropout=0.0)
    step = HybridStep(HybridRecommender(config, fits.fits[0]))
    cfg = HybridTrainConfig(loss="bce" if loss == "bce" else "softmax", negatives=3)
    semantics = None
    if loss == "s2ce":
        gen = torch.Generator().manual_seed(2)
        semantics = ItemSemantics(
            neighbours=torch.randint(1, n_items, (n_items, 3), generator=gen),
            weights=torch.full((n_items, 3), 1 / 3), alpha=0.3,
        )  # fmt: skip
    keys = (sets.fold * 1000 + sets.market).numpy()
    batch = np.flatnonzero(keys == keys[0])[:7]  # one fold and market, 3 uneven shares

    def loss_of(ranks: Ranks) -> torch.Tensor:
        rng = torch.Generator().manual_seed(1)  # every rank draws alike
        return batch_loss(
            step, batch, data=data, cfg=cfg, rng=rng, ranks=ranks, semantics=semantics
        )

    whole = loss_of(ONE)
    whole.backward()
    expected = {n: p.grad.clone() for n, p in step.named_parameters() if p.grad is not None}
    step.zero_grad()
    shares = sum(loss_of(Ranks(rank=r, world=3)) for r in range(3))
    assert isinstance(shares, torch.Tensor)
    shares.backward()  # the gradient DDP's (scaled) average makes of the shares'
    torch.testing.assert_close(shares, whole)
    assert whole.isfinite() and whole > 0 and expected
    for name, grad in expected.items():
        torch.testing.assert_close(step.get_parameter(name).grad, grad, msg=name)
