"""M3Rec (Cao et al., 2022): global item similarities adapted to each local market.

Two global similarities (training/item_walks.py): the intra-market matrix B from
EASE^R and the inter-market item embeddings V^Glob from random walks. For market m
(section 3.2), over the items sold there:

    V^m = V^Glob + V^Loca_m                        an item's market embedding (eq. 10)
    U^m = Normalize(X^m B_m) V^m + U^Loca           a user's (eq. 11)
    score(u, i) = cosine(U^m_u, V^m_i)
    loss = (1 - score(u, i+)) + mean_k max(0, score(u, i_k) - gamma) + lam |V^Loca|^2

B_m is B restricted to the market's items, rows normalised again. All markets train
together (eq. 13), Adam, 10 negatives from the market's unbought items; V^Glob is
the shared starting point and trains too, V^Loca_m starts at zero and is kept small.

Choices where the paper is silent or where we depart from it, all documented:
- The positive is left out of its user's row when training (X^m minus the item), so
  a user is represented as at evaluation, where the held-out item is not in the
  history. A user whose row has no similar items falls back to its own items.
- EASE^R's lambda is chosen on validation (EASE^R's own validation NDCG) among 10,
  25 and 50, within the paper's search (10 to 50): epsilon's filter is meant for
  weights of that scale (at lambda 200, where the ``ease`` baseline lands on
  XMarket, epsilon 0.01 keeps about one weight per item). Also chosen on
  validation: the number of epochs (scored every ``eval_every`` epochs, the best
  snapshot kept) and the margin gamma, among the paper's grid (0.1 to 0.4).
  Epsilon and lam are the paper's reported defaults (0.01, 1e-7).
- Embeddings of 64 (the paper: 128) and the walk counts in WalkSettings keep a fit
  within minutes on 2 cores.

A user also has its own U^Loca row, so this is a ``UserScorer``: it reads the
history it is given (which at test time includes the validation item) and the user.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray
from torch import nn

from model_store.vocab import PAD, IntArray
from training.baselines import tune_ease
from training.evaluate import evaluate
from training.examples import Examples, NegativeSampler
from training.forec import positives, snapshot
from training.item_walks import (
    WalkSettings,
    interaction_matrix,
    intra_similarity,
    normalize_rows,
    to_torch,
    walk_embeddings,
)
from training.protocols import EvalSet, build_eval_set, market_catalogues
from training.split import Split

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class M3RecSettings:
    epsilon: float = 0.01
    gammas: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)  # the paper's grid for the margin
    local_l2: float = 1e-7
    negatives: int = 10
    lr: float = 0.001
    batch_size: int = 1024
    max_epochs: int = 20
    eval_every: int = 5
    lambdas: tuple[float, ...] = (10.0, 25.0, 50.0)  # within the paper's search, 10-50
    walks: WalkSettings = field(default_factory=WalkSettings)
    seed: int = 0


def market_similarity(intra: sp.csr_matrix, items: IntArray) -> sp.csr_matrix:
    """B_m: ``intra`` with rows and columns outside ``items`` dropped, rows renormalised."""
    keep = np.zeros(intra.shape[0], np.float32)
    keep[items] = 1.0
    mask = sp.diags(keep)
    return normalize_rows((mask @ intra @ mask).tocsr())


def user_rows(own: sp.csr_matrix, similarity: sp.csr_matrix) -> sp.csr_matrix:
    """Normalize(X B_m) for rows of own items X; an empty row falls back to X's own."""
    spread = normalize_rows((own @ similarity).tocsr())
    empty = (np.diff(spread.indptr) == 0).astype(np.float32)
    rows: sp.csr_matrix = (spread + sp.diags(empty) @ normalize_rows(own)).tocsr()
    return rows


def sparse_rows(items: IntArray, n_items: int) -> sp.csr_matrix:
    """Binary (B, n_items) rows from PAD-padded item rows."""
    rows, cols = np.nonzero(items != PAD)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, items[rows, cols])),
        shape=(items.shape[0], n_items),
    )
    matrix.data[:] = 1.0
    return matrix


class M3Rec(nn.Module):
    def __init__(self, glob: NDArray[np.float32], *, n_users: int, n_markets: int) -> None:
        super().__init__()
        n_items, dim = glob.shape
        self.glob = nn.Parameter(torch.from_numpy(glob.copy()))
        self.local = nn.ParameterList(
            nn.Parameter(torch.zeros(n_items, dim)) for _ in range(n_markets)
        )
        self.users = nn.Embedding(n_users, dim)
        nn.init.normal_(self.users.weight, std=0.01)

    def forward(
        self, market: int, rows: sp.csr_matrix, users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Cosine scores (B, C) of ``items`` for users of one market; ``rows`` (B, V)
        are the users' normalised similarity rows."""
        table = self.glob + self.local[market]  # V^m
        user = torch.sparse.mm(to_torch(rows), table) + self.users(users)  # (B, d)
        return nn.functional.cosine_similarity(user[:, None, :], table[items], dim=-1)


class M3RecScorer:
    """``evaluate``'s view of a fitted M3Rec: users' histories and indices in, scores out."""

    name = "m3rec"

    def __init__(
        self, model: M3Rec, similarities: list[sp.csr_matrix], params: dict[str, Any]
    ) -> None:
        self.model = model
        self.similarities = similarities
        self.params = params

    def score_users(
        self, users: IntArray, histories: IntArray, candidates: IntArray, markets: IntArray
    ) -> NDArray[np.float32]:
        scores = np.zeros(candidates.shape, np.float32)
        n_items = self.model.glob.shape[0]
        self.model.eval()
        for market in np.unique(markets):
            rows = np.flatnonzero(markets == market)
            own = sparse_rows(histories[rows], n_items)
            spread = user_rows(own, self.similarities[int(market)])
            with torch.no_grad():
                out = self.model(
                    int(market),
                    spread,
                    torch.from_numpy(users[rows]),
                    torch.from_numpy(candidates[rows]),
                )
            scores[rows] = out.numpy()
        return scores


@dataclass(frozen=True)
class Adaptation:
    """What every adaptation run shares: the global similarities and the examples."""

    glob: NDArray[np.float32]  # V^Glob
    similarities: list[sp.csr_matrix]  # B_m per market
    examples: Examples
    groups: list[IntArray]  # per market, its examples' positions
    spread: list[sp.csr_matrix]  # per market, its examples' user rows
    valid: EvalSet
    sampler: NegativeSampler
    params: dict[str, Any]


def prepare(split: Split, settings: M3RecSettings) -> Adaptation:
    """The global similarities (EASE^R's lambda chosen on validation) and every
    training example's user row, with the example's positive left out."""
    seed = settings.seed
    valid = build_eval_set(split, "market", "valid", seed=seed)
    (ease,) = tune_ease(split, [valid], grid=settings.lambdas)
    (block,) = ease.blocks
    n_items = split.data.items.size
    intra = intra_similarity(block.weights, block.items, n_items=n_items, epsilon=settings.epsilon)
    x = interaction_matrix(split)
    glob = walk_embeddings(intra, (x.T @ x).tocsr(), settings=settings.walks, seed=seed)
    similarities = [market_similarity(intra, items) for items in market_catalogues(split)]
    examples = positives(split, range(len(similarities)))
    own = x[examples.user] - sparse_rows(examples.target[:, None], n_items)
    own.eliminate_zeros()
    groups = [np.flatnonzero(examples.market == m) for m in range(len(similarities))]
    spread = [user_rows(own[g], b) for g, b in zip(groups, similarities, strict=True)]
    params = {
        **{k: v for k, v in asdict(settings).items() if k not in ("lambdas", "gammas", "seed")},
        "lambda": block.lam,
        "kept_similarities": int(intra.nnz),
    }
    sampler = NegativeSampler(split, pool="market")
    return Adaptation(glob, similarities, examples, groups, spread, valid, sampler, params)


def adapt(
    split: Split, shared: Adaptation, *, gamma: float, settings: M3RecSettings
) -> tuple[float, M3RecScorer]:
    """Every market's adaptation, trained together with margin ``gamma``; the snapshot
    with the best validation NDCG@10 (market protocol) is kept and returned with it."""
    torch.manual_seed(settings.seed)
    model = M3Rec(shared.glob, n_users=split.data.n_users, n_markets=len(shared.similarities))
    scorer = M3RecScorer(model, shared.similarities, {**shared.params, "gamma": gamma})
    examples, groups, spread = shared.examples, shared.groups, shared.spread
    rng = np.random.default_rng([settings.seed, 12])
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, snapshot(model))
    for epoch in range(1, settings.max_epochs + 1):
        start, total = time.perf_counter(), 0.0
        model.train()
        negatives = shared.sampler.sample(rng, examples, settings.negatives)
        items = np.concatenate([examples.target[:, None], negatives], axis=1)
        batches = [
            (m, chunk)  # chunk: positions in groups[m] and spread[m]
            for m, group in enumerate(groups)
            for chunk in np.array_split(
                rng.permutation(len(group)), max(1, -(-len(group) // settings.batch_size))
            )
            if len(chunk)
        ]
        for i in rng.permutation(len(batches)):
            m, chunk = batches[i]
            rows = groups[m][chunk]
            scores = model(
                m,
                spread[m][chunk],
                torch.from_numpy(examples.user[rows]),
                torch.from_numpy(items[rows]),
            )
            real = torch.from_numpy(items[rows, 1:] != PAD).float()
            hinge = (torch.relu(scores[:, 1:] - gamma) * real).sum(-1)
            loss = ((1 - scores[:, 0]) + hinge / real.sum(-1).clamp(min=1)).mean()
            loss = loss + settings.local_l2 * model.local[m].pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(chunk)
        message = (
            f"m3rec, gamma {gamma:g}, epoch {epoch}/{settings.max_epochs}: "
            f"loss {total / len(examples):.4f}"
        )
        if epoch % settings.eval_every == 0 or epoch == settings.max_epochs:
            ndcg = evaluate(scorer, shared.valid).mean["ndcg@10"]
            message += f", valid NDCG@10 {ndcg:.4f}"
            if ndcg > best[0]:
                best = (ndcg, epoch, snapshot(model))
        log.info("%s (%.1f s)", message, time.perf_counter() - start)
    model.load_state_dict(best[2])
    scorer.params["epochs"] = best[1]
    log.info("m3rec, gamma %g: kept epoch %d (valid NDCG@10 %.4f)", gamma, best[1], best[0])
    return best[0], scorer


def fit_m3rec(split: Split, settings: M3RecSettings) -> M3RecScorer:
    """Global similarities once, then the adaptation for each margin in the grid; the
    one with the best validation NDCG@10 (market protocol) is kept."""
    shared = prepare(split, settings)
    runs = [adapt(split, shared, gamma=g, settings=settings) for g in settings.gammas]
    ndcg, scorer = max(runs, key=lambda run: run[0])
    log.info("m3rec: chose gamma %g (valid NDCG@10 %.4f)", scorer.params["gamma"], ndcg)
    return scorer
