"""The manifest of a model version: what the version holds and how to check it.

``manifest.json`` names the variant, the model and training settings, the markets
with their indices (the graphs' ``market`` input), the graph that scores each
market with parameters of its own (several markets may share one graph: the
hybrid's one graph serves them all) and the graph for markets without, the
vocabulary and catalogue files, per-market test metrics, the command that trained
the model, and the SHA-256 of every other file in the version. A reader refuses a
version whose schema it does not know or whose files do not match.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
VARIANTS = ("paper", "history-once", "hybrid")  # Bert4CMR's two, and the hybrid


class StoreError(Exception):
    """A model store or version that cannot be used, with the reason."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    version: str
    variant: str  # one of VARIANTS
    model: dict[str, Any]  # the model config as a dict
    train: dict[str, Any]  # the training config as a dict
    markets: dict[str, int]  # market code -> index, the graphs' market input
    pretrained: str | None  # the graph for markets without parameters of their own
    graphs: dict[str, str]  # market code -> the graph scoring it with its own parameters
    items: str  # the vocabulary file
    catalogues: str  # per-market catalogue and popularity
    metrics: dict[str, dict[str, dict[str, float]]]  # protocol -> market -> metric -> value
    files: dict[str, str]  # every other file of the version -> sha256
    command: str  # what trained the model
    source_run: str
    created_at: str  # ISO-8601, UTC
    schema_version: int = SCHEMA_VERSION
    # Settings chosen on the run's validation split; their values are in ``model``, and
    # in ``train`` for the pre-training rate and the network's scale (``pretrain_lr``,
    # ``network_scale``).
    chosen: list[str] = field(default_factory=list)
    # True: fitted again on every row, held-out items included, after the run was
    # evaluated; ``metrics`` are then the held-out model's.
    refitted: bool = False

    @property
    def own_parameters(self) -> list[str]:
        """The markets scored with parameters of their own (fine-tuned or adapted)."""
        return sorted(self.graphs)

    def graph_for(self, market: str) -> tuple[str, bool]:
        """The graph serving ``market`` and whether it scores with the market's own
        parameters (else the shared, pre-trained ones)."""
        if market in self.graphs:
            return self.graphs[market], True
        if self.pretrained is None:
            raise StoreError(f"version {self.version} has no graph for market {market!r}")
        return self.pretrained, False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as e:
            raise StoreError(f"{where}: not JSON ({e})") from e
        if not isinstance(payload, dict):
            raise StoreError(f"{where}: expected a JSON object")
        schema = payload.get("schema_version")
        if schema != SCHEMA_VERSION:
            raise StoreError(
                f"{where}: schema version {schema!r}, this reader knows {SCHEMA_VERSION}"
            )
        try:
            manifest = cls(**payload)
        except TypeError as e:
            raise StoreError(f"{where}: {e}") from e
        manifest._check(where)
        return manifest

    def _check(self, where: str) -> None:
        if self.variant not in VARIANTS:
            raise StoreError(f"{where}: unknown variant {self.variant!r}")
        if not self.markets or sorted(self.markets.values()) != list(range(len(self.markets))):
            raise StoreError(f"{where}: market indices must be 0..n-1, got {self.markets}")
        unknown = set(self.graphs) - set(self.markets)
        if unknown:
            raise StoreError(f"{where}: graphs for unknown markets {sorted(unknown)}")
        if self.pretrained is None and set(self.graphs) != set(self.markets):
            raise StoreError(f"{where}: no pre-trained graph and not every market has one")
        named = [self.items, self.catalogues, *self.graphs.values()]
        if self.pretrained is not None:
            named.append(self.pretrained)
        missing = [name for name in named if name not in self.files]
        if missing:
            raise StoreError(f"{where}: files without a hash: {missing}")

    def verify_files(self, folder: Path) -> None:
        """Every listed file exists in ``folder`` with its recorded SHA-256."""
        for name, expected in sorted(self.files.items()):
            path = folder / name
            if not path.is_file():
                raise StoreError(f"version {self.version}: {name} is missing")
            actual = sha256_file(path)
            if actual != expected:
                raise StoreError(
                    f"version {self.version}: {name} has SHA-256 {actual[:12]}..., the manifest "
                    f"says {expected[:12]}...: the file was changed or damaged"
                )
