"""The hybrid: EASE^R's closed form plus a learned, market-aware correction, one graph.

A candidate c of a user in market m with history h gets the logit

    w_m,g * sum_i G[h_i, c]          EASE^R over every market's users (shared)
  + w_m,k * sum_i K_m[h_i, c]        EASE^R over market m's users alone (market m's own)
  + w_m,n * (u(h, m) . e_c + b_m,c)  a set encoder over the history, scored against the
                                     candidate's own embedding, plus an item bias

u(h, m) is the mean of the history's item embeddings (after ``n_layers`` of
self-attention over the history, when asked for) plus a market vector, and e_c
is the same embedding table (tied), so a whole catalogue is one matrix product.
The closed-form weights are fitted once, from data, and never trained; the rest
is learned with a softmax over the market's catalogue.

Market conditioning is a shared backbone plus per-market parameters: the mix
w_m and the item bias b_m are shared values plus market m's own deltas; the
market vector and K_m are market m's own. They are rows chosen by the ``market``
input, so one graph serves every market. Row ``n_markets`` is all zeros: a
market without parameters of its own uses the shared ones alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model_store.vocab import PAD
from training.model import Bert4CMR, EncoderLayer

# Starting mix [global EASE^R, market EASE^R, network]: EASE^R scores are fractions
# (a user's items predict each other with weights of about 0.01-0.5), and a softmax
# over thousands of items wants logits that differ by several units.
INITIAL_MIX = (10.0, 5.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class HybridConfig:
    n_items: int  # embedding rows, padding (index 0) included
    n_markets: int
    d_model: int = 256
    n_layers: int = 0  # self-attention layers over the history; 0: mean of embeddings
    n_heads: int = 4
    dropout: float = 0.3
    max_history: int = 50
    # Networks side by side: the item table and market vectors are networks x d_model
    # wide, and a dot product over the whole width is the sum of each network's own
    # (pre-training sums the networks its two learning rates trained: summed_networks).
    networks: int = 1
    neural: bool = True  # False: the closed-form scores alone, mixed per market
    global_ease: bool = True
    market_ease: bool = True
    # The closed form's settings; None: `cmr train` chooses them on the validation split
    # (training/closed_form_choice.py) and the run's config.json holds the choice.
    ease_lambda: float | None = None  # L2 of the shared EASE^R block
    market_ease_lambda: float | None = None  # L2 of each market's block
    market_ease_lambdas: tuple[float, ...] = ()  # per market, in market order (given only)
    # A pair of one user's items counts floor + (1 - floor) * exp(-days apart / days) in
    # the blocks' co-occurrences (training/closed_form.py); 0 days: every pair counts 1.
    cooccurrence_days: float | None = None
    cooccurrence_floor: float = 0.2
    # The markets' blocks' share of the closed form's weight in the mix the model starts
    # from (the shared block has the rest; the two weigh INITIAL_MIX[0] + INITIAL_MIX[1]
    # together, which keeps the softmax's scale); None: INITIAL_MIX's (1/3).
    market_ease_share: float | None = None
    # Each block's column for item c is divided by (c's count in the block) ** penalty:
    # 0 is EASE^R's weights; more ranks popular items lower (training/closed_form.py).
    popularity_penalty: float | None = None


def start_mix(config: HybridConfig) -> tuple[float, float, float]:
    """The mix a model starts from: INITIAL_MIX, the closed form's weight shared between
    its blocks as ``market_ease_share`` says."""
    shared, market, network = INITIAL_MIX
    share = start_share(config)
    return (shared + market) * (1 - share), (shared + market) * share, network


def start_share(config: HybridConfig) -> float:
    """The markets' blocks' share of the closed form's starting weight."""
    shared, market, _ = INITIAL_MIX
    given = config.market_ease_share
    return market / (shared + market) if given is None else given


@dataclass(frozen=True, kw_only=True)
class ClosedForm:
    """EASE^R weights in compact blocks: only items seen in training get a row.

    ``global_index[v]`` is item v's row in the shared block (-1: none). Market m's
    block starts at ``market_offset[m]`` of ``market_weights``, is
    ``market_size[m]`` square, and ``market_index[m, v]`` is item v's row in it.
    """

    global_index: Tensor  # (V,) int64
    global_weights: Tensor  # (Vg * Vg,), at least one element
    market_index: Tensor  # (M + 1, V) int64; the shared row has no block: all -1
    market_offset: Tensor  # (M + 1,) int64
    market_size: Tensor  # (M + 1,) int64
    market_weights: Tensor  # (sum of Vm * Vm,), at least one element
    global_size: int  # Vg, kept as a number so an exported graph has it as a constant

    def tensors(self) -> dict[str, Tensor]:
        return {name: t for name, t in vars(self).items() if isinstance(t, Tensor)}

    def scores(self, histories: Tensor, candidates: Tensor, markets: Tensor) -> Tensor:
        """(B, N), (B, C), (B,) -> (B, 2, C): shared and market scores, gathered per
        candidate (cheap when C is small; no (B, V) intermediate)."""
        b = histories.shape[0]
        size = self.global_index.new_full((b,), self.global_size)
        shared = _block_scores(
            self.global_weights,
            self.global_index[histories],
            self.global_index[candidates],
            size=size,
            offset=torch.zeros_like(size),
        )
        index = self.market_index[markets]  # (B, V)
        own = _block_scores(
            self.market_weights,
            index.gather(1, histories),
            index.gather(1, candidates),
            size=self.market_size[markets],
            offset=self.market_offset[markets],
        )
        return torch.stack([shared, own], dim=1)

    def catalogue_scores(self, histories: Tensor, markets: Tensor) -> Tensor:
        """``scores`` for every item at once, as sums of block rows -> (B, 2, V)."""
        b, v = histories.shape[0], self.global_index.shape[0]
        out = torch.zeros((b, 2, v), device=histories.device)
        rows = torch.arange(b, device=histories.device)[:, None].expand_as(histories)
        blocks = [(self.global_index, self.global_weights, 0, self.global_size, None)]
        for m in markets.unique().tolist():
            offset, size = int(self.market_offset[m]), int(self.market_size[m])
            blocks.append((self.market_index[m], self.market_weights, offset, size, m))
        for index, weights, offset, size, market in blocks:
            if size == 0:
                continue
            square = weights[offset : offset + size * size].view(size, size)
            at = index[histories]  # (B, N)
            use = at >= 0
            if market is not None:
                use &= (markets == market)[:, None]
            summed = torch.zeros((b, size), device=histories.device)
            summed.index_add_(0, rows[use], square[at[use]].float())  # (B, size)
            items = torch.nonzero(index >= 0).squeeze(1)  # block row r is items[r]
            out[:, 0 if market is None else 1, items] += summed
        return out


def _block_scores(
    weights: Tensor, hist: Tensor, cand: Tensor, *, size: Tensor, offset: Tensor
) -> Tensor:
    """sum_i W[h_i, c] for rows ``hist`` (B, N) and columns ``cand`` (B, C) of square
    blocks in the flat ``weights`` (row-major, ``size`` (B,) wide, at ``offset`` (B,));
    -1 marks an item without a row -> (B, C)."""
    known = (hist >= 0)[:, :, None] & (cand >= 0)[:, None, :]  # (B, N, C)
    at = (
        offset[:, None, None]
        + hist.clamp(min=0)[:, :, None] * size[:, None, None]
        + cand.clamp(min=0)[:, None, :]
    )  # (B, N, C)
    values = weights[at].float()  # stored as float16: half the memory, ranks unchanged
    return torch.where(known, values, torch.zeros_like(values)).sum(1)


class HybridRecommender(nn.Module):
    def __init__(self, config: HybridConfig, closed_form: ClosedForm) -> None:
        super().__init__()
        self.config = config
        d, rows = config.d_model * config.networks, config.n_markets + 1
        for name, tensor in closed_form.tensors().items():
            self.register_buffer(name, tensor)
        self.global_size = closed_form.global_size
        self.items = nn.Embedding(config.n_items, d, padding_idx=PAD)
        nn.init.normal_(self.items.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[PAD].zero_()
        self.layers = nn.ModuleList(
            EncoderLayer(d, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.drop = nn.Dropout(config.dropout)
        self.shared_mix = nn.Parameter(torch.tensor(start_mix(config)))
        self.shared_bias = nn.Parameter(torch.zeros(config.n_items))
        # Each market's own parameters, one row per market; the last row stays zero.
        self.market_vectors = nn.Parameter(torch.zeros(rows, d))
        self.market_bias = nn.Parameter(torch.zeros(rows, config.n_items))
        self.market_mix = nn.Parameter(torch.zeros(rows, 3))

    @property
    def shared_row(self) -> int:
        """The ``market`` input of a market without parameters of its own."""
        return self.config.n_markets

    @property
    def closed_form(self) -> ClosedForm:
        fields = ClosedForm.__dataclass_fields__
        return ClosedForm(**{name: getattr(self, name) for name in fields})

    def user_vectors(self, histories: Tensor, markets: Tensor) -> Tensor:
        """(B, N), (B,) -> (B, d): the history's mean embedding plus the market's vector."""
        x = self.items(histories)  # (B, N, d)
        real = (histories != PAD)[..., None].to(x.dtype)  # (B, N, 1)
        if self.layers:
            bias = Bert4CMR.key_bias(histories)  # (B, 1, 1, N)
            for layer in self.layers:
                x = layer(x, bias)
        mean = (x * real).sum(1) / real.sum(1).clamp(min=1.0)  # (B, d)
        return self.drop(mean) + self.market_vectors[markets]

    def network_scores(self, users: Tensor, candidates: Tensor, markets: Tensor) -> Tensor:
        """(B, d), (B, C), (B,) -> (B, C): u . e_c + b_m,c."""
        dot = (self.items(candidates) * users[:, None, :]).sum(-1)  # (B, C)
        return dot + self.shared_bias[candidates] + self.market_bias[markets[:, None], candidates]

    def catalogue_network_scores(self, users: Tensor, markets: Tensor) -> Tensor:
        """``network_scores`` for every item at once, one matrix product -> (B, V)."""
        return users @ self.items.weight.T + self.shared_bias + self.market_bias[markets]

    def combine(self, closed_form: Tensor, network: Tensor, markets: Tensor) -> Tensor:
        """closed-form (B, 2, C) and network (B, C) scores -> logits (B, C)."""
        mix = self.shared_mix + self.market_mix[markets]  # (B, 3)
        logits = closed_form.new_zeros(network.shape)
        if self.config.global_ease:
            logits = logits + mix[:, :1] * closed_form[:, 0]
        if self.config.market_ease:
            logits = logits + mix[:, 1:2] * closed_form[:, 1]
        if self.config.neural:
            logits = logits + mix[:, 2:] * network
        return logits

    def forward(self, histories: Tensor, candidates: Tensor, markets: Tensor) -> Tensor:
        """histories (B, N), candidates (B, C), markets (B,) -> logits (B, C)."""
        closed = self.closed_form.scores(histories, candidates, markets)
        network = closed.new_zeros(candidates.shape)
        if self.config.neural:
            users = self.user_vectors(histories, markets)
            network = self.network_scores(users, candidates, markets)
        return self.combine(closed, network, markets)

    def catalogue_logits(self, histories: Tensor, markets: Tensor) -> Tensor:
        """``forward`` for every item of the vocabulary at once -> (B, V); PAD's column
        is meaningless. Ranking whole catalogues this way costs two sums of block rows
        and one matrix product instead of B x N x V gathers."""
        closed = self.closed_form.catalogue_scores(histories, markets)
        network = closed.new_zeros((histories.shape[0], self.config.n_items))
        if self.config.neural:
            users = self.user_vectors(histories, markets)
            network = self.catalogue_network_scores(users, markets)
        return self.combine(closed, network, markets)


def scaled_network(weights: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """Learned weights whose network term (dot product and item bias) is ``scale`` x
    ``weights``'s in every market: the mix's network column scaled."""
    out = dict(weights)
    for name in ("shared_mix", "market_mix"):
        out[name] = weights[name].clone()
        out[name][..., 2] *= scale
    return out


def summed_networks(
    first: dict[str, Tensor], second: dict[str, Tensor], *, weight: float
) -> dict[str, Tensor]:
    """Learned weights of one model whose logits are about ``weight`` x ``first``'s plus
    (1 - ``weight``) x ``second``'s (two models of one shape, no attention layers): the
    networks side by side (``networks`` twice theirs), each scaled by the square root of
    its share of the network's mix, so their dot products add up in those shares. The
    mixes are averaged; item biases are set so that each market's bias term is the
    weighted sum of the two exactly; the networks' terms are exact where the two mixes
    are in the same ratio in every market (they are within a few percent in practice)."""
    a, b = weight, 1.0 - weight
    mix = {n: a * first[n] + b * second[n] for n in ("shared_mix", "market_mix")}
    net = mix["shared_mix"][2]
    share_a, share_b = a * first["shared_mix"][2] / net, b * second["shared_mix"][2] / net
    out = dict(mix)
    for name in ("items.weight", "market_vectors"):
        out[name] = torch.cat([share_a.sqrt() * first[name], share_b.sqrt() * second[name]], 1)

    def bias_term(w: dict[str, Tensor], weight: float) -> Tensor:  # (M + 1, V)
        network_mix = w["shared_mix"][2] + w["market_mix"][:, 2:]
        return weight * network_mix * (w["shared_bias"] + w["market_bias"])

    per_market = (bias_term(first, a) + bias_term(second, b)) / (net + mix["market_mix"][:, 2:])
    out["shared_bias"] = per_market[-1]  # the row of a market without parameters
    out["market_bias"] = per_market - per_market[-1]
    return out
