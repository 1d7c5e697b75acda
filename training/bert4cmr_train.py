"""Pre-train Bert4CMR on every market, then fine-tune one copy per market.

One loop (``run_stage``) serves both stages: fine-tuning is pre-training with
other examples, another learning rate and a starting checkpoint. A stage stops
early when the validation metric of its markets has not improved for
``patience`` epochs, keeps its best weights, and can be resumed after an
interrupt from the state it saves after every epoch.

Its settings are ``TrainConfig`` (training/config.py); its stage folders in a run
(training/runs.py has the rest):
    pretrained/best.safetensors, pretrained/stage.json
    markets/<code>/best.safetensors, markets/<code>/stage.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from model_store.vocab import PAD
from training.config import TrainConfig
from training.data import load_interactions
from training.evaluate import Result, evaluate
from training.examples import (
    Batch,
    Examples,
    NegativeSampler,
    batches,
    build_examples,
)
from training.model import Bert4CMR, Bert4CMRConfig
from training.predict import TorchScorer
from training.protocols import EvalSet, build_eval_set
from training.runs import StageState, finish_run, start_run, write_config
from training.split import make_split

log = logging.getLogger(__name__)


def bce_loss(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy: column 0 is the positive, the rest negatives; PAD slots ignored."""
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    weight = (candidates != PAD).to(logits.dtype)
    losses = F.binary_cross_entropy_with_logits(logits, labels, weight=weight, reduction="sum")
    return losses / weight.sum()


def _cpu_weights(model: Bert4CMR) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _save_state(
    stage_dir: Path,
    state: StageState,
    *,
    model: Bert4CMR,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
) -> None:
    tmp = stage_dir / "resume.pt.tmp"
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            # dropout on a GPU draws from the CUDA generator
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        tmp,
    )
    tmp.replace(stage_dir / "resume.pt")
    meta = {**dataclasses.asdict(state), "numpy_rng": rng.bit_generator.state}
    (stage_dir / "stage.json.tmp").write_text(json.dumps(meta, indent=1))
    (stage_dir / "stage.json.tmp").replace(stage_dir / "stage.json")


def _load_state(
    stage_dir: Path, *, model: Bert4CMR, opt: torch.optim.Optimizer, rng: np.random.Generator
) -> StageState:
    meta = json.loads((stage_dir / "stage.json").read_text())
    rng.bit_generator.state = meta.pop("numpy_rng")
    state = StageState(**meta)
    if state.done:
        return state
    device = next(model.parameters()).device
    saved = torch.load(stage_dir / "resume.pt", weights_only=True, map_location=device)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"].cpu())
    if saved.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng_state.cpu() for rng_state in saved["cuda_rng"]])
    return state


def _timed(items: Iterator[Batch]) -> Iterator[tuple[Batch, float]]:
    """Each batch with the seconds spent producing it."""
    while True:
        start = time.perf_counter()
        batch = next(items, None)
        if batch is None:
            return
        yield batch, time.perf_counter() - start


def run_stage(
    name: str,
    model: Bert4CMR,
    *,
    examples: Examples,
    sampler: NegativeSampler,
    valid: EvalSet,
    markets: Sequence[int],
    lr: float,
    max_epochs: int,
    cfg: TrainConfig,
    stage_dir: Path,
) -> StageState:
    """Train until the validation metric of ``markets`` stops improving; leave the
    best weights in ``model`` and in ``stage_dir/best.safetensors``."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, *markets])
    state = StageState()
    if (stage_dir / "stage.json").exists():
        state = _load_state(stage_dir, model=model, opt=opt, rng=rng)
        log.info("%s: resuming after epoch %d (best %.4f)", name, state.epoch, state.best)
    scorer = TorchScorer(name, model)
    device = next(model.parameters()).device
    while not state.done and state.epoch < max_epochs:
        model.train()
        # The loss sum stays on the device: reading it every batch would wait for the GPU.
        start, seen, total = time.perf_counter(), 0, torch.zeros((), device=device)
        negatives = sampler.sample(rng, examples, cfg.negatives)
        data_seconds = time.perf_counter() - start  # sampling + batching, to show it is cheap
        bar = tqdm(
            _timed(batches(rng, examples, negatives, batch_size=cfg.batch_size)),
            total=-(-len(examples) // cfg.batch_size),
            desc=f"{name} epoch {state.epoch + 1}",
            leave=False,
            disable=None,  # no bar when not on a terminal
        )
        for step, (batch, batch_seconds) in enumerate(bar):
            data_seconds += batch_seconds
            candidates = torch.from_numpy(batch.candidates).to(device)
            logits = model(
                torch.from_numpy(batch.histories).to(device),
                candidates,
                torch.from_numpy(batch.markets).to(device),
            )
            loss = bce_loss(logits, candidates)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(candidates)
            total += loss.detach() * len(candidates)
            if step % 50 == 0:
                bar.set_postfix(
                    loss=f"{total.item() / seen:.4f}",
                    per_s=f"{seen / (time.perf_counter() - start):.0f}",
                )
        loss_mean = total.item() / seen
        train_seconds = time.perf_counter() - start
        metric = evaluate(scorer, valid, markets=markets).mean[cfg.valid_metric]
        point = {
            "loss": loss_mean,
            cfg.valid_metric: metric,
            "samples_per_s": seen / train_seconds,
            "data_share": data_seconds / train_seconds,
            "train_s": train_seconds,
            "valid_s": time.perf_counter() - start - train_seconds,
        }
        if state.end_epoch(point, metric, patience=cfg.patience, max_epochs=max_epochs):
            save_file(_cpu_weights(model), stage_dir / "best.safetensors")
        log.info(
            "%s epoch %d: loss %.4f, valid %s %.4f (best %.4f at %d), %.0f samples/s "
            "(data preparation %.1f%%), %.0f s",
            name,
            state.epoch,
            loss_mean,
            cfg.valid_metric,
            metric,
            state.best,
            state.best_epoch,
            seen / train_seconds,
            100 * data_seconds / train_seconds,
            time.perf_counter() - start,
        )
        _save_state(stage_dir, state, model=model, opt=opt, rng=rng)
    model.load_state_dict(load_file(stage_dir / "best.safetensors"))
    (stage_dir / "resume.pt").unlink(missing_ok=True)
    return state


def model_name(model_cfg: Bert4CMRConfig, cfg: TrainConfig) -> str:
    """bert4cmr, plus what differs from the paper's recipe: variant and ablations."""
    parts = ["bert4cmr"]
    if model_cfg.variant != "paper":
        parts.append(model_cfg.variant)
    if not model_cfg.market_embedding:
        parts.append("no-market-embedding")
    if not cfg.pretrain:
        parts.append("single-market")
    if not cfg.finetune:
        parts.append("no-finetune")
    return "-".join(parts)


def train_bert4cmr(
    data_dir: Path, run_dir: Path, *, model_settings: dict[str, Any], cfg: TrainConfig
) -> list[Result]:
    """Pre-train Bert4CMR on every market, fine-tune a copy per market, evaluate."""
    if not (cfg.pretrain or cfg.finetune):
        raise ValueError("with neither pre-training nor fine-tuning nothing is trained")
    device = start_run(cfg.threads, cfg.seed, cfg.device)
    data = load_interactions(data_dir)
    split = make_split(data, cfg.split_scheme, cfg.seed)
    model_cfg = Bert4CMRConfig(
        n_items=data.items.size, n_markets=len(data.markets), **model_settings
    )
    name = model_name(model_cfg, cfg)
    write_config(
        run_dir,
        family="bert4cmr",
        name=name,
        data_dir=data_dir,
        markets=data.markets,
        items=data.items,
        model=model_cfg,
        train=cfg,
    )
    valid = build_eval_set(split, cfg.valid_protocol, "valid", seed=cfg.seed)
    sampler = NegativeSampler(split, cfg.negative_pool)
    stages: dict[str, StageState] = {}
    pretrained = Bert4CMR(model_cfg).to(device)
    all_markets = list(range(len(data.markets)))
    if cfg.pretrain:
        examples = build_examples(split, model_cfg.max_history)
        stages["pretrain"] = run_stage(
            "pretrain",
            pretrained,
            examples=examples,
            sampler=sampler,
            valid=valid,
            markets=all_markets,
            lr=cfg.lr,
            max_epochs=cfg.max_epochs,
            cfg=cfg,
            stage_dir=run_dir / "pretrained",
        )
    models: dict[int, Bert4CMR] = {}
    for m, code in enumerate(data.markets):
        if not cfg.finetune:
            models[m] = pretrained
            continue
        model = Bert4CMR(model_cfg).to(device)
        if cfg.pretrain:
            model.load_state_dict(pretrained.state_dict())
        lr, epochs = (
            (cfg.finetune_lr, cfg.finetune_max_epochs) if cfg.pretrain else (cfg.lr, cfg.max_epochs)
        )
        stages[code] = run_stage(
            f"finetune {code}" if cfg.pretrain else f"train {code}",
            model,
            examples=build_examples(split, model_cfg.max_history, [m]),
            sampler=sampler,
            valid=valid,
            markets=[m],
            lr=lr,
            max_epochs=epochs,
            cfg=cfg,
            stage_dir=run_dir / "markets" / code,
        )
        models[m] = model
    return finish_run(run_dir, TorchScorer(name, models), split=split, cfg=cfg, stages=stages)
