"""The planted-data setting: synthetic markets where federating should pay, shared by
the federation's test (tests/training/federated/test_federation.py) and its ablation
(``python -m benchmarks.federated_planted``).

Topics are shared by every market, each market has few users and the catalogue is
large, so a market alone sees each item about once while the three together see it
three times.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Final

from training.config import HybridTrainConfig
from training.federated.config import FederatedConfig
from training.synth import SynthConfig

SYNTH: Final = SynthConfig(
    markets=("aa", "bb", "cc"), users=(60, 60, 60), items=400, topics=10,
    topic_focus=0.95, market_share=0.9,
)  # fmt: skip
TRAIN: Final = HybridTrainConfig(
    batch_size=64, lr=0.02, folds=2, adapt_max_epochs=2, valid_protocols=("market",),
    eval_protocols=("market",), eval_splits=("test",), threads=1, device="cpu",
)  # fmt: skip
# Read-only: federate() takes a dict, so callers pass dict(MODEL).
MODEL: Final[Mapping[str, Any]] = MappingProxyType({"d_model": 16, "dropout": 0.1})
FED: Final = FederatedConfig(
    rounds=2, local_epochs=15, walk_dim=16, walk_epochs=1, train=TRAIN,
)  # fmt: skip


def seeded(seed: int) -> tuple[SynthConfig, FederatedConfig]:
    """The setting with ``seed`` drawing the data and seeding training (split, model,
    batches): seed 0 is the test's."""
    return replace(SYNTH, seed=seed), replace(FED, train=replace(TRAIN, seed=seed))
