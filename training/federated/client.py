"""One market's side of the federation: everything here sees that market's data only.

A client holds its market's share of the split (training/federated/partition.py),
fits its own EASE^R block from it (there is no shared block: it would need every
market's users), and keeps a whole hybrid locally whose shared weights the server
replaces each round. ``fit`` trains every weight on its users for ``local_epochs``
(the same batches and loss as central training: training/hybrid_epoch.py's
``batch_loss``, with S2CE's soft targets and FedProx's proximal term when asked);
``adapt`` then fine-tunes its own parameter rows alone, exactly as central adaptation
does (``run_hybrid_stage``).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_store.catalogue import Catalogue
from model_store.vocab import Vocabulary
from training.closed_form import Blocks, FoldFits, fit_closed_form, fold_fits
from training.evaluate import evaluate_sets
from training.federated.config import FederatedConfig
from training.federated.wire import load_weights, shared_names, shared_weights
from training.hybrid import HybridConfig, HybridRecommender
from training.hybrid_epoch import EpochData, HybridStep, batch_loss
from training.hybrid_examples import UserSets, catalogue_mask, user_batches
from training.hybrid_stage import MARKET_ROWS, run_hybrid_stage
from training.item_walks import WalkSettings
from training.predict import HybridScorer
from training.protocols import EvalSet, build_eval_set
from training.runs import StageState, resolve_device
from training.semantics import FloatArray, ItemSemantics, cooccurrence_embeddings
from training.split import Split

log = logging.getLogger(__name__)


def federated_model_config(
    *, markets: tuple[str, ...], items: Vocabulary, model_settings: dict[str, Any]
) -> HybridConfig:
    """The hybrid every client and the published model share; no shared EASE^R block.
    ``markets`` and ``items``: what every party holds (training/federated/shared.py)."""
    settings = model_settings | {"global_ease": False}
    return HybridConfig(n_items=items.size, n_markets=len(markets), **settings)


@dataclass(kw_only=True)
class MarketClient:
    market: int
    split: Split  # this market's users only
    model: HybridRecommender
    folds: FoldFits
    sets: UserSets
    semantics: ItemSemantics | None
    cfg: FederatedConfig
    # Its own rows after each validated round: the publish step goes back to the round
    # the server chose on validation.
    kept_rows: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        split: Split,
        market: int,
        *,
        model_settings: dict[str, Any],
        cfg: FederatedConfig,
        text_vectors: FloatArray | None = None,
    ) -> MarketClient:
        """Fit the market's closed form and semantics; ``text_vectors``: item text
        embeddings (``cfg.semantics == "text"``), the same for every client."""
        data = split.data
        model_cfg = federated_model_config(
            markets=data.markets, items=data.items, model_settings=model_settings
        )
        blocks = Blocks.of(model_cfg, global_ease=False)
        train = cfg.train
        folds = fold_fits(split, blocks, folds=train.folds, seed=train.seed)
        torch.manual_seed(train.seed)  # the server's starting weights replace the shared ones
        model = HybridRecommender(model_cfg, fit_closed_form(split, blocks))
        model = model.to(resolve_device(train.device))
        vectors = text_vectors
        if cfg.semantics == "cooccurrence":
            walks = WalkSettings(dim=cfg.walk_dim, epochs=cfg.walk_epochs)
            vectors = cooccurrence_embeddings(split, settings=walks, seed=train.seed + market)
        elif cfg.semantics == "text" and text_vectors is None:
            raise ValueError("semantics=text needs item text (--item-text FILE)")
        semantics = None
        if cfg.semantics != "none" and vectors is not None:
            semantics = ItemSemantics.from_embeddings(
                vectors, k=cfg.s2ce_neighbours, temperature=cfg.s2ce_temperature,
                alpha=cfg.s2ce_alpha,
            )  # fmt: skip
        sets = UserSets.build(split, fold=folds.fold, max_history=model_cfg.max_history)
        return cls(
            market=market, split=split, model=model, folds=folds, sets=sets,
            semantics=semantics, cfg=cfg,
        )  # fmt: skip

    @property
    def code(self) -> str:
        return self.split.data.markets[self.market]

    @property
    def n_examples(self) -> int:
        """Training users (with at least two items): FedAvg's weight for this client."""
        return len(self.sets.users)

    def fit(
        self, weights: dict[str, torch.Tensor] | None, *, server_round: int, mu: float = 0.0
    ) -> tuple[dict[str, torch.Tensor], float]:
        """Start from the server's shared ``weights`` (None: keep its own), train
        ``local_epochs``; -> its shared weights and mean loss. ``mu`` > 0: FedProx."""
        model, train = self.model, self.cfg.train
        if weights is not None:
            load_weights(model, weights)
        shared = self._shared()
        anchor = [p.detach().clone() for p in shared] if mu > 0 else []
        opt = torch.optim.Adam(model.parameters(), lr=train.lr)
        rng = np.random.default_rng([train.seed, self.market, server_round])
        torch_rng = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
        # Dropout draws from torch's global generator, and Flower's strategies sample
        # the clients of a round in random order: seed it per client and round.
        torch.manual_seed(int(rng.integers(1 << 62)))
        data = self.epoch_data
        step = HybridStep(model)
        model.train()
        total, steps = 0.0, 0
        for _ in range(self.cfg.local_epochs):
            for batch in user_batches(rng, data.sets, data.rows, batch_size=train.batch_size):
                loss = batch_loss(
                    step, batch, data=data, cfg=train, rng=torch_rng, semantics=self.semantics
                )
                if anchor:  # FedProx: stay near the round's global weights
                    drift = sum(((p - a) ** 2).sum() for p, a in zip(shared, anchor, strict=True))
                    loss = loss + 0.5 * mu * drift
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, steps = total + float(loss.detach()), steps + 1
        log.info("%s round %d: loss %.4f", self.code, server_round, total / max(steps, 1))
        return shared_weights(model), total / max(steps, 1)

    @cached_property
    def epoch_data(self) -> EpochData:
        """Its users and its catalogue, as every round's epochs go over them."""
        return EpochData(
            sets=self.sets, folds=self.folds, rows=np.arange(len(self.sets.users)),
            catalogue=catalogue_mask(self.split),
        )  # fmt: skip

    def item_counts(self) -> torch.Tensor:
        """(V,) its training interactions per item: how much its rows of the item
        tables should count in the average (training/federated/strategy.py)."""
        counts = np.bincount(self.split.train_items, minlength=self.split.data.items.size)
        return torch.from_numpy(counts.astype(np.float32))

    def catalogue(self) -> Catalogue:
        """Its items and interactions with each, from all its rows: what the published
        version's catalogues hold for it (sent once, at the publish step)."""
        return Catalogue.from_interactions(self.split.data.item)

    def own_rows(self) -> dict[str, torch.Tensor]:
        """Every parameter the server does not replace (the market-row tables, whole):
        with its closed form and semantics, rebuilt from its data, the client's state."""
        return {n: getattr(self.model, n).detach().cpu().contiguous() for n in MARKET_ROWS}

    def own_state(self) -> dict[str, torch.Tensor]:
        """What a client rebuilt from its data for the next message must find again
        (deployment): its row tables, and its rows of each validated round."""
        state = self.own_rows()
        for r, rows in self.kept_rows.items():
            state |= {f"round-{r}/{n}": t for n, t in rows.items()}
        return state

    def load_own_state(self, state: dict[str, torch.Tensor]) -> None:
        load_weights(self.model, {n: t for n, t in state.items() if "/" not in n})
        for key, t in state.items():
            if "/" in key:
                at, name = key.split("/", 1)
                self.kept_rows.setdefault(int(at.removeprefix("round-")), {})[name] = t

    def _shared(self) -> list[torch.nn.Parameter]:
        names = set(shared_names(self.model))
        return [p for n, p in self.model.named_parameters() if n in names]

    @cached_property
    def valid_sets(self) -> list[Any]:
        train = self.cfg.train
        return [
            build_eval_set(self.split, p, "valid", seed=train.seed) for p in train.valid_protocols
        ]

    def validate(self, weights: dict[str, torch.Tensor] | None, *, server_round: int) -> float:
        """The round's shared ``weights`` (None: its own) with its own rows: its validation
        metric, averaged over the validation protocols as central training's epochs are;
        keeps its rows of the round."""
        if weights is not None:
            load_weights(self.model, weights)
        self.kept_rows[server_round] = self._rows()
        scorer = HybridScorer("valid", self.model)
        metric = self.cfg.train.valid_metric
        results = evaluate_sets(scorer, self.valid_sets, markets=[self.market])
        scores = [r.mean[metric] for r in results]
        return float(np.mean(scores))

    @torch.no_grad()
    def _rows(self) -> dict[str, torch.Tensor]:
        """Copies of its own rows of the market-row tables."""
        m = self.market
        return {n: getattr(self.model, n)[m].detach().cpu().clone() for n in MARKET_ROWS}

    @torch.no_grad()
    def _restore_rows(self, rows: dict[str, torch.Tensor]) -> None:
        for n, row in rows.items():
            getattr(self.model, n)[self.market] = row

    def adapt(self, weights: dict[str, torch.Tensor] | None) -> StageState:
        """The final shared ``weights``, then its own rows fine-tuned on its users with
        early stopping on its validation users (central adaptation, unchanged)."""
        if weights is not None:
            load_weights(self.model, weights)
        train = self.cfg.train
        with tempfile.TemporaryDirectory() as stage_dir:
            return run_hybrid_stage(
                f"adapt {self.code}", self.model, sets=self.sets, folds=self.folds,
                markets=[self.market], valid=self.valid_sets, cfg=train,
                stage_dir=Path(stage_dir), shared=False,
            )  # fmt: skip

    @cached_property
    def eval_sets(self) -> list[EvalSet]:
        """Its own users' candidates under each evaluation protocol and split: those
        central evaluation draws for them (built once, scored before and after
        adaptation)."""
        train = self.cfg.train
        return [
            build_eval_set(self.split, p, split, seed=train.seed)
            for split in train.eval_splits
            for p in train.eval_protocols
        ]

    def finish(
        self, weights: dict[str, torch.Tensor] | None, *, adapt: bool, best_round: int | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, float]]:
        """The publish step on the client: the chosen round's shared ``weights`` (None:
        its own) and its own rows of ``best_round`` (None: as they are), metrics,
        adaptation, metrics again -> its parts, its rows before adaptation, and
        ``rounds/...`` and ``adapted/...`` metrics (protocol/split/metric)."""
        if weights is not None:
            load_weights(self.model, weights)
        if best_round is not None:
            self._restore_rows(self.kept_rows[best_round])
        metrics = self._metrics("rounds")
        round_rows = self._rows()
        if adapt:
            torch.manual_seed(
                int(np.random.default_rng([self.cfg.train.seed, self.market]).integers(1 << 62))
            )
            stage = self.adapt(None)
            metrics["adapt-best-epoch"] = stage.best_epoch
            metrics.update(self._metrics("adapted"))
        return self.parts(), round_rows, metrics

    def _metrics(self, stage: str) -> dict[str, float]:
        out: dict[str, float] = {}
        scorer = HybridScorer(stage, self.model)
        results = evaluate_sets(scorer, self.eval_sets, markets=[self.market])
        for s, result in zip(self.eval_sets, results, strict=True):
            for metric, value in result.markets[self.code].items():
                out[f"{stage}/{result.protocol}/{s.split_name}/{metric}"] = value
        return out

    @torch.no_grad()
    def parts(self) -> dict[str, torch.Tensor]:
        """What the published model needs from this market: its rows and its block."""
        m = self.market
        out = self._rows()
        closed = self.model.closed_form
        at, size = int(closed.market_offset[m]), int(closed.market_size[m])
        out["block_items"] = torch.nonzero(closed.market_index[m] >= 0).squeeze(1).cpu()
        out["block_weights"] = closed.market_weights[at : at + size * size].cpu().contiguous()
        return out
