"""Training the hybrid: closed form once, then the network on all markets, then each market.

1. EASE^R blocks (training/closed_form.py): the served ones from every training
   user, and out-of-fold ones that give training users their closed-form scores.
2. Pre-training on every market: each epoch hides a
   random ``mask_rate`` of each user's training items, and the model predicts the
   hidden ones from the rest with a softmax over the user's market catalogue.
   Every parameter learns, each market's own rows included.
3. Adaptation, per market: only that market's own rows (mix and item-bias deltas,
   market vector) go on learning, on the market alone; the rest is frozen.

Both stages stop early on the validation metric of their markets (mean of
``valid_metric`` over ``valid_protocols``) and keep their best weights. A run
folder holds closed_form.safetensors, pretrained/ and markets/<code>/
(best.safetensors, stage.json), metrics/, train.log, curves.png, summary.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from model_store.vocab import PAD, IntArray, recent_histories
from training.closed_form import FoldFits
from training.evaluate import evaluate
from training.hybrid import HybridRecommender
from training.protocols import PROTOCOLS, EvalSet, Protocol, market_catalogues
from training.runs import StageState
from training.split import Scheme, Split, SplitName

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HybridTrainConfig:
    seed: int = 0
    split_scheme: Scheme = "random"
    lr: float = 3e-4
    batch_size: int = 256  # users per step
    mask_rate: float = 0.3  # share of each user's items hidden and predicted, per epoch
    loss: Literal["softmax", "bce"] = "softmax"  # bce: `negatives` sampled per hidden item
    negatives: int = 4
    max_epochs: int = 30
    patience: int = 2
    folds: int = 5  # training users' closed-form scores come from fits without their fold
    adapt: bool = True  # then train each market's own parameter row on that market
    adapt_lr: float = 1e-3
    adapt_max_epochs: int = 5
    valid_protocols: tuple[Protocol, ...] = ("market", "full")
    valid_metric: str = "ndcg@10"
    eval_protocols: tuple[Protocol, ...] = PROTOCOLS
    eval_splits: tuple[SplitName, ...] = ("valid", "test")
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    device: Literal["auto", "cpu", "cuda"] = "auto"


# Per-market parameter rows: what adaptation trains, and what a market stage saves.
MARKET_ROWS = ("market_vectors", "market_bias", "market_mix")


@dataclass(frozen=True)
class UserSets:
    """Every training user with at least two items: its most recent items, market, fold."""

    users: torch.Tensor  # (U',)
    items: torch.Tensor  # (U', L) oldest first, right-padded
    market: torch.Tensor  # (U',)
    fold: torch.Tensor  # (U',)

    @classmethod
    def build(cls, split: Split, fold: np.ndarray, max_history: int) -> UserSets:
        lengths = np.diff(split.train_ptr)
        users = np.flatnonzero(lengths >= 2)
        items = np.zeros((len(users), max_history), np.int64)
        for row, u in enumerate(users):
            h = split.history(int(u))[-max_history:]
            items[row, : len(h)] = h
        return cls(
            torch.from_numpy(users),
            torch.from_numpy(items),
            torch.from_numpy(split.data.user_market[users]),
            torch.from_numpy(fold[users]),
        )


def hide(rng: torch.Generator, items: torch.Tensor, rate: float) -> torch.Tensor:
    """(B, L) -> (B, L) bool: the items to hide, about ``rate`` of each row's items,
    at least one, never all of them."""
    real = items != PAD
    hidden = (torch.rand(items.shape, generator=rng) < rate) & real
    # One random real item per row, to hide where nothing is and to keep where all is.
    pick = (torch.rand(items.shape, generator=rng) * real).argmax(1, keepdim=True)
    one = torch.zeros_like(real).scatter_(1, pick, True)
    hidden |= one & ~hidden.any(1, keepdim=True)
    hidden &= ~(one & (hidden == real).all(1, keepdim=True))
    return hidden


def masked_softmax_loss(
    logits: torch.Tensor, allowed: torch.Tensor, items: torch.Tensor, hidden: torch.Tensor
) -> torch.Tensor:
    """Mean over hidden items of -log softmax over the ``allowed`` (B, V) items."""
    log_p = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)
    picked = log_p.gather(1, items).masked_fill(~hidden, 0.0)
    return -picked.sum() / hidden.sum()


def sampled_bce_loss(
    rng: torch.Generator,
    logits: torch.Tensor,
    allowed: torch.Tensor,
    items: torch.Tensor,
    hidden: torch.Tensor,
    k: int,
) -> torch.Tensor:
    """Binary cross-entropy: each hidden item against ``k`` random allowed items."""
    weights = allowed.float()
    negatives = torch.multinomial(weights, k * items.shape[1], True, generator=rng)
    negative_logits = logits.gather(1, negatives).view(*items.shape, k)  # (B, L, k)
    positive = F.softplus(-logits.gather(1, items))  # (B, L)
    negative = F.softplus(negative_logits).sum(-1)
    return ((positive + negative) * hidden).sum() / (hidden.sum() * (1 + k))


class HybridScorer:
    """The hybrid as an ``evaluate`` scorer: whole-vocabulary logits, then the candidates'
    (``catalogue_logits``, tested equal to the scoring graph's ``forward``)."""

    def __init__(self, name: str, model: HybridRecommender, chunk: int = 1024) -> None:
        self.name = name
        self.model = model
        self.chunk = chunk

    @torch.no_grad()
    def score(
        self, markets: IntArray, histories: IntArray, candidates: IntArray
    ) -> NDArray[np.float32]:
        model = self.model
        model.eval()
        device = next(model.parameters()).device
        out = np.zeros(candidates.shape, np.float32)
        hist = recent_histories(histories, model.config.max_history)
        for start in range(0, len(markets), self.chunk):
            part = slice(start, start + self.chunk)
            logits = model.catalogue_logits(
                torch.from_numpy(hist[part]).to(device), torch.from_numpy(markets[part]).to(device)
            )
            out[part] = logits.gather(1, torch.from_numpy(candidates[part]).to(device)).cpu()
        return out


def _batches(
    rng: np.random.Generator, sets: UserSets, rows: np.ndarray, batch_size: int
) -> Iterator[np.ndarray]:
    """Users of ``rows`` in batches that share a fold and a market, in random order."""
    keys = sets.fold.numpy()[rows] * 1000 + sets.market.numpy()[rows]
    chunks = []
    for key in np.unique(keys):
        group = rng.permutation(rows[keys == key])
        chunks += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    for i in rng.permutation(len(chunks)):
        yield chunks[i]


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
) -> StageState:
    """Train on the users of ``markets`` until the validation metric stops improving.

    ``shared``: every parameter learns (pre-training); otherwise (adaptation, one
    market) only that market's own rows.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    weights_file = stage_dir / "best.safetensors"
    state_file = stage_dir / "stage.json"
    if state_file.exists() and json.loads(state_file.read_text()).get("done"):
        _load_stage(model, weights_file, markets, shared)
        log.info("%s: done in an earlier run, weights loaded", name)
        return StageState(**json.loads(state_file.read_text()))
    device = next(model.parameters()).device
    trainable = list(model.parameters()) if shared else [getattr(model, n) for n in MARKET_ROWS]
    for p in model.parameters():
        p.requires_grad_(any(p is t for t in trainable))
    opt = torch.optim.Adam(trainable, lr=cfg.lr if shared else cfg.adapt_lr)
    rng = np.random.default_rng([cfg.seed, *markets])
    torch_rng = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    catalogue = torch.zeros((model.config.n_markets, model.config.n_items), dtype=torch.bool)
    for m, sold in enumerate(market_catalogues(valid[0].split)):
        catalogue[m, torch.from_numpy(sold)] = True
    catalogue[:, PAD] = False
    rows = np.flatnonzero(np.isin(sets.market.numpy(), markets))
    max_epochs = cfg.max_epochs if shared else cfg.adapt_max_epochs
    scorer = HybridScorer(name, model)

    def validate() -> tuple[list[float], float]:
        scores = [evaluate(scorer, v, markets=markets).mean[cfg.valid_metric] for v in valid]
        return scores, float(np.mean(scores))

    state = StageState()
    if not shared:  # adaptation keeps what it starts from unless it does better
        _, state.best = validate()
        state.best_epoch = 0
        _save_stage(model, weights_file, markets, shared)
    while not state.done:
        model.train()
        start, total, steps = time.perf_counter(), 0.0, 0
        n_batches = -(-len(rows) // cfg.batch_size)
        bar = tqdm(
            _batches(rng, sets, rows, cfg.batch_size),
            total=n_batches,
            desc=f"{name} epoch {state.epoch + 1}",
            leave=False,
            disable=None,
        )
        for batch in bar:
            items = sets.items[batch]
            width = max(int((items != PAD).sum(1).max()), 1)
            items = items[:, :width]
            hidden = hide(torch_rng, items, cfg.mask_rate)
            inputs = items.masked_fill(hidden, PAD)
            market = sets.market[batch]
            fold = int(sets.fold[batch[0]])
            closed = folds.fits[fold].catalogue_scores(inputs, market).to(device)
            inputs, market = inputs.to(device), market.to(device)
            network = closed.new_zeros((len(batch), model.config.n_items))
            if model.config.neural:
                users = model.user_vectors(inputs, market)
                network = model.catalogue_network_scores(users, market)
            logits = model.combine(closed, network, market)
            allowed = catalogue[market.cpu()].to(device)
            allowed.scatter_(1, inputs, False)  # what the user has is no negative
            targets, hidden = items.to(device), hidden.to(device)
            if cfg.loss == "softmax":
                loss = masked_softmax_loss(logits, allowed, targets, hidden)
            else:
                allowed.scatter_(1, targets, False)
                loss = sampled_bce_loss(torch_rng, logits, allowed, targets, hidden, cfg.negatives)
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
            _save_stage(model, weights_file, markets, shared)
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
    _load_stage(model, weights_file, markets, shared)
    state_file.write_text(json.dumps(dataclasses.asdict(state), indent=1))
    for p in model.parameters():
        p.requires_grad_(True)
    return state


def _learned(model: HybridRecommender) -> dict[str, torch.Tensor]:
    """The trained weights; the closed-form buffers are saved once, per run."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()}


def _save_stage(model: HybridRecommender, path: Path, markets: Sequence[int], shared: bool) -> None:
    weights = _learned(model)
    if not shared:  # a market stage owns its row only
        weights = {n: weights[n][markets[0]].contiguous() for n in MARKET_ROWS}
    save_file(weights, path)


def _load_stage(model: HybridRecommender, path: Path, markets: Sequence[int], shared: bool) -> None:
    saved = load_file(path)
    with torch.no_grad():
        for name, value in saved.items():
            target = model.get_parameter(name)
            if shared:
                target.copy_(value)
            else:
                target[markets[0]] = value
