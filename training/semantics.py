"""Item-item semantic neighbours: the soft targets of S2CE (FeCoSR's semantic soft
cross-entropy, training/hybrid_examples.py).

FeCoSR spreads part of each target's probability over items that mean the same
thing, so that markets whose users buy different but similar items pull the shared
item embeddings the same way. Its semantics come from item text. XMarket's metadata
(titles, categories) is not in our data folder, so two sources:

- ``text_embeddings``: item text from a metadata file (JSON lines, XMarket's
  ``metadata_*.json`` format: an id field and title / categories / description),
  TF-IDF over words reduced by a truncated SVD. Text is catalogue information,
  the same for every market, so every client of a federation builds the same
  neighbours without sharing anything.
- ``cooccurrence_embeddings``: the item embeddings of random walks over the item
  co-occurrence graph of a split's training rows (training/item_walks.py, M3Rec's),
  built where the rows are: in a federation, each client from its own market.

Either way ``ItemSemantics.from_embeddings`` keeps each item's ``k`` most similar
items (cosine) and weighs them by a softmax of similarity / ``temperature``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray
from scipy.sparse.linalg import svds

from model_store.vocab import PAD, Vocabulary
from training.item_walks import WalkSettings, interaction_matrix, normalize_rows, walk_embeddings
from training.split import Split

ID_FIELDS = ("asin", "itemId", "item_id", "id")
TEXT_FIELDS = ("title", "categories", "category", "description")
FloatArray = NDArray[np.float32]


@dataclass(frozen=True, kw_only=True)
class ItemSemantics:
    """Each item's semantic neighbours and their weights (PAD and weight 0: none)."""

    neighbours: torch.Tensor  # (V, K) int64
    weights: torch.Tensor  # (V, K) float32, each row sums to 1 or is all 0
    alpha: float  # share of a target's probability given to its neighbours

    @classmethod
    def from_embeddings(
        cls, vectors: FloatArray, *, k: int, temperature: float, alpha: float, chunk: int = 2048
    ) -> ItemSemantics:
        """Neighbours by cosine similarity of ``vectors`` (V, d); an all-zero row (PAD,
        an item without text or co-occurrence) has none and is nobody's neighbour."""
        n = vectors.shape[0]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # An SVD leaves round-off, not zeros, in the rows of items without text.
        known = norms[:, 0] > 1e-6 * max(float(norms.max(initial=0.0)), 1e-30)
        unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=known[:, None])
        k = max(0, min(k, int(known.sum()) - 1))
        neighbours = np.zeros((n, k), np.int64)
        weights = np.zeros((n, k), np.float32)
        for start in range(0, n if k else 0, chunk):
            rows = np.arange(start, min(start + chunk, n))
            sim = unit[rows] @ unit.T  # (r, V)
            sim[:, ~known] = -np.inf
            sim[np.arange(len(rows)), rows] = -np.inf  # never its own neighbour
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            top_sim = np.take_along_axis(sim, top, axis=1)
            scaled = np.exp((top_sim - top_sim.max(1, keepdims=True)) / temperature)
            neighbours[rows] = top
            weights[rows] = scaled / scaled.sum(1, keepdims=True)
        weights[~known] = 0.0
        neighbours[~known] = PAD
        return cls(
            neighbours=torch.from_numpy(neighbours),
            weights=torch.from_numpy(weights),
            alpha=alpha,
        )


def cooccurrence_embeddings(split: Split, *, settings: WalkSettings, seed: int) -> FloatArray:
    """(V, d) embeddings from random walks over the training rows' co-occurrence graph,
    smoothed by the row-normalised co-occurrences themselves (M3Rec's eq. 8 with
    co-occurrence in place of its EASE^R weights: no solve needed)."""
    x = interaction_matrix(split)
    cooccurrence = (x.T @ x).tocsr()
    links = cooccurrence.copy()
    links.setdiag(0)
    links.eliminate_zeros()
    vectors = walk_embeddings(normalize_rows(links), cooccurrence, settings=settings, seed=seed)
    seen = np.zeros(split.data.items.size, bool)
    seen[split.train_items] = True
    vectors[~seen] = 0.0  # an item nobody bought in training has no meaning here
    return vectors


def read_item_text(path: Path) -> dict[str, str]:
    """Item id -> its text, from a JSON-lines metadata file (one object per line, an
    id field among ``ID_FIELDS``, text from ``TEXT_FIELDS``; lists are joined)."""
    texts: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path.name}:{number}: not a JSON object ({exc.msg})") from exc
        key = next((f for f in ID_FIELDS if isinstance(record, dict) and f in record), None)
        if key is None:
            raise ValueError(f"{path.name}:{number}: no item id field ({', '.join(ID_FIELDS)})")
        parts = []
        for field in TEXT_FIELDS:
            value = record.get(field)
            flat = _flatten(value) if value is not None else []
            parts += flat
        texts[str(record[key])] = " ".join(parts)
    return texts


def _flatten(value: object) -> list[str]:
    """XMarket's categories are lists (of lists); titles are strings."""
    if isinstance(value, list | tuple):
        return [s for v in value for s in _flatten(v)]
    return [str(value)]


def text_embeddings(texts: Mapping[str, str], vocabulary: Vocabulary, *, dim: int) -> FloatArray:
    """(V, d) embeddings of the vocabulary's items from their text: TF-IDF over words
    (lower case, letters and digits), reduced to at most ``dim`` by a truncated SVD.
    Items without text get zeros."""
    docs = [_words(texts.get(item, "")) for item in vocabulary.ids]
    words = sorted({w for doc in docs for w in doc})
    index = {w: j for j, w in enumerate(words)}
    rows, cols = [], []
    for row, doc in enumerate(docs, start=1):  # row 0 is PAD
        for word in doc:
            rows.append(row)
            cols.append(index[word])
    shape = (vocabulary.size, max(len(words), 1))
    counts = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    counts.sum_duplicates()
    df = np.asarray((counts > 0).sum(axis=0)).ravel()
    idf = np.log((1 + len(docs)) / (1 + df)).astype(np.float32) + 1.0
    tfidf = sp.csr_matrix(counts @ sp.diags(idf))
    rank = min(dim, min(tfidf.shape) - 1)
    if rank < 1 or tfidf.nnz == 0:
        return np.asarray(tfidf.toarray(), np.float32)
    u, s, _ = svds(tfidf, k=rank, random_state=0)
    vectors: FloatArray = (u * s).astype(np.float32)
    return vectors


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())
