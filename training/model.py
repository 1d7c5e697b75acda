"""Bert4CMR (Bert4XMR): a bidirectional Transformer over a user's history and a candidate.

Every token is item embedding + market embedding, then LayerNorm and dropout; no
position embedding. L post-norm encoder layers with padding masked out; the user
vector is the mean of the outputs at history positions; the score is
sigmoid(W [user ; candidate output] + b).

Two variants (``Bert4CMRConfig.variant``) share every weight and differ only in the
attention mask:

- ``paper``: the sequence is history + one candidate and every token attends to
  every other, so the history is re-encoded for each candidate (B x C sequences).
- ``history-once``: history tokens attend to history only, and each of
  the C candidates to the history and itself. The history is encoded once per
  user, and a candidate costs O(N), which makes scoring many candidates cheap.

``forward`` returns logits; the scoring graphs apply the sigmoid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_store.vocab import PAD

# Added to attention scores of forbidden keys; finite so a query with no allowed
# key (an empty history) gets uniform weights instead of NaN.
MASKED = -1e9

Variant = Literal["paper", "history-once"]


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d) -> q, k, v, each (B, H, T, dh)."""
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def _merge(self, y: Tensor) -> Tensor:
        """(B, H, T, dh) -> (B, T, d)."""
        b, h, t, dh = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * dh))

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """x (B, T, d), bias (B, 1, 1, T) additive over keys -> (B, T, d)."""
        q, k, v = self._heads(x)
        p = self.dropout if self.training else 0.0
        return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p))

    def forward_split(self, h: Tensor, c: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """History h (B, N, d) attends to itself; each candidate of c (B, C, d) to the
        history and itself. bias (B, 1, 1, N) masks history keys. Costs O(C * N), not
        O((N + C)^2): no candidate-to-candidate scores are ever formed."""
        qh, kh, vh = self._heads(h)
        qc, kc, vc = self._heads(c)
        p = self.dropout if self.training else 0.0
        h_out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias, dropout_p=p)
        scale = qc.shape[-1] ** -0.5
        to_history = qc @ kh.transpose(-1, -2) * scale + bias  # (B, H, C, N)
        to_self = (qc * kc).sum(-1, keepdim=True) * scale  # (B, H, C, 1)
        weights = F.dropout(torch.cat([to_history, to_self], -1).softmax(-1), p, self.training)
        n = kh.shape[2]
        c_out = weights[..., :n] @ vh + weights[..., n:] * vc  # (B, H, C, dh)
        return self._merge(h_out), self._merge(c_out)


class EncoderLayer(nn.Module):
    """Post-norm Transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.ReLU(), nn.Linear(4 * d_model, d_model)
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def _finish(self, x: Tensor, attended: Tensor) -> Tensor:
        x = self.norm1(x + self.drop(attended))
        return self.norm2(x + self.drop(self.ffn(x)))

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        return self._finish(x, self.attn(x, bias))

    def forward_split(self, h: Tensor, c: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        h_att, c_att = self.attn.forward_split(h, c, bias)
        return self._finish(h, h_att), self._finish(c, c_att)


@dataclass(frozen=True, kw_only=True)
class Bert4CMRConfig:
    n_items: int  # embedding rows, padding (index 0) included
    n_markets: int
    d_model: int = 32
    n_layers: int = 4
    n_heads: int = 8
    dropout: float = 0.3
    max_history: int = 50
    market_embedding: bool = True  # False: the paper's ablation without E_mkt
    variant: Variant = "paper"  # the attention pattern; the weights fit both


class Bert4CMR(nn.Module):
    def __init__(self, config: Bert4CMRConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.items = nn.Embedding(config.n_items, d, padding_idx=PAD)
        self.markets = nn.Embedding(config.n_markets, d) if config.market_embedding else None
        self.embed_norm = nn.LayerNorm(d)
        self.embed_drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.head = nn.Linear(2 * d, 1)

    def embed(self, tokens: Tensor, markets: Tensor) -> Tensor:
        """tokens (B, T), markets (B,) -> (B, T, d)."""
        x = self.items(tokens)
        if self.markets is not None:
            x = x + self.markets(markets)[:, None, :]
        return self.embed_drop(self.embed_norm(x))

    @staticmethod
    def key_bias(tokens: Tensor) -> Tensor:
        """(B, T) tokens -> (B, 1, 1, T) additive bias hiding PAD keys from every query."""
        zero = torch.zeros((), dtype=torch.float32, device=tokens.device)
        bias = torch.where(tokens == PAD, torch.full_like(zero, MASKED), zero)  # (B, T)
        return bias[:, None, None, :]

    def forward(self, histories: Tensor, candidates: Tensor, markets: Tensor) -> Tensor:
        """histories (B, N), candidates (B, C), markets (B,) -> logits (B, C)."""
        if self.config.variant == "paper":
            return self._forward_paper(histories, candidates, markets)
        return self._forward_history_once(histories, candidates, markets)

    def _score(self, history_out: Tensor, history_mask: Tensor, candidate_out: Tensor) -> Tensor:
        """User = mean of history outputs (B', N, d) over real items; with candidate
        outputs (B', C', d) -> logits (B', C')."""
        weights = history_mask.to(history_out.dtype)[..., None]  # (B', N, 1)
        user = (history_out * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B', d)
        user = user[:, None, :].expand_as(candidate_out)  # (B', C', d)
        return self.head(torch.cat([user, candidate_out], dim=-1)).squeeze(-1)

    def _forward_paper(self, histories: Tensor, candidates: Tensor, markets: Tensor) -> Tensor:
        b, n = histories.shape
        c = candidates.shape[1]
        hist = histories[:, None, :].expand(b, c, n).reshape(b * c, n)  # (B*C, N)
        tokens = torch.cat([hist, candidates.reshape(b * c, 1)], dim=1)  # (B*C, N+1)
        mkts = markets[:, None].expand(b, c).reshape(b * c)
        x = self.embed(tokens, mkts)
        bias = self.key_bias(tokens)
        for layer in self.layers:
            x = layer(x, bias)
        return self._score(x[:, :n], hist != PAD, x[:, n:]).reshape(b, c)

    def _forward_history_once(
        self, histories: Tensor, candidates: Tensor, markets: Tensor
    ) -> Tensor:
        h = self.embed(histories, markets)  # (B, N, d)
        c = self.embed(candidates, markets)  # (B, C, d)
        bias = self.key_bias(histories)
        for layer in cast(Iterable[EncoderLayer], self.layers):
            h, c = layer.forward_split(h, c, bias)
        return self._score(h, histories != PAD, c)  # (B, C)
