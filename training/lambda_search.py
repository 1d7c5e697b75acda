"""The search for a closed-form block's L2 (lambda) on validation.

A block's validation score against lambda is one broad peak: lambdas 4x apart find
it, 2x apart around the best refine it. Large lambdas shrink a block towards zero;
past the peak the score falls to a plateau where more only switches the block off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

COARSE_LAMBDAS = (10.0, 40.0, 160.0, 640.0)
MIN_LAMBDA, MAX_LAMBDA = 0.5, 50_000.0
FLAT = 1e-3  # a relative change below this, past the largest lambda tried: a plateau


def search_lambda(
    score: Callable[[float], float],
    *,
    coarse: Sequence[float] = COARSE_LAMBDAS,
    seen: dict[float, float] | None = None,
) -> tuple[float, float]:
    """The best lambda for ``score`` (higher is better) and its score: ``coarse``,
    extended by 4x while the best is at an edge (upwards, a plateau within FLAT ends the
    search), then the best's neighbours 2x apart.
    ``seen``: lambdas scored already (not scored again); filled in."""
    seen = {} if seen is None else seen

    def at(lam: float) -> float:
        if lam not in seen:
            seen[lam] = score(lam)
        return seen[lam]

    for lam in coarse:
        at(lam)
    while True:
        best = max(seen, key=seen.__getitem__)
        lowest, highest = min(seen), max(seen)
        if best == lowest and best / 4 >= MIN_LAMBDA:
            at(best / 4)
        elif best == highest and best * 4 <= MAX_LAMBDA:
            # A block's weights shrink towards zero as lambda grows: where 4x more changes
            # the score by less than FLAT, the curve is a plateau; larger lambdas only
            # switch the block off further. Stop there.
            if abs(at(best * 4) - seen[best]) <= FLAT * abs(seen[best]):
                return best, seen[best]
        else:
            break
    best = max(seen, key=seen.__getitem__)
    for lam in (best / 2, best * 2):
        if MIN_LAMBDA <= lam <= MAX_LAMBDA:
            at(lam)
    best = max(seen, key=seen.__getitem__)
    return best, seen[best]
