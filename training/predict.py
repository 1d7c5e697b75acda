"""Bert4CMR models as scorers for ``evaluate``: numpy in, numpy out, in bounded chunks."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from numpy.typing import NDArray

from model_store.vocab import IntArray, recent_histories
from training.model import Bert4CMR

# Tokens per model call, which bounds memory: the paper variant encodes B x C
# sequences of N + 1 tokens, the history-once variant B sequences of N + C.
MAX_TOKENS = 1 << 18


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
        self, markets: IntArray, histories: IntArray, candidates: IntArray
    ) -> NDArray[np.float32]:
        scores = np.zeros(candidates.shape, np.float32)
        for market in np.unique(markets):
            model = self._model(int(market))
            model.eval()
            rows = np.flatnonzero(markets == market)
            hist = recent_histories(histories[rows], model.config.max_history)
            n, c = hist.shape[1], candidates.shape[1]
            per_row = c * (n + 1) if model.config.history_sees_candidate else n + c
            step = max(1, MAX_TOKENS // per_row)
            for start in range(0, len(rows), step):
                part = slice(start, start + step)
                logits = model(
                    torch.from_numpy(hist[part]),
                    torch.from_numpy(candidates[rows[part]]),
                    torch.from_numpy(markets[rows[part]]),
                )
                scores[rows[part]] = logits.numpy()
        return scores
