"""Onboarding: a market the served version does not know gets parameters of its own,
learnt from its data alone, while everything the other markets use stays as it is.

The new market m (row M of M + 1 markets; the shared row moves to M + 1) gets:
- its own EASE^R block K_m, fitted on its users (out of fold for training inputs);
- its own rows (market vector, mix and item-bias deltas), trained as in adaptation
  (training/hybrid_train.py) from zero, i.e. from the shared parameters alone.
The shared EASE^R block, the item embeddings, the shared mix and bias, and every
other market's rows are the version's, frozen: the other markets score exactly as
before. Items new to the version get zero embeddings and no shared block row, so
the market's own block and bias alone rank them.

The market's data is split as ``cmr train`` splits (``split_scheme``, ``seed``): early
stopping sees its validation items, and its test items are scored by the onboarded
model beside popularity and EASE^R fitted on the market alone, on identical candidates.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from model_store.store import ModelStore, Version
from training.baselines import evaluate_baselines
from training.closed_form import Blocks, FoldFits, fit_closed_form, fold_fits
from training.config import HybridTrainConfig
from training.data import build_interactions
from training.evaluate import Result, evaluate_sets
from training.export import market_catalogues, publish_version
from training.hybrid import ClosedForm, HybridRecommender
from training.hybrid_examples import UserSets
from training.hybrid_stage import run_hybrid_stage
from training.market_files import MarketLog
from training.predict import HybridScorer
from training.protocols import build_eval_set
from training.runs import StageState, start_run
from training.split import Split, make_split
from training.store_model import StoredHybrid, copy_learned

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Onboarded:
    model: HybridRecommender
    split: Split  # the new market's users only, market indices of the new model
    results: list[Result]  # test split: the onboarded model, popularity, EASE^R
    seconds: float  # from reading the data to the trained model
    stage: StageState  # epochs and the best one (0: the shared rows and own block alone)


def with_market(base: ClosedForm, fit: ClosedForm, *, market: int) -> ClosedForm:
    """``base``'s blocks (every market before ``market``) plus ``fit``'s block of
    ``market``, over ``fit``'s vocabulary (which extends ``base``'s); ``fit``'s dtype."""
    n_items = fit.global_index.shape[0]
    grow = n_items - base.global_index.shape[0]
    global_index = torch.cat([base.global_index, base.global_index.new_full((grow,), -1)])
    old_index = torch.cat(
        [base.market_index[:market], base.market_index.new_full((market, grow), -1)], dim=1
    )
    shared_row = fit.market_index.new_full((1, n_items), -1)
    sizes = base.market_size[:market]
    old_end = int((sizes**2).sum())
    at, size = int(fit.market_offset[market]), int(fit.market_size[market])
    block = fit.market_weights[at : at + size * size]
    return ClosedForm(
        global_index=global_index,
        global_weights=base.global_weights.to(fit.market_weights.dtype),
        market_index=torch.cat([old_index, fit.market_index[market : market + 1], shared_row]),
        market_offset=torch.cat([base.market_offset[:market], torch.tensor([old_end, 0])]),
        market_size=torch.cat([sizes, torch.tensor([size, 0])]),
        market_weights=torch.cat(
            [base.market_weights[:old_end].to(block.dtype), block, block.new_zeros(1)]
        ),
        global_size=base.global_size,
    )


def onboard_market(
    stored: StoredHybrid, market_log: MarketLog, *, cfg: HybridTrainConfig, max_epochs: int
) -> Onboarded:
    """Train the new market's own parameters on ``market_log``; evaluate on its test split."""
    device = start_run(cfg.threads, cfg.seed, cfg.device)
    started = time.perf_counter()
    code = market_log.market
    if code in stored.manifest.markets:
        raise ValueError(
            f"market {code!r} is served by version {stored.manifest.version} already; "
            "retrain it with `cmr train --init-from`"
        )
    m = len(stored.markets)
    alone = build_interactions([market_log], base_items=stored.vocabulary)
    data = replace(alone, markets=(*stored.markets, code), user_market=alone.user_market + m)
    split = make_split(data, cfg.split_scheme, cfg.seed)
    model_cfg = replace(stored.model.config, n_items=data.items.size, n_markets=m + 1)
    # The shared block is the version's; the new market's block takes the L2 of the
    # version's markets (market_ease_lambda), not one of a market's own.
    own = replace(Blocks.of(model_cfg, global_ease=False), market_lambdas=())
    base = stored.model.closed_form
    closed = with_market(base, fit_closed_form(split, own), market=m)
    base32 = replace(base, global_weights=base.global_weights.float())  # converted once
    folds = fold_fits(split, own, folds=cfg.folds, seed=cfg.seed)
    folds = FoldFits(folds.fold, tuple(with_market(base32, f, market=m) for f in folds.fits))
    model = HybridRecommender(model_cfg, closed)
    copy_learned(model, stored, markets=data.markets)
    with torch.no_grad():  # items the version does not know: no embedding of their own
        model.items.weight[stored.model.config.n_items :] = 0.0
    model = model.to(device)
    sets = UserSets.build(split, fold=folds.fold, max_history=model_cfg.max_history)
    valid = [build_eval_set(split, p, "valid", seed=cfg.seed) for p in cfg.valid_protocols]
    with tempfile.TemporaryDirectory() as stage_dir:
        state = run_hybrid_stage(
            f"onboard {code}", model, sets=sets, folds=folds, markets=[m], valid=valid,
            cfg=replace(cfg, adapt_max_epochs=max_epochs), stage_dir=Path(stage_dir),
            shared=False,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    log.info(
        "onboarded %s: %d epochs, best %d, %.0f s", code, state.epoch, state.best_epoch, seconds
    )
    scorer = HybridScorer(f"hybrid-onboarded-{code}", model.cpu().eval())
    protocols = cfg.eval_protocols
    tests = [build_eval_set(split, p, "test", seed=cfg.seed) for p in protocols]
    results = evaluate_sets(scorer, tests)
    baselines = ["popularity", "ease"]  # on the very same test sets
    results += evaluate_baselines(split, baselines, protocols, seed=cfg.seed, targets=tests)
    return Onboarded(model=model, split=split, results=results, seconds=seconds, stage=state)


def publish_onboarded(
    store: ModelStore,
    stored: StoredHybrid,
    onboarded: Onboarded,
    *,
    command: str,
    version: str | None = None,
    promote: bool = True,
) -> Version:
    """The version with the new market added, published (current if ``promote``)."""
    data = onboarded.split.data
    code = data.markets[-1]
    old = stored.manifest
    stage = onboarded.stage
    trained: dict[str, float] = {"epochs": stage.epoch, "best_epoch": stage.best_epoch}
    trained["seconds"] = round(onboarded.seconds, 1)
    metrics = {p: dict(markets) for p, markets in old.metrics.items()}
    for result in onboarded.results:
        if result.model == onboarded.results[0].model:
            metrics.setdefault(result.protocol, {})[code] = result.markets[code]
    manifest = replace(
        old,
        version=version or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-onboard-{code}",
        model=dataclasses.asdict(onboarded.model.config),
        markets={c: m for m, c in enumerate(data.markets)},
        graphs=dict.fromkeys(data.markets, "model.onnx"),
        metrics=metrics,
        # How each onboarded market was trained, beside the recipe of the others.
        train=old.train | {f"onboarded_{code}": trained},
        files={},
        command=command,
        source_run=f"{old.source_run} + onboarded {code} onto version {old.version}",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    catalogues = stored.catalogues | {code: market_catalogues(data)[code]}
    return publish_version(
        store,
        manifest=manifest,
        graphs={"model.onnx": onboarded.model.cpu().eval()},
        vocabulary=data.items,
        catalogues=catalogues,
        promote=promote,
    )
