"""An exported model store version as an ``evaluate`` scorer: its ONNX graphs, called
with the split's indices translated into the store's.

The split (``cmr evaluate --data``) and the store number items and markets each their
own way: the split by its data's vocabulary and market order, the store by its
``items.json`` and its manifest's ``markets``. ``StoreScorer`` maps one onto the other
before every onnxruntime call, as the service maps raw ids:

- history items the store does not know are dropped from the history (as the
  service's ``known_history`` does), then the most recent ``max_history`` are kept;
- a held-out item or candidate it does not know cannot be scored, so
  ``restrict_to_store`` drops those rows from an EvalSet, counted, before any model
  is evaluated: every model then ranks the same candidates. Under ``full`` the
  catalogues shrink to the items the store knows. ``score`` refuses such an item;
- a market the version has no graph for is an error naming the version's markets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from model_store.manifest import StoreError
from model_store.store import ModelStore, Version
from model_store.vocab import PAD, IntArray, Vocabulary, recent_histories
from training.protocols import EvalSet
from training.split import Scheme

# Why ``restrict_to_store`` dropped a row (a key of its count, beside candidate_file's).
UNKNOWN_TO_STORE = "item unknown to the store version"
# Bounds one onnxruntime call's memory: a row costs about C x (N + 1) (the paper
# variant encodes C sequences of N + 1 tokens, the hybrid gathers N x C weights) plus
# V (the hybrid's (B, V) market index); training/predict.py's CPU budget.
MAX_CELLS = 1 << 18


class StoreScorer:
    """A store version's graphs scoring the split's users; ``name`` is ``store:<version>``."""

    def __init__(self, version: Version, *, items: Vocabulary, markets: Sequence[str]) -> None:
        """``items`` and ``markets``: the split's vocabulary and market order."""
        manifest = version.manifest
        self.name = f"store:{version.name}"
        self.version = version
        store_items = Vocabulary.load(version.file(manifest.items))
        self.store_size = store_items.size
        # Split item index -> store item index, PAD where the store does not know it.
        self.item_map: IntArray = np.concatenate([[PAD], store_items.lookup(items.ids)])
        self.markets = tuple(markets)
        # Split market index -> the graphs' market input; -1 where the version lacks it.
        self.market_map = np.array([manifest.markets.get(c, -1) for c in markets], np.int64)
        self.max_history = int(manifest.model.get("max_history", 50))
        sessions: dict[str, Any] = {}  # graph file -> session: markets may share one graph
        self._graphs: dict[int, Any] = {}
        for m, code in enumerate(self.markets):
            if code not in manifest.markets:
                continue
            graph, _ = manifest.graph_for(code)
            if graph not in sessions:
                sessions[graph] = ort.InferenceSession(
                    str(version.file(graph)), providers=["CPUExecutionProvider"]
                )
            self._graphs[m] = sessions[graph]

    @classmethod
    def open(
        cls, store: Path, version: str | None, *, items: Vocabulary, markets: Sequence[str]
    ) -> StoreScorer:
        """The verified ``version`` of the store at ``store`` (default: its current one)."""
        if not store.is_dir():
            raise StoreError(f"{store}: no such model store")
        return cls(ModelStore(store).open(version), items=items, markets=markets)

    @property
    def known(self) -> NDArray[np.bool_]:
        """(V_split,) whether the store knows each split item; PAD is never known."""
        known: NDArray[np.bool_] = self.item_map != PAD
        return known

    def check_markets(self, markets: Iterable[int]) -> None:
        """StoreError naming the first of these split markets the version cannot score."""
        for m in markets:
            if self.market_map[m] < 0:
                raise StoreError(
                    f"version {self.version.name} has no graph for market "
                    f"{self.markets[m]!r}; its markets: {', '.join(self.version.manifest.markets)}"
                )

    def split_note(self, scheme: Scheme, seed: int) -> str | None:
        """A warning when the version was trained on another split than the evaluation's:
        its training items may then be among the held-out ones."""
        manifest = self.version.manifest
        if manifest.refitted:
            return (
                f"note: {self.name} was refitted on every row of its data after training, "
                "so the held-out items of any split of that data are in its training data"
            )
        train = manifest.train
        trained = (train.get("split_scheme", scheme), train.get("seed", seed))
        if trained == (scheme, seed):
            return None
        return (
            f"note: {self.name} was trained on the {trained[0]} split with seed {trained[1]}; "
            f"this evaluation uses the {scheme} split with seed {seed}, so some held-out "
            "items may be in its training data"
        )

    def histories(self, histories: IntArray) -> IntArray:
        """(B, N) split histories -> (B, N') store histories: unknown items dropped, the
        most recent ``max_history`` kept, oldest first and right-padded."""
        mapped = self.item_map[histories]
        known = mapped != PAD
        # Known items first, each row's order kept: a stable sort on "unknown".
        order = np.argsort(~known, axis=1, kind="stable")
        width = max(int(known.sum(axis=1).max(initial=0)), 1)
        compact = np.take_along_axis(mapped, order, axis=1)[:, :width]
        return recent_histories(compact, self.max_history)

    def score(
        self, histories: IntArray, candidates: IntArray, markets: IntArray
    ) -> NDArray[np.float32]:
        """``Scorer.score`` in the split's indices; ValueError for a candidate the store
        does not know (``restrict_to_store`` drops those rows first)."""
        mapped = self.item_map[candidates]
        if ((mapped == PAD) & (candidates != PAD)).any():
            raise ValueError(f"{self.name}: candidates unknown to the store version")
        self.check_markets(np.unique(markets).tolist())
        history = self.histories(histories)
        n, c = history.shape[1], mapped.shape[1]
        step = max(1, MAX_CELLS // (c * (n + 1) + self.store_size))
        out = np.zeros(candidates.shape, np.float32)
        for m in np.unique(markets).tolist():
            rows = np.flatnonzero(markets == m)
            session = self._graphs[m]
            for start in range(0, len(rows), step):
                part = rows[start : start + step]
                inputs = {
                    "history": history[part],
                    "candidates": mapped[part],
                    "market": np.full(len(part), self.market_map[m], np.int64),
                }
                (scores,) = session.run(["scores"], inputs)
                out[part] = scores
        return out


def restrict_to_store(eval_set: EvalSet, scorer: StoreScorer) -> tuple[EvalSet, Counter[str]]:
    """The rows the version can score (its held-out item and candidates known to the
    store), and the dropped rows counted; catalogues (``full``) shrink to the store's
    items. StoreError for a market with rows but no graph; ValueError if no row is left."""
    scorer.check_markets(np.unique(eval_set.market).tolist())
    known = scorer.known
    negatives = eval_set.negatives
    candidates_known = ((negatives == PAD) | known[negatives]).all(axis=1)
    keep = known[eval_set.positive] & candidates_known
    skipped: Counter[str] = Counter()
    if not keep.all():
        skipped[UNKNOWN_TO_STORE] = int((~keep).sum())
    if not keep.any():
        raise ValueError(f"no row left that {scorer.name} can score: {UNKNOWN_TO_STORE} in each")
    catalogues = tuple(c[known[c]] for c in eval_set.catalogues)
    return replace(eval_set.keep(keep), catalogues=catalogues), skipped
