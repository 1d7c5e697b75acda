"""NeuMF (He et al., 2017): GMF and an MLP tower over user and item embeddings, fused.

The network of the XMarket paper's NMF, NMF++ and FOREC (Bonab et al., 2021): GMF
embeddings of 8, an MLP of widths [16, 64, 32, 16, 8] (16 = the concatenated user and
item MLP embeddings, 8 each), ReLU, and one output unit over [GMF (8), MLP (8)] = 16.

FOREC's fork keeps this body and inserts a market head between the fused vector and
a new output unit: ``head=(16, 32, 16)`` adds the layers 16 -> 32 -> 16. ``fork``
builds it from a trained model and freezes the bottom (see ``FROZEN_MLP_LAYERS``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise

import torch
from torch import nn

# The fork freezes the embeddings (GMF has no other weights) and the MLP's first two
# layers (16 -> 64 -> 32); the last two MLP layers (32 -> 16 -> 8) and the output stay
# trainable: the paper forks "the last three layers of the NMF network".
FROZEN_MLP_LAYERS = 2


def tower(widths: tuple[int, ...]) -> nn.Sequential:
    """Linear + ReLU for each consecutive pair of widths."""
    layers: list[nn.Module] = []
    for n_in, n_out in pairwise(widths):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


@dataclass(frozen=True, kw_only=True)
class NeuMFConfig:
    n_users: int
    n_items: int  # including PAD at index 0
    gmf_dim: int = 8
    mlp: tuple[int, ...] = (16, 64, 32, 16, 8)  # mlp[0] = user + item MLP embeddings
    head: tuple[int, ...] = ()  # market head widths; head[0] = gmf_dim + mlp[-1]

    def __post_init__(self) -> None:
        if len(self.mlp) < 2 or self.mlp[0] % 2:
            raise ValueError(f"mlp widths {self.mlp}: need two or more, the first even")
        if self.head and self.head[0] != self.fused:
            raise ValueError(f"the market head {self.head} must start at width {self.fused}")

    @property
    def fused(self) -> int:
        return self.gmf_dim + self.mlp[-1]


class NeuMF(nn.Module):
    def __init__(self, cfg: NeuMFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        half = cfg.mlp[0] // 2
        self.gmf_user = nn.Embedding(cfg.n_users, cfg.gmf_dim)
        self.gmf_item = nn.Embedding(cfg.n_items, cfg.gmf_dim)
        self.mlp_user = nn.Embedding(cfg.n_users, half)
        self.mlp_item = nn.Embedding(cfg.n_items, half)
        self.mlp = tower(cfg.mlp)
        self.head = tower(cfg.head)  # empty without a market head
        self.out = nn.Linear(cfg.head[-1] if cfg.head else cfg.fused, 1)
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(emb.weight, std=0.01)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users (B,), items (B, C) -> logits (B, C)."""
        n_candidates = items.shape[1]
        gmf = self.gmf_user(users)[:, None, :] * self.gmf_item(items)  # (B, C, gmf_dim)
        user = self.mlp_user(users)[:, None, :].expand(-1, n_candidates, -1)  # (B, C, half)
        mlp = self.mlp(torch.cat([user, self.mlp_item(items)], dim=-1))  # (B, C, mlp[-1])
        fused = self.head(torch.cat([gmf, mlp], dim=-1))  # (B, C, head[-1] or fused)
        return self.out(fused).squeeze(-1)  # (B, C)

    def bottom(self) -> list[nn.Parameter]:
        """What a fork freezes: the embeddings and the MLP's first layers."""
        linears = [m for m in self.mlp if isinstance(m, nn.Linear)][:FROZEN_MLP_LAYERS]
        modules: list[nn.Module] = [
            self.gmf_user,
            self.gmf_item,
            self.mlp_user,
            self.mlp_item,
            *linears,
        ]
        return [p for m in modules for p in m.parameters()]


def fork(general: NeuMF, head: tuple[int, ...]) -> NeuMF:
    """A market's copy of ``general`` with a fresh market head and output, bottom frozen.

    The embeddings and MLP are copied; the head and output unit start at random.
    """
    forked = NeuMF(replace(general.cfg, head=head))
    body = {k: v for k, v in general.state_dict().items() if not k.startswith(("head.", "out."))}
    forked.load_state_dict(body, strict=False)
    for p in forked.bottom():
        p.requires_grad_(False)
    return forked
