"""Training the hybrid: closed form once, then the network on all markets, then each market.

1. EASE^R blocks (training/closed_form.py): the served ones from every training
   user, and out-of-fold ones that give training users their closed-form scores.
2. Pre-training on every market: each epoch hides a random ``mask_rate`` of each
   user's training items, and the model predicts the hidden ones from the rest
   (training/hybrid_examples.py). Every parameter learns, each market's own rows
   included.
3. Adaptation, per market: only that market's own rows (mix and item-bias deltas,
   market vector) go on learning, on the market alone; the rest is frozen.

Both stages stop early on the validation metric of their markets (mean of
``valid_metric`` over ``valid_protocols``) and keep their best weights. Its settings
are ``HybridTrainConfig`` (training/config.py). A run folder holds
closed_form.safetensors, pretrained/ and markets/<code>/ (best.safetensors,
stage.json), metrics/, train.log, curves.png, summary.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from training.closed_form import Blocks, Cooccurrence, FoldFits, fit_closed_form, fold_fits
from training.config import HybridTrainConfig
from training.data import load_interactions
from training.evaluate import Result, evaluate
from training.hybrid import ClosedForm, HybridConfig, HybridRecommender
from training.hybrid_examples import UserSets, batch_loss, catalogue_mask, user_batches
from training.predict import HybridScorer
from training.protocols import EvalSet, build_eval_set
from training.runs import StageState, finish_run, start_run, write_config
from training.split import make_split
from training.store_model import WarmStart, copy_learned

log = logging.getLogger(__name__)

# Per-market parameter rows: what adaptation trains, and what a market stage saves.
MARKET_ROWS = ("market_vectors", "market_bias", "market_mix")
CLOSED_FORM_FILE = "closed_form.safetensors"


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
) -> StageState:
    """Train on the users of ``markets`` until the validation metric stops improving.

    ``shared``: every parameter learns (pre-training); otherwise (adaptation, one
    market) only that market's own rows. ``keep_start``: the weights it starts from
    are validated first and kept unless an epoch does better (always so in adaptation).
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    weights_file = stage_dir / "best.safetensors"
    state_file = stage_dir / "stage.json"
    if state_file.exists() and json.loads(state_file.read_text()).get("done"):
        _load_stage(model, weights_file, markets=markets, shared=shared)
        log.info("%s: done in an earlier run, weights loaded", name)
        return StageState(**json.loads(state_file.read_text()))
    trainable = list(model.parameters()) if shared else [getattr(model, n) for n in MARKET_ROWS]
    for p in model.parameters():
        p.requires_grad_(any(p is t for t in trainable))
    opt = torch.optim.Adam(trainable, lr=cfg.lr if shared else cfg.adapt_lr)
    rng = np.random.default_rng([cfg.seed, *markets])
    torch_rng = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    catalogue = catalogue_mask(valid[0].split)
    rows = np.flatnonzero(np.isin(sets.market.numpy(), markets))
    max_epochs = cfg.max_epochs if shared else cfg.adapt_max_epochs
    scorer = HybridScorer(name, model)

    def validate() -> tuple[list[float], float]:
        scores = [evaluate(scorer, v, markets=markets).mean[cfg.valid_metric] for v in valid]
        return scores, float(np.mean(scores))

    state = StageState()
    if keep_start or not shared:  # keep what it starts from unless it does better
        _, state.best = validate()
        state.best_epoch = 0
        log.info("%s epoch 0 (the start): valid %s = %.4f", name, cfg.valid_metric, state.best)
        _save_stage(model, weights_file, markets=markets, shared=shared)
    while not state.done:
        model.train()
        start, total, steps = time.perf_counter(), 0.0, 0
        n_batches = -(-len(rows) // cfg.batch_size)
        bar = tqdm(
            user_batches(rng, sets, rows, batch_size=cfg.batch_size),
            total=n_batches,
            desc=f"{name} epoch {state.epoch + 1}",
            leave=False,
            disable=None,
        )
        for batch in bar:
            loss = batch_loss(
                model, batch, sets=sets, folds=folds, catalogue=catalogue, cfg=cfg,
                rng=torch_rng,
            )  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        train_seconds = time.perf_counter() - start
        scores, metric = validate()
        point = {
            "loss": total / max(steps, 1),
            cfg.valid_metric: metric,
            "users_per_s": len(rows) / train_seconds,
            "train_s": train_seconds,
            "valid_s": time.perf_counter() - start - train_seconds,
        }
        if state.end_epoch(point, metric, patience=cfg.patience, max_epochs=max_epochs):
            _save_stage(model, weights_file, markets=markets, shared=shared)
        log.info(
            "%s epoch %d: loss %.4f, valid %s %s = %.4f (best %.4f at %d), %.0f s",
            name,
            state.epoch,
            total / max(steps, 1),
            cfg.valid_metric,
            " / ".join(f"{v.protocol} {s:.4f}" for v, s in zip(valid, scores, strict=True)),
            metric,
            state.best,
            state.best_epoch,
            time.perf_counter() - start,
        )
    _load_stage(model, weights_file, markets=markets, shared=shared)
    state_file.write_text(json.dumps(dataclasses.asdict(state), indent=1))
    for p in model.parameters():
        p.requires_grad_(True)
    return state


def _learned(model: HybridRecommender) -> dict[str, torch.Tensor]:
    """The trained weights; the closed-form buffers are saved once, per run."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()}


def _save_stage(
    model: HybridRecommender, path: Path, *, markets: Sequence[int], shared: bool
) -> None:
    weights = _learned(model)
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


def hybrid_name(model: HybridConfig, cfg: HybridTrainConfig) -> str:
    """hybrid, plus what is switched off (ablations) or changed in kind."""
    parts = ["hybrid"]
    parts += [] if model.neural else ["no-network"]
    parts += [] if model.global_ease else ["no-shared-ease"]
    parts += [] if model.market_ease else ["no-market-ease"]
    parts += [] if cfg.adapt else ["no-adapt"]
    parts += [] if cfg.loss == "softmax" else [f"{cfg.loss}-{cfg.negatives}"]
    return "-".join(parts)


def load_closed_form(path: Path) -> ClosedForm:
    """The closed form a run saved (its shared block's size is counted from the index)."""
    tensors = load_file(path)
    size = int((tensors["global_index"] >= 0).sum())
    return ClosedForm(**tensors, global_size=size)


def train_hybrid(
    data_dir: Path,
    run_dir: Path,
    *,
    model_settings: dict[str, Any],
    cfg: HybridTrainConfig,
    warm: WarmStart | None = None,
) -> list[Result]:
    """Fit the closed form, pre-train on every market, adapt each market, evaluate.

    ``warm``: start from a published version's weights (training/store_model.py): its
    vocabulary is kept and grown, its items and markets keep their rows, the closed
    form is fitted afresh, and each stage keeps its start unless it does better."""
    device = start_run(cfg.threads, cfg.seed, cfg.device)
    started = time.perf_counter()
    data = load_interactions(data_dir, base_items=warm.stored.vocabulary if warm else None)
    split = make_split(data, cfg.split_scheme, cfg.seed)
    if warm is not None:
        model_settings = warm.model_settings(model_settings)
    model_cfg = HybridConfig(n_items=data.items.size, n_markets=len(data.markets), **model_settings)
    name = hybrid_name(model_cfg, cfg)
    write_config(
        run_dir,
        family="hybrid",
        name=name,
        data_dir=data_dir,
        data=data,
        model=model_cfg,
        train=cfg,
        init_from=warm.ref if warm else None,
    )
    blocks = Blocks(
        global_lambda=model_cfg.ease_lambda,
        market_lambda=model_cfg.market_ease_lambda,
        global_ease=model_cfg.global_ease,
        market_ease=model_cfg.market_ease,
        cooccurrence=Cooccurrence(model_cfg.cooccurrence_days, model_cfg.cooccurrence_floor),
    )
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
    model = model.to(device)
    stage: dict[str, Any] = {"sets": sets, "folds": folds, "valid": valid, "cfg": cfg}
    every = list(range(len(data.markets)))
    stages: dict[str, StageState] = {}
    stages["pretrain"] = run_hybrid_stage(
        "pretrain", model, markets=every, stage_dir=run_dir / "pretrained", shared=True,
        keep_start=warm is not None, **stage,
    )  # fmt: skip
    for m, code in enumerate(data.markets if cfg.adapt else ()):
        stages[code] = run_hybrid_stage(
            f"adapt {code}", model, markets=[m], stage_dir=run_dir / "markets" / code,
            shared=False, **stage,
        )  # fmt: skip
    log.info(
        "trained %d markets (closed form, pre-training, adaptation) in %.0f s",
        len(data.markets),
        time.perf_counter() - started,
    )
    return finish_run(run_dir, HybridScorer(name, model), split=split, cfg=cfg, stages=stages)


def load_hybrid(run_dir: Path, config: dict[str, Any]) -> HybridRecommender:
    """A finished hybrid run's model: closed form, pre-trained weights, each market's row."""
    model_cfg = HybridConfig(**config["model"])
    model = HybridRecommender(model_cfg, load_closed_form(run_dir / CLOSED_FORM_FILE))
    weights = run_dir / "pretrained" / "best.safetensors"
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
