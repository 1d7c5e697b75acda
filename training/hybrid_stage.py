"""One stage of the hybrid's training, and the choice of pre-training's learning rate.

A stage (pre-training on every market, or one market's adaptation) trains until the
validation metric stops improving and keeps its best weights in its folder
(best.safetensors, stage.json), so a run interrupted between stages goes on.

Pre-training then goes on at each of the faster rates of ``lr_candidates``, from the
weights the rate before kept: on small catalogues a few hundred steps at the default
rate leave the network unlearned, while on XMarket a faster rate trades `full` for
`market`. A candidate's weights replace the default's only where they are better under
every validation protocol; its stage folder becomes pretrained/. With two rates, the sum
of their two networks (an ensemble in one graph: training/hybrid.py ``summed_networks``),
and either network at a smaller weight in the mix, replace it where better again under
every protocol.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from training.closed_form import FoldFits
from training.config import HybridTrainConfig
from training.distributed import ONE, Ranks
from training.evaluate import evaluate_sets
from training.hybrid import HybridRecommender
from training.hybrid_epoch import EpochData, HybridStep, train_epoch
from training.hybrid_examples import UserSets
from training.network_choice import (
    better_everywhere,
    choose_network,
    networks_in,
    with_networks,
)
from training.predict import HybridScorer
from training.protocols import EvalSet
from training.runs import StageState

log = logging.getLogger(__name__)

PRETRAINED = "pretrained"  # the pre-training stage's folder in a run

# Per-market parameter rows: what adaptation trains, and what a market stage saves.
MARKET_ROWS = ("market_vectors", "market_bias", "market_mix")


def run_hybrid_stage(
    name: str,
    model: HybridRecommender,
    *,
    sets: UserSets,
    folds: FoldFits,
    markets: Sequence[int],
    valid: Sequence[EvalSet],
    cfg: HybridTrainConfig,
    stage_dir: Path,
    shared: bool,
    keep_start: bool = False,
    ranks: Ranks = ONE,
) -> StageState:
    """Train on the users of ``markets`` until the validation metric stops improving.

    ``shared``: every parameter learns (pre-training); otherwise (adaptation, one
    market) only that market's own rows. ``keep_start``: the weights it starts from
    are validated first and kept unless an epoch does better (always so in adaptation).
    ``ranks``: this process's share of the training (training/hybrid_epoch.py); rank 0
    validates, decides when to stop and writes the stage's files.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    weights_file = stage_dir / "best.safetensors"
    state_file = stage_dir / "stage.json"
    # Every rank reads the same answer: rank 0 writes this file at the stage's end,
    # after collectives that every rank joins only once past this check.
    if _finished(stage_dir):
        _load_stage(model, weights_file, markets=markets, shared=shared)
        log.info("%s: trained already, weights loaded", name)
        return StageState(**json.loads(state_file.read_text()))
    trainable = list(model.parameters()) if shared else [getattr(model, n) for n in MARKET_ROWS]
    for p in model.parameters():
        p.requires_grad_(any(p is t for t in trainable))
    ranks.copy_from_main(model)  # DDP starts from equal weights; it does not sync them
    step = ranks.wrap(HybridStep(model), find_unused=not model.config.neural)
    lr = cfg.lr if shared else cfg.adapt_lr
    opt = torch.optim.Adam(trainable, lr=lr)
    rng = np.random.default_rng([cfg.seed, *markets])
    torch_rng = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    data = EpochData.build(sets, folds, markets=markets, split=valid[0].split)
    max_epochs = cfg.max_epochs if shared else cfg.adapt_max_epochs
    # The network's first steps disturb the closed form's ranking before they help:
    # patience covers at least ``patience_steps`` steps, however few users a data set has.
    steps = math.ceil(len(data.rows) / cfg.batch_size)
    patience = max(cfg.patience, math.ceil(cfg.patience_steps / steps))
    scorer = HybridScorer(name, model)

    def validate() -> tuple[list[float], float]:
        scores = [r.mean[cfg.valid_metric] for r in evaluate_sets(scorer, valid, markets=markets)]
        return scores, float(np.mean(scores))

    state = StageState(lr=lr)
    if ranks.main and (keep_start or not shared):  # keep the start unless it does better
        _, state.best = validate()
        state.best_epoch = 0
        log.info("%s epoch 0 (the start): valid %s = %.4f", name, cfg.valid_metric, state.best)
        _save_stage(model, weights_file, markets=markets, shared=shared)
    while not state.done:
        model.train()
        start = time.perf_counter()
        loss = train_epoch(
            step, opt, data=data, cfg=cfg, rng=rng, torch_rng=torch_rng, ranks=ranks,
            desc=f"{name} epoch {state.epoch + 1}",
        )  # fmt: skip
        train_seconds = time.perf_counter() - start
        if ranks.main:
            scores, metric = validate()
            point = {
                "loss": loss,
                cfg.valid_metric: metric,
                "users_per_s": len(data.rows) / train_seconds,
                "train_s": train_seconds,
                "valid_s": time.perf_counter() - start - train_seconds,
                **{f"valid_{v.protocol}": s for v, s in zip(valid, scores, strict=True)},
            }
            if state.end_epoch(point, metric, patience=patience, max_epochs=max_epochs):
                _save_stage(model, weights_file, markets=markets, shared=shared)
            log.info(
                "%s epoch %d: loss %.4f, valid %s %s = %.4f (best %.4f at %d), %.0f s",
                name,
                state.epoch,
                loss,
                cfg.valid_metric,
                " / ".join(f"{v.protocol} {s:.4f}" for v, s in zip(valid, scores, strict=True)),
                metric,
                state.best,
                state.best_epoch,
                time.perf_counter() - start,
            )
        state = ranks.from_main(state)  # rank 0 decides whether to go on
    if ranks.main:
        _load_stage(model, weights_file, markets=markets, shared=shared)
        state_file.write_text(json.dumps(dataclasses.asdict(state), indent=1))
    ranks.copy_from_main(model)
    for p in model.parameters():
        p.requires_grad_(True)
    return state


def learned(model: HybridRecommender) -> dict[str, torch.Tensor]:
    """The trained weights; the closed-form buffers are saved once, per run."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()}


def _save_stage(
    model: HybridRecommender, path: Path, *, markets: Sequence[int], shared: bool
) -> None:
    weights = learned(model)
    if not shared:  # a market stage owns its row only
        weights = {n: weights[n][markets[0]].contiguous() for n in MARKET_ROWS}
    save_file(weights, path)


def _load_stage(
    model: HybridRecommender, path: Path, *, markets: Sequence[int], shared: bool
) -> None:
    saved = load_file(path)
    with torch.no_grad():
        for name, value in saved.items():
            target = model.get_parameter(name)
            if shared:
                target.copy_(value)
            else:
                target[markets[0]] = value


def pretrain(
    model: HybridRecommender,
    *,
    run_dir: Path,
    sets: UserSets,
    folds: FoldFits,
    markets: Sequence[int],
    valid: Sequence[EvalSet],
    cfg: HybridTrainConfig,
    keep_start: bool = False,
    ranks: Ranks = ONE,
) -> tuple[StageState, HybridRecommender]:
    """Pre-training at ``cfg.lr``, then at each of ``cfg.lr_candidates`` in turn, each
    going on from the best weights of the one before; run_dir/pretrained/ holds the
    chosen one (``choose_lr``), or what ``choose_network`` keeps instead (the sum of
    the two rates' networks, the network at a smaller weight). A warm start
    (``keep_start``) trains at ``cfg.lr`` alone. Returns the stage's state and the
    model, a new one (twice the networks) where a sum was kept."""
    final = run_dir / PRETRAINED

    def stage(name: str, stage_dir: Path, lr: float) -> StageState:
        return run_hybrid_stage(
            name, model, sets=sets, folds=folds, markets=markets, valid=valid,
            cfg=dataclasses.replace(cfg, lr=lr), stage_dir=stage_dir, shared=True,
            keep_start=keep_start, ranks=ranks,
        )  # fmt: skip

    rates = [cfg.lr] if keep_start else list(dict.fromkeys([cfg.lr, *cfg.lr_candidates]))
    if len(rates) == 1 or _finished(final):
        if _finished(final):  # a resumed run: its networks may have been summed
            model = with_networks(model, networks_in(final / "best.safetensors", model.config))
        return stage("pretrain", final, cfg.lr), model
    tried: list[tuple[float, StageState]] = []
    for lr in rates:  # each stage ends holding its best weights, on every rank
        state = stage(f"pretrain lr {lr:g}", _trial_dir(run_dir, lr), lr)
        tried.append((lr, state))
    protocols = [v.protocol for v in valid]
    lr, state = choose_lr(tried, protocols=protocols)
    if ranks.main:
        scores = [
            f"{r:g}: "
            + " / ".join(
                f"{p} {v:.4f}" for p, v in zip(protocols, _at_best(s, protocols), strict=True)
            )
            for r, s in tried
        ]
        log.info(
            "pre-training's learning rate: %g (valid %s at each one's best epoch: %s)",
            lr,
            cfg.valid_metric,
            "; ".join(scores),
        )
        if final.exists():  # a stage that did not finish
            shutil.rmtree(final)
        shutil.copytree(_trial_dir(run_dir, lr), final)
        _load_stage(model, final / "best.safetensors", markets=markets, shared=True)
    ranks.copy_from_main(model)
    if cfg.sum_networks or cfg.network_scales:
        trials = [_trial_dir(run_dir, r) / "best.safetensors" for r, _ in tried]
        model = choose_network(
            model, learned(model), trials=trials if len(tried) == 2 else [],
            alone=_at_best(state, protocols), final=final / "best.safetensors",
            markets=markets, valid=valid, cfg=cfg, ranks=ranks,
        )  # fmt: skip
    return state, model


def _trial_dir(run_dir: Path, lr: float) -> Path:
    return run_dir / "pretrain-trials" / f"lr-{lr:g}"


def _finished(stage_dir: Path) -> bool:
    state_file = stage_dir / "stage.json"
    return state_file.is_file() and bool(json.loads(state_file.read_text()).get("done"))


def _at_best(state: StageState, protocols: Sequence[str]) -> list[float]:
    """Each protocol's validation metric at the stage's best epoch."""
    point = next(p for p in state.curve if p["epoch"] == state.best_epoch)
    return [point[f"valid_{p}"] for p in protocols]


def choose_lr(
    tried: Sequence[tuple[float, StageState]], *, protocols: Sequence[str]
) -> tuple[float, StageState]:
    """The first rate (the default) unless another is better under every validation
    protocol at their best epochs; of several such, the best mean."""
    first = _at_best(tried[0][1], protocols)
    better = [(lr, s) for lr, s in tried[1:] if better_everywhere(_at_best(s, protocols), first)]
    return max(better, key=lambda t: t[1].best, default=tried[0])
