"""What the hybrid learns from: the hidden items and the loss over them."""

from __future__ import annotations

import torch

from model_store.vocab import PAD
from training.hybrid_examples import hide, masked_softmax_loss


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
