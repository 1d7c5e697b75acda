"""Choosing pre-training's learning rate: the default stays unless a candidate is better
under every validation protocol."""

from __future__ import annotations

from training.hybrid_stage import choose_lr
from training.runs import StageState


def stage(*, market: float, full: float, best_epoch: int = 2) -> StageState:
    """A finished stage whose best epoch scored ``market`` and ``full``."""
    curve = [
        {"epoch": e, "valid_market": market - 0.1 * (e != best_epoch),
         "valid_full": full - 0.1 * (e != best_epoch)}
        for e in (1, 2, 3)
    ]  # fmt: skip
    return StageState(
        epoch=3, best=(market + full) / 2, best_epoch=best_epoch, curve=curve, done=True
    )


PROTOCOLS = ("market", "full")


def test_the_default_rate_stays_unless_another_is_better_under_every_protocol() -> None:
    default = stage(market=0.59, full=0.45)
    # Better mean, worse under `full` (what a faster rate did on XMarket): not taken.
    trade = stage(market=0.61, full=0.44)
    lr, state = choose_lr([(3e-4, default), (3e-3, trade)], protocols=PROTOCOLS)
    assert (lr, state) == (3e-4, default)
    # Better under both, at its own best epoch (not the default's): taken.
    both = stage(market=0.60, full=0.46, best_epoch=3)
    assert choose_lr([(3e-4, default), (3e-3, both)], protocols=PROTOCOLS) == (3e-3, both)
    # A tie is not better.
    tie = stage(market=0.60, full=0.45)
    assert choose_lr([(3e-4, default), (3e-3, tie)], protocols=PROTOCOLS)[0] == 3e-4


def test_of_several_better_rates_the_best_mean_wins() -> None:
    default = stage(market=0.40, full=0.17)
    small = stage(market=0.41, full=0.18)
    large = stage(market=0.45, full=0.18)
    tried = [(3e-4, default), (1e-3, small), (3e-3, large), (1e-2, stage(market=0.5, full=0.1))]
    assert choose_lr(tried, protocols=PROTOCOLS) == (3e-3, large)
    # One protocol alone: better there is enough.
    assert choose_lr([(3e-4, default), (1e-2, tried[3][1])], protocols=("market",))[0] == 1e-2
