"""M3Rec's two global item similarities (Cao et al., 2022, section 3.1).

- Intra-market: EASE^R's item-item weights over every market's users, small weights
  filtered out (below ``epsilon``) and each row normalised to sum to 1 (eq. 7).
- Inter-market: item embeddings learned by skip-gram with negative sampling from
  random walks over the item co-occurrence graph A = X^T X of all markets (eq. 5, 6,
  9), where a walk steps from item i to j with probability A_ij / deg(i). Walks cross
  markets through the items they share. As in eq. 8 the trained tables are smoothed
  by the intra-market matrix: V = B V_init + V_init.

Both are fitted on the training split only; numpy and scipy build them, torch trains
the embeddings.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray

from model_store.vocab import IntArray
from training.split import Split

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float32]


@dataclass(frozen=True, kw_only=True)
class WalkSettings:
    """Sized for a 2-core machine: XMarket's 8,304 items give about 2.7 million
    skip-gram pairs per epoch. The paper's window is 10; its walk counts are not given."""

    walks_per_item: int = 5
    walk_length: int = 10
    window: int = 5
    negatives: int = 5
    dim: int = 64
    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 32768


def interaction_matrix(split: Split) -> sp.csr_matrix:
    """Binary (users, items) matrix of the training split, every market."""
    x = sp.csr_matrix(
        (np.ones(len(split.train_items), np.float32), (split.train_users(), split.train_items)),
        shape=(split.data.n_users, split.data.items.size),
    )
    x.data[:] = 1.0
    return x


def normalize_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its sum; empty rows stay empty."""
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    out: sp.csr_matrix = sp.diags(scale.astype(np.float32)) @ matrix
    return out.tocsr()


def intra_similarity(
    weights: FloatArray, items: IntArray, *, n_items: int, epsilon: float
) -> sp.csr_matrix:
    """B^Glob (eq. 7): EASE^R weights over ``items`` (local indices) >= epsilon, rows
    normalised, placed in the (n_items, n_items) item space."""
    rows, cols = np.nonzero(weights >= epsilon)
    kept = sp.csr_matrix(
        (weights[rows, cols].astype(np.float32), (items[rows], items[cols])),
        shape=(n_items, n_items),
    )
    return normalize_rows(kept)


def random_walks(
    cooccurrence: sp.csr_matrix, rng: np.random.Generator, settings: WalkSettings
) -> IntArray:
    """(W, L) walks started ``walks_per_item`` times from every connected item; each
    step goes to a neighbour with probability proportional to the co-occurrence."""
    graph = cooccurrence.tocsr()
    graph.setdiag(0)
    graph.eliminate_zeros()
    degree = np.asarray(graph.sum(axis=1)).ravel()
    starts = np.repeat(np.flatnonzero(degree > 0), settings.walks_per_item)
    walks = np.zeros((len(starts), settings.walk_length), np.int64)
    walks[:, 0] = starts
    # One searchsorted for all walkers: a row's neighbours own the stretch of the
    # cumulative weights between the row's start and end.
    cumulative = np.cumsum(graph.data, dtype=np.float64)
    before = np.concatenate([[0.0], cumulative])[graph.indptr[:-1]]
    for step in range(1, settings.walk_length):
        here = walks[:, step - 1]
        target = before[here] + rng.random(len(here)) * degree[here]
        pick = np.searchsorted(cumulative, target, side="right")
        pick = np.clip(pick, graph.indptr[here], graph.indptr[here + 1] - 1)
        walks[:, step] = graph.indices[pick]
    return walks


def skipgram_pairs(walks: IntArray, window: int) -> tuple[IntArray, IntArray]:
    """Every (centre, context) pair within ``window`` steps of each other in a walk."""
    centres, contexts = [], []
    for offset in range(1, min(window, walks.shape[1] - 1) + 1):
        centres += [walks[:, :-offset].ravel(), walks[:, offset:].ravel()]
        contexts += [walks[:, offset:].ravel(), walks[:, :-offset].ravel()]
    return np.concatenate(centres), np.concatenate(contexts)


def to_torch(matrix: sp.spmatrix) -> torch.Tensor:
    """A scipy sparse matrix as a torch COO tensor (not coalesced)."""
    coo = matrix.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        indices, torch.from_numpy(coo.data), coo.shape, check_invariants=False
    )


def walk_embeddings(
    intra: sp.csr_matrix,
    cooccurrence: sp.csr_matrix,
    *,
    settings: WalkSettings,
    seed: int,
) -> FloatArray:
    """V^Glob: skip-gram with negative sampling over random walks, each table
    smoothed by the intra-market similarity (eq. 8). Row 0 (PAD) stays unused."""
    rng = np.random.default_rng([seed, 11])
    torch.manual_seed(seed)
    walks = random_walks(cooccurrence, rng, settings)
    centres, contexts = skipgram_pairs(walks, settings.window)
    n_items = intra.shape[0]
    # Negatives from the unigram distribution of the walks to the power 3/4 (word2vec's).
    visits = np.bincount(walks.ravel(), minlength=n_items).astype(np.float64) ** 0.75
    noise = torch.from_numpy(visits / visits.sum())
    b = to_torch(intra).coalesce()  # multiplied every step: coalesce once
    init = torch.nn.Parameter(torch.randn(n_items, settings.dim) * 0.1)
    context_init = torch.nn.Parameter(torch.zeros(n_items, settings.dim))
    optimizer = torch.optim.Adam([init, context_init], lr=settings.lr)
    log.info("m3rec walks: %d walks, %d skip-gram pairs", len(walks), len(centres))
    for epoch in range(1, settings.epochs + 1):
        start, total = time.perf_counter(), 0.0
        order = torch.from_numpy(rng.permutation(len(centres)))
        for chunk in order.split(settings.batch_size):
            v = torch.sparse.mm(b, init) + init
            v_context = torch.sparse.mm(b, context_init) + context_init
            centre = v[torch.from_numpy(centres)[chunk]]  # (P, d)
            context = v_context[torch.from_numpy(contexts)[chunk]]  # (P, d)
            drawn = torch.multinomial(noise, len(chunk) * settings.negatives, replacement=True)
            noise_vectors = v_context[drawn].view(len(chunk), settings.negatives, -1)
            positive = torch.nn.functional.logsigmoid((centre * context).sum(-1))
            negative = torch.nn.functional.logsigmoid(
                -(noise_vectors @ centre.unsqueeze(-1)).squeeze(-1)
            ).sum(-1)
            loss = -(positive + negative).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(chunk)
        log.info(
            "m3rec walk embeddings epoch %d/%d: loss %.4f (%.1f s)",
            epoch,
            settings.epochs,
            total / len(centres),
            time.perf_counter() - start,
        )
    with torch.no_grad():
        final: FloatArray = (torch.sparse.mm(b, init) + init).numpy().astype(np.float32)
    return final
