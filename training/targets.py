"""What ``cmr evaluate`` ranks: the protocols' candidate sets, or a candidate file's,
cut down to what an exported store version can score.

Every model in one run is evaluated on the sets this returns, so their rows line up.
``None`` in place of the sets means "the protocols' own", built by each model's run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from training.candidate_file import load_candidate_set
from training.protocols import EvalSet, Protocol, build_eval_set
from training.split import Split, SplitName

if TYPE_CHECKING:  # onnxruntime loads only when a store is evaluated
    from training.store_scorer import StoreScorer


def evaluation_targets(
    split: Split,
    *,
    protocols: Sequence[Protocol],
    split_name: SplitName,
    seed: int,
    candidates: Path | None = None,
    held_out: Path | None = None,
    market: str | None = None,
    store: StoreScorer | None = None,
) -> tuple[list[EvalSet] | None, list[Counter[str]]]:
    """The sets to rank (one per protocol, or the file's one) and, for each, the rows
    skipped and why."""
    if (candidates is None) != (held_out is None):
        raise ValueError("--candidates and --held-out go together")
    if candidates is None and market is not None:
        raise ValueError("--market only applies with --candidates")
    if candidates is not None and len(protocols) > 1:
        raise ValueError("with --candidates, give at most one --protocol")
    targets: list[EvalSet] | None = None
    skips = [Counter[str]() for _ in protocols]
    if candidates is not None and held_out is not None:
        target, skips[0] = load_candidate_set(
            split,
            candidates=candidates,
            held_out=held_out,
            split_name=split_name,
            market=market,
            seed=seed,
        )
        targets = [target]
    if store is not None:
        from training.store_scorer import restrict_to_store

        # Every model ranks only what the store can score, so the rows line up.
        targets = targets or [build_eval_set(split, p, split_name, seed=seed) for p in protocols]
        restricted = [restrict_to_store(t, store) for t in targets]
        targets = [t for t, _ in restricted]
        skips = [s + dropped for s, (_, dropped) in zip(skips, restricted, strict=True)]
    return targets, skips
