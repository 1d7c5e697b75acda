"""A training run's folder, whatever the model family: its recipe, curves, metrics, summary.

config.json                 family, model and training settings, data path, markets,
                            nproc (training processes, `cmr train --nproc`), and
                            what training chose on validation (`chosen`, `pretrain_lr`)
items.json                  the item vocabulary
train.log                   the log
commands.txt                the command that started it, then each resume
<stage folders>             the family's checkpoints, each with stage.json
metrics/<protocol>-<split>.json   per-market metrics, the evaluation schema
summary.json                epochs, seconds and speed per stage
curves.png                  loss and validation metric per epoch, per stage (plots.py)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_store.vocab import Vocabulary
from training.config import HybridTrainConfig, TrainConfig, named_variant
from training.evaluate import Result, Scorer, evaluate_sets
from training.plots import plot_curves
from training.protocols import build_eval_set
from training.report import write_json
from training.split import Split

log = logging.getLogger(__name__)

LOG_FILE = "train.log"
# A run's own market catalogues, when no one data folder holds its markets' rows (a
# federation: each client sends its own); `cmr export` then reads them, not the data.
CATALOGUES_FILE = "catalogues.json"


@dataclass(kw_only=True)
class StageState:
    """What an interrupted stage needs to go on, saved after every epoch."""

    epoch: int = 0
    best: float = -1.0
    best_epoch: int = -1
    stale: int = 0  # epochs since the best
    curve: list[dict[str, float]] = field(default_factory=list)
    done: bool = False
    lr: float | None = None  # the stage's learning rate

    def end_epoch(
        self, point: dict[str, float], metric: float, *, patience: int, max_epochs: int
    ) -> bool:
        """Record an epoch's curve ``point`` and validation ``metric``; decide whether the
        stage is done (``patience`` epochs without a better metric, or ``max_epochs``).
        True when this epoch is the best so far: its weights are the ones to keep."""
        self.epoch += 1
        self.curve.append({"epoch": self.epoch, **point})
        improved = metric > self.best
        if improved:
            self.best, self.best_epoch, self.stale = metric, self.epoch, 0
        else:
            self.stale += 1
        self.done = self.stale >= patience or self.epoch >= max_epochs
        return improved


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when torch sees a GPU, else cpu; cuda without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda, but torch sees no CUDA GPU (use device=cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r}: expected auto, cpu or cuda")
    return torch.device(name)


def start_run(threads: int, seed: int, device_name: str) -> torch.device:
    """Threads, seed and device of a run, logged."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    device = resolve_device(device_name)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    log.info("training on %s (%s), torch %s", device, where, torch.__version__)
    return device


def write_config(
    run_dir: Path,
    *,
    family: str,
    name: str,
    data_dir: Path | None,
    markets: tuple[str, ...],
    items: Vocabulary,
    model: Any,
    train: Any,
    init_from: str | None = None,
    nproc: int = 1,
    chosen: list[str] | None = None,
) -> None:
    """Record the recipe (``model`` and ``train`` are dataclasses), the number of
    training processes and the vocabulary; a resumed run must have the same recipe (it
    may run in another number of processes: the results agree). ``data_dir`` None: no
    one data folder (a deployed federation: each market holds its own file).
    ``chosen``: the model settings chosen on validation rather than given."""
    payload = (
        {
            "family": family,
            "name": name,
            "data": str(data_dir.resolve()) if data_dir is not None else None,
            "markets": list(markets),
            "items_sha256": items.sha256(),
            "model": dataclasses.asdict(model),
            "train": dataclasses.asdict(train),
            "nproc": nproc,
        }
        | ({"init_from": init_from} if init_from else {})
        | ({"chosen": chosen} if chosen else {})
    )
    path = run_dir / "config.json"
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    chosen_before: dict[str, float] = {}
    if path.exists():
        before = json.loads(path.read_text())
        recorded = _recipe_part(before)
        recorded["model"] = named_variant(recorded["model"])
        if recorded != _recipe_part(json.loads(text)):
            raise ValueError(f"{run_dir} holds a run with other settings; use another --out")
        chosen_before = {k: before[k] for k in CHOSEN_IN_TRAINING if k in before}
        chosen_before |= {
            k: before["model"][k] for k in CHOSEN_MODEL if k in before.get("chosen", [])
        }
    path.write_text(text)
    if chosen_before:  # a resumed run keeps what it chose
        record_chosen(run_dir, **chosen_before)
    items.save(run_dir / "items.json")


# What a run chooses while it trains (after config.json was written), top-level keys of
# config.json also named in its "chosen"; a resumed run's recipe is compared without them.
CHOSEN_IN_TRAINING = ("pretrain_lr", "network_scale")
# Model settings training may change (in config.json's "model", also named in "chosen").
CHOSEN_MODEL = ("networks",)


def record_chosen(run_dir: Path, **values: float) -> None:
    """Add settings chosen during training (``CHOSEN_IN_TRAINING``, ``CHOSEN_MODEL``) to
    config.json."""
    path = run_dir / "config.json"
    payload = json.loads(path.read_text())
    unknown = set(values) - set(CHOSEN_IN_TRAINING) - set(CHOSEN_MODEL)
    if unknown:
        raise ValueError(f"not chosen in training: {sorted(unknown)}")
    for name, value in values.items():
        if name in CHOSEN_MODEL:
            payload["model"][name] = value
        else:
            payload[name] = value
    payload["chosen"] = sorted(set(payload.get("chosen", [])) | set(values))
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _recipe_part(payload: dict[str, Any]) -> dict[str, Any]:
    """config.json without what may differ between a run and its resumption."""
    later = set(CHOSEN_IN_TRAINING) | set(CHOSEN_MODEL)
    kept = {k: v for k, v in payload.items() if k not in later | {"nproc"}}
    if "model" in kept:
        kept["model"] = {k: v for k, v in kept["model"].items() if k not in CHOSEN_MODEL}
    chosen = [c for c in kept.pop("chosen", []) if c not in later]
    return kept | ({"chosen": chosen} if chosen else {})


def finish_run(
    run_dir: Path,
    scorer: Scorer,
    *,
    split: Split,
    cfg: TrainConfig | HybridTrainConfig,
    stages: dict[str, StageState],
) -> list[Result]:
    """Draw the stages' curves, evaluate a trained run under each of ``cfg``'s protocols
    and splits, write metrics/ and summary.json (epochs, seconds per stage)."""
    plot_curves(run_dir / "curves.png", {n: s.curve for n, s in stages.items()}, cfg.valid_metric)
    results: dict[tuple[str, str], Result] = {}
    (run_dir / "metrics").mkdir(exist_ok=True)
    for split_name in cfg.eval_splits:  # a split's protocols in one pass (same users)
        start = time.perf_counter()
        sets = [build_eval_set(split, p, split_name, seed=split.seed) for p in cfg.eval_protocols]
        for protocol, result in zip(cfg.eval_protocols, evaluate_sets(scorer, sets), strict=True):
            write_json([result], run_dir / "metrics" / f"{protocol}-{split_name}.json")
            results[protocol, split_name] = result
            log.info(
                "%s, %s protocol, %s: mean NDCG@10 %.4f",
                scorer.name, protocol, split_name, result.mean["ndcg@10"],
            )  # fmt: skip
        log.info(
            "%s, %s split evaluated under %d protocols in %.0f s",
            scorer.name, split_name, len(sets), time.perf_counter() - start,
        )  # fmt: skip
    summary = {
        code: {
            "epochs": s.epoch,
            "best_epoch": s.best_epoch,
            "best": s.best,
            **({"lr": s.lr} if s.lr is not None else {}),
            "seconds": sum(p["train_s"] + p["valid_s"] for p in s.curve),
            **{
                key: float(np.mean([p.get(key, np.nan) for p in s.curve]))
                for key in ("samples_per_s", "users_per_s", "data_share")
                if any(key in p for p in s.curve)
            },
        }
        for code, s in stages.items()
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return [results[p, n] for p in cfg.eval_protocols for n in cfg.eval_splits]
