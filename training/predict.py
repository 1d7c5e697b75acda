"""Trained torch models as scorers for ``evaluate``: numpy in, numpy out, in bounded chunks.

``TorchScorer`` scores with Bert4CMR (one model per market, or one for all),
``HybridScorer`` with the hybrid, one model for every market.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from numpy.typing import NDArray

from model_store.vocab import IntArray, recent_histories
from training.hybrid import HybridRecommender
from training.model import Bert4CMR

# Tokens per model call, which bounds memory: the paper variant encodes B x C
# sequences of N + 1 tokens, the history-once variant B sequences of N + C.
# A GPU wants larger calls (fewer launches); 1 << 20 keeps a paper-variant call
# near 4 GB, so several runs can share one card.
MAX_TOKENS = {"cpu": 1 << 18, "cuda": 1 << 20}


class TorchScorer:
    """Scores with one model per market (fine-tuned copies), or one model for all."""

    def __init__(self, name: str, models: Mapping[int, Bert4CMR] | Bert4CMR) -> None:
        self.name = name
        self.models = models

    def _model(self, market: int) -> Bert4CMR:
        if isinstance(self.models, Bert4CMR):
            return self.models
        if market not in self.models:
            raise ValueError(f"{self.name} has no model for market index {market}")
        return self.models[market]

    @torch.no_grad()
    def score(
        self, histories: IntArray, candidates: IntArray, markets: IntArray
    ) -> NDArray[np.float32]:
        scores = np.zeros(candidates.shape, np.float32)
        for market in np.unique(markets):
            model = self._model(int(market))
            model.eval()
            device = next(model.parameters()).device
            rows = np.flatnonzero(markets == market)
            hist = recent_histories(histories[rows], model.config.max_history)
            n, c = hist.shape[1], candidates.shape[1]
            per_row = c * (n + 1) if model.config.variant == "paper" else n + c
            step = max(1, MAX_TOKENS.get(device.type, MAX_TOKENS["cpu"]) // per_row)
            for start in range(0, len(rows), step):
                part = slice(start, start + step)
                logits = model(
                    torch.from_numpy(hist[part]).to(device),
                    torch.from_numpy(candidates[rows[part]]).to(device),
                    torch.from_numpy(markets[rows[part]]).to(device),
                )
                scores[rows[part]] = logits.cpu().numpy()
        return scores


class HybridScorer:
    """The hybrid as an ``evaluate`` scorer: whole-vocabulary logits, then the candidates'
    (``catalogue_logits``, tested equal to the scoring graph's ``forward``)."""

    def __init__(self, name: str, model: HybridRecommender, chunk: int = 1024) -> None:
        self.name = name
        self.model = model
        self.chunk = chunk

    @torch.no_grad()
    def score(
        self, histories: IntArray, candidates: IntArray, markets: IntArray
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
