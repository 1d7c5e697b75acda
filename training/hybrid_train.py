"""Training the hybrid: closed form once, then the network on all markets, then each market.

0. The closed form's settings the recipe leaves open are chosen on the validation
   split (training/closed_form_choice.py; closed_form_choice.json).
1. EASE^R blocks (training/closed_form.py): the served ones from every training
   user, and out-of-fold ones that give training users their closed-form scores.
2. Pre-training on every market: each epoch hides a random ``mask_rate`` of each
   user's training items, and the model predicts the hidden ones from the rest
   (training/hybrid_examples.py). Every parameter learns, each market's own rows
   included. It runs at ``lr``, then goes on at each of ``lr_candidates``, and keeps
   one (training/hybrid_stage.py).
3. Adaptation, per market: only that market's own rows (mix and item-bias deltas,
   market vector) go on learning, on the market alone; the rest is frozen.
4. With ``refit`` (the default), once the run is evaluated, the closed form is fitted
   again on every row: closed_form_refit.safetensors, what `cmr export` publishes.

Both stages stop early on the validation metric of their markets (mean of
``valid_metric`` over ``valid_protocols``) and keep their best weights. Its settings
are ``HybridTrainConfig`` (training/config.py). With ``nproc`` > 1 (``cmr train
--nproc``) the stages run data-parallel in that many processes (training/distributed.py,
training/hybrid_epoch.py), from the closed form this process fitted once. A run folder holds
closed_form.safetensors, pretrain-trials/lr-<rate>/, pretrained/ (the chosen trial) and
markets/<code>/ (best.safetensors, stage.json), metrics/, train.log, curves.png,
summary.json.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from training.closed_form import (
    CLOSED_FORM_FILE,
    REFIT_FILE,
    Blocks,
    FoldFits,
    fit_closed_form,
    fold_fits,
    load_closed_form,
    refit_closed_form,
)
from training.closed_form_choice import choice_of_run, resolved
from training.config import HybridTrainConfig
from training.data import load_interactions
from training.distributed import ONE, Ranks, launch
from training.evaluate import Result
from training.hybrid import ClosedForm, HybridConfig, HybridRecommender
from training.hybrid_examples import UserSets
from training.hybrid_stage import PRETRAINED, learned, pretrain, run_hybrid_stage
from training.network_choice import kept_scale
from training.predict import HybridScorer
from training.protocols import EvalSet, build_eval_set
from training.runs import (
    LOG_FILE,
    StageState,
    finish_run,
    record_chosen,
    start_run,
    write_config,
)
from training.split import make_split
from training.store_model import WarmStart, copy_learned

log = logging.getLogger(__name__)


def hybrid_name(model: HybridConfig, cfg: HybridTrainConfig) -> str:
    """hybrid, plus what is switched off (ablations) or changed in kind."""
    parts = ["hybrid"]
    parts += [] if model.neural else ["no-network"]
    parts += [] if model.global_ease else ["no-shared-ease"]
    parts += [] if model.market_ease else ["no-market-ease"]
    parts += [] if cfg.adapt else ["no-adapt"]
    parts += [] if cfg.loss == "softmax" else [f"{cfg.loss}-{cfg.negatives}"]
    return "-".join(parts)


@dataclass(frozen=True, kw_only=True)
class _Stages:
    """Everything the stages train from, fitted once; what each rank is sent."""

    run_dir: Path
    markets: tuple[str, ...]
    model_cfg: HybridConfig
    closed: ClosedForm  # read-only: ranks share its memory
    learned: dict[str, torch.Tensor]  # the starting weights; each rank trains a copy
    sets: UserSets
    folds: FoldFits
    valid: list[EvalSet]
    cfg: HybridTrainConfig
    keep_start: bool


def _train_stages(
    model: HybridRecommender, work: _Stages, ranks: Ranks = ONE
) -> tuple[dict[str, StageState], HybridRecommender]:
    """Pre-training, then each market's adaptation (stages finished earlier are loaded);
    the trained model (pre-training may widen it: training/hybrid_stage.py)."""
    stage: dict[str, Any] = {"sets": work.sets, "folds": work.folds, "valid": work.valid}
    stage |= {"cfg": work.cfg, "ranks": ranks}
    every = list(range(len(work.markets)))
    stages: dict[str, StageState] = {}
    stages["pretrain"], model = pretrain(
        model, run_dir=work.run_dir, markets=every,
        keep_start=work.keep_start, **stage,
    )  # fmt: skip
    for m, code in enumerate(work.markets if work.cfg.adapt else ()):
        stages[code] = run_hybrid_stage(
            f"adapt {code}", model, markets=[m], stage_dir=work.run_dir / "markets" / code,
            shared=False, **stage,
        )  # fmt: skip
    return stages, model


def _train_rank(ranks: Ranks, work: _Stages) -> None:
    """One of ``--nproc`` processes: the stages on its share of every batch."""
    model = HybridRecommender(work.model_cfg, work.closed)
    with torch.no_grad():  # its own parameters: shared ones would be stepped by every rank
        for name, value in work.learned.items():
            model.get_parameter(name).copy_(value)
    _train_stages(model.to(ranks.device), work, ranks)


def train_hybrid(
    data_dir: Path,
    run_dir: Path,
    *,
    model_settings: dict[str, Any],
    cfg: HybridTrainConfig,
    warm: WarmStart | None = None,
    nproc: int = 1,
) -> list[Result]:
    """Fit the closed form, pre-train on every market, adapt each market, evaluate.

    ``warm``: start from a published version's weights (training/store_model.py): its
    vocabulary is kept and grown, its items and markets keep their rows, the closed
    form is fitted afresh, and each stage keeps its start unless it does better.
    ``nproc`` > 1: the stages run data-parallel in that many processes
    (training/distributed.py), which write the stage folders; this process fits the
    closed form before and evaluates after."""
    device = start_run(cfg.threads, cfg.seed, cfg.device)
    started = time.perf_counter()
    data = load_interactions(data_dir, base_items=warm.stored.vocabulary if warm else None)
    split = make_split(data, cfg.split_scheme, cfg.seed)
    if warm is not None:
        model_settings = warm.model_settings(model_settings, markets=data.markets)
    model_cfg = HybridConfig(n_items=data.items.size, n_markets=len(data.markets), **model_settings)
    name = hybrid_name(model_cfg, cfg)
    choice = choice_of_run(run_dir, split, model_cfg, protocols=cfg.choice_protocols)
    model_cfg = resolved(model_cfg, choice)
    write_config(
        run_dir,
        family="hybrid",
        name=name,
        data_dir=data_dir,
        markets=data.markets,
        items=data.items,
        model=model_cfg,
        train=cfg,
        init_from=warm.ref if warm else None,
        nproc=nproc,
        chosen=sorted(choice.settings()) if choice else [],
    )
    blocks = Blocks.of(model_cfg)
    closed_path = run_dir / CLOSED_FORM_FILE
    if closed_path.is_file():
        closed = load_closed_form(closed_path)
    else:
        closed = fit_closed_form(split, blocks)
        save_file(closed.tensors(), closed_path)
    log.info("closed form fitted: %.0f s", time.perf_counter() - started)
    folds = fold_fits(split, blocks, folds=cfg.folds, seed=cfg.seed)
    sets = UserSets.build(split, fold=folds.fold, max_history=model_cfg.max_history)
    valid = [build_eval_set(split, p, "valid", seed=cfg.seed) for p in cfg.valid_protocols]
    model = HybridRecommender(model_cfg, closed)
    if warm is not None:
        carried = copy_learned(model, warm.stored, markets=data.markets)
        new_items = data.items.size - warm.stored.model.config.n_items
        log.info(
            "warm start from %s: %d new items, markets carried over: %s",
            warm.ref,
            new_items,
            ",".join(carried) or "none",
        )
    work = _Stages(
        run_dir=run_dir, markets=data.markets, model_cfg=model_cfg, closed=closed,
        learned=learned(model), sets=sets, folds=folds, valid=valid, cfg=cfg,
        keep_start=warm is not None,
    )  # fmt: skip
    if nproc > 1:  # the ranks train every stage; below, each is then loaded from its folder
        launch(
            _train_rank, work, nproc=nproc, device_type=device.type, threads=cfg.threads,
            seed=cfg.seed, log_file=run_dir / LOG_FILE,
        )  # fmt: skip
    model = model.to(device)
    stages, model = _train_stages(model, work)
    if model.config.networks != model_cfg.networks:  # pre-training summed its networks
        record_chosen(run_dir, networks=model.config.networks)
    scale = kept_scale(run_dir / PRETRAINED)
    if scale is not None:  # or kept a network at a share of its weight
        record_chosen(run_dir, network_scale=scale)
    # The out-of-fold fits are the run's largest arrays (5 closed forms); the refit below
    # needs the room of a closed form of its own.
    del work, folds, sets
    chosen_lr = stages["pretrain"].lr
    if chosen_lr is not None and warm is None and set(cfg.lr_candidates) - {cfg.lr}:
        record_chosen(run_dir, pretrain_lr=chosen_lr)  # a rate was chosen
    log.info(
        "trained %d markets (closed form, pre-training, adaptation) in %.0f s",
        len(data.markets),
        time.perf_counter() - started,
    )
    results = finish_run(run_dir, HybridScorer(name, model), split=split, cfg=cfg, stages=stages)
    if cfg.refit and not (run_dir / REFIT_FILE).is_file():  # a resumed run has it
        del model, closed  # and the run's own closed form, evaluated now
        refit_closed_form(run_dir / REFIT_FILE, data, blocks)
    return results


def load_hybrid(
    run_dir: Path, config: dict[str, Any], *, refitted: bool = False
) -> HybridRecommender:
    """A finished hybrid run's model: closed form, pre-trained weights, each market's row.
    ``refitted``: with the closed form refitted on every row (closed_form.REFIT_FILE)."""
    model_cfg = HybridConfig(**config["model"])
    closed_file = REFIT_FILE if refitted else CLOSED_FORM_FILE
    model = HybridRecommender(model_cfg, load_closed_form(run_dir / closed_file))
    weights = run_dir / PRETRAINED / "best.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: no pre-trained weights (unfinished?)")
    with torch.no_grad():
        for name, value in load_file(weights).items():
            model.get_parameter(name).copy_(value)
        for m, code in enumerate(config["markets"]):
            own = run_dir / "markets" / code / "best.safetensors"
            for name, value in (load_file(own) if own.is_file() else {}).items():
                model.get_parameter(name)[m] = value
    return model.eval()
