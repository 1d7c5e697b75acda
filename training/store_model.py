"""A published hybrid version as a torch model again: what warm starts and onboarding
begin from.

Besides its ONNX graph, a hybrid version holds ``state.safetensors``: the model's whole
state (learned parameters and the closed-form blocks), since the exporter folds the
graph's weights into constants whose names say nothing. The manifest's ``model`` is
its configuration, ``items.json`` its vocabulary (row i of every item table is item
i), and ``markets`` which parameter row each market owns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model_store.catalogue import Catalogue, load_catalogues
from model_store.manifest import Manifest, StoreError
from model_store.store import ModelStore
from model_store.vocab import Vocabulary
from training.config import FROM_DATA
from training.hybrid import ClosedForm, HybridConfig, HybridRecommender

STATE_FILE = "state.safetensors"


@dataclass(frozen=True, kw_only=True)
class StoredHybrid:
    """One store version's hybrid: model, manifest, vocabulary and catalogues."""

    model: HybridRecommender
    manifest: Manifest
    vocabulary: Vocabulary
    catalogues: dict[str, Catalogue]

    @property
    def markets(self) -> list[str]:
        """Market codes in parameter-row order."""
        return sorted(self.manifest.markets, key=self.manifest.markets.__getitem__)


def save_state(model: HybridRecommender, path: Path) -> None:
    save_file({n: t.detach().cpu().contiguous() for n, t in model.state_dict().items()}, path)
    path.chmod(0o644)  # readable like the version's other files


def parse_store_ref(ref: str) -> tuple[Path, str | None]:
    """``STORE`` or ``STORE:VERSION`` -> (store folder, version or None for current)."""
    if Path(ref).is_dir() or ":" not in ref:
        return Path(ref), None
    store, _, version = ref.rpartition(":")
    return Path(store), version or None


def load_stored_hybrid(store_dir: Path, version: str | None = None) -> StoredHybrid:
    """A hybrid version (the current one unless named), verified, as a torch model."""
    if not (store_dir / "versions").is_dir():
        raise StoreError(f"{store_dir} is not a model store (no versions/ folder)")
    opened = ModelStore(store_dir).open(version)
    manifest = opened.manifest
    if manifest.variant != "hybrid":
        raise StoreError(
            f"version {manifest.version} is a Bert4CMR ({manifest.variant}) version; "
            "only hybrid versions load as a hybrid model (warm starts, onboarding, reports)"
        )
    if STATE_FILE not in manifest.files:
        raise StoreError(
            f"version {manifest.version} has no {STATE_FILE} (exported before versions "
            "kept their weights): export its run again with `cmr export`"
        )
    tensors = load_file(opened.file(STATE_FILE))
    fields = [f for f in ClosedForm.__dataclass_fields__ if f != "global_size"]
    size = int((tensors["global_index"] >= 0).sum())
    closed = ClosedForm(**{f: tensors[f] for f in fields}, global_size=size)
    model = HybridRecommender(HybridConfig(**manifest.model), closed)
    model.load_state_dict(tensors)
    return StoredHybrid(
        model=model.eval(),
        manifest=manifest,
        vocabulary=Vocabulary.load(opened.file(manifest.items)),
        catalogues=load_catalogues(opened.file(manifest.catalogues)),
    )


@torch.no_grad()
def copy_learned(
    target: HybridRecommender, source: StoredHybrid, *, markets: Sequence[str]
) -> list[str]:
    """Start ``target`` from ``source``'s learned weights: every item the source knows
    keeps its rows (the target's vocabulary extends the source's), the shared weights
    are copied, and each of ``markets`` (the target's, in row order) that the source
    serves gets its own rows back. New items keep their fresh rows and new markets
    zero rows (the shared parameters alone). Returns the markets carried over."""
    old = source.model
    n_old = old.config.n_items
    if target.config.n_items < n_old:
        raise ValueError("the new vocabulary must extend the version's")
    target.items.weight[:n_old] = old.items.weight
    target.shared_bias[:n_old] = old.shared_bias
    target.shared_mix.copy_(old.shared_mix)
    target.layers.load_state_dict(old.layers.state_dict())
    carried = []
    for row, code in enumerate(markets):
        if code not in source.manifest.markets:
            continue
        old_row = source.manifest.markets[code]
        target.market_vectors[row] = old.market_vectors[old_row]
        target.market_mix[row] = old.market_mix[old_row]
        target.market_bias[row, :n_old] = old.market_bias[old_row]
        carried.append(code)
    return carried


@dataclass(frozen=True)
class WarmStart:
    """A published version to start from, and how it was named (``STORE[:VERSION]``)."""

    ref: str
    stored: StoredHybrid

    def model_settings(self, given: dict[str, Any], *, markets: Sequence[str]) -> dict[str, Any]:
        """The version's model settings; a recipe may repeat them but not change them.
        Per-market settings follow the new data's ``markets`` by code (a market the
        version lacks takes the version's setting for markets added later)."""
        settings = {k: v for k, v in self.stored.manifest.model.items() if k not in FROM_DATA}
        settings = dataclasses.asdict(HybridConfig(n_items=2, n_markets=1, **settings))
        for name, value in given.items():
            if settings.get(name) != value:
                raise ValueError(
                    f"--init-from {self.ref}: its model has {name}={settings.get(name)!r}; "
                    f"a warm start keeps the model's shape and settings (drop --set {name})"
                )
        own = settings.get("market_ease_lambdas") or ()
        if own:
            old = self.stored.manifest.markets  # code -> the version's market index
            settings["market_ease_lambdas"] = tuple(
                own[old[code]] if code in old else settings["market_ease_lambda"]
                for code in markets
            )
        return {k: v for k, v in settings.items() if k not in FROM_DATA}
