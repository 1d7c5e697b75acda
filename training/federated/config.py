"""What ``cmr federate`` is told: the federation's own settings beside the hybrid's
training settings (``HybridTrainConfig``: seed, split, learning rates, mask rate,
batch size, adaptation epochs, protocols), which every client trains with."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from training.config import HybridTrainConfig

# fedavg: average of the clients' shared weights, weighted by their examples;
# fedprox: the same, with mu/2 ||w - w_global||^2 added to each client's loss;
# alone: no averaging, each market trains its own copy (the baseline to beat).
Strategy = Literal["fedavg", "fedprox", "alone"]
Semantics = Literal["none", "cooccurrence", "text"]


@dataclass(frozen=True, kw_only=True)
class FederatedConfig:
    rounds: int = 10
    local_epochs: int = 1  # passes over a client's users per round
    strategy: Strategy = "fedavg"
    proximal_mu: float = 0.01  # fedprox only
    # Item rows averaged by the clients' item counts (training/federated/strategy.py);
    # False: Flower's plain FedAvg / FedProx weights.
    item_weighting: bool = True
    # S2CE: "none" is plain cross-entropy; "text" needs an item metadata file.
    semantics: Semantics = "cooccurrence"
    s2ce_alpha: float = 0.2  # share of each target's probability given to its neighbours
    s2ce_neighbours: int = 10
    s2ce_temperature: float = 0.1
    walk_dim: int = 32  # co-occurrence embeddings (training/item_walks.py)
    walk_epochs: int = 2
    adapt: bool = True  # after the rounds, each client fine-tunes its own rows
    train: HybridTrainConfig = field(default_factory=HybridTrainConfig)

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.local_epochs < 1:
            raise ValueError("rounds and local_epochs must be at least 1")
        if not 0.0 <= self.s2ce_alpha < 1.0:
            raise ValueError(f"s2ce_alpha must be in [0, 1), got {self.s2ce_alpha}")

    @property
    def name(self) -> str:
        """hybrid-<strategy> (hybrid-alone: each market alone), plus what is changed or
        switched off: the row name in result tables."""
        parts = ["hybrid", self.strategy]
        parts += [] if self.item_weighting or self.strategy == "alone" else ["plain"]
        parts += [] if self.semantics != "none" else ["ce"]
        parts += [] if self.adapt else ["no-adapt"]
        return "-".join(parts)


def to_json(cfg: FederatedConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))


def from_json(text: str) -> FederatedConfig:
    """``to_json``'s inverse (lists back to tuples); missing settings take defaults."""
    given: dict[str, Any] = json.loads(text)
    train: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in given.pop("train", {}).items()
    }
    return FederatedConfig(**given, train=HybridTrainConfig(**train))
