"""What ``cmr train`` runs: a recipe (model family and settings) and the run of it.

A recipe file is JSON ``{"family": ..., "model": {...}, "train": {...}}``. The
families are ``hybrid`` (training/hybrid.py, the served model; the default
recipe is its defaults, no file needed) and ``bert4cmr`` (the paper's model,
training/model.py, kept as the faithful reference; configs/bert4cmr*.json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from training.closed_form import Blocks, Cooccurrence, fit_closed_form, fold_fits
from training.data import load_interactions
from training.evaluate import Result
from training.hybrid import ClosedForm, HybridConfig, HybridRecommender
from training.hybrid_train import HybridScorer, HybridTrainConfig, UserSets, run_hybrid_stage
from training.model import Bert4CMRConfig
from training.protocols import build_eval_set
from training.runs import StageState, finish_run, plot_curves, start_run, write_config
from training.split import make_split
from training.train import TrainConfig, train_bert4cmr

log = logging.getLogger(__name__)

FAMILIES: dict[str, tuple[type[Any], type[Any]]] = {
    "hybrid": (HybridConfig, HybridTrainConfig),
    "bert4cmr": (Bert4CMRConfig, TrainConfig),
}
DEFAULT_FAMILY = "hybrid"
CLOSED_FORM_FILE = "closed_form.safetensors"


@dataclass(frozen=True)
class Recipe:
    family: str
    model: dict[str, Any]  # model settings; the item and market counts come from the data
    train: HybridTrainConfig | TrainConfig


def parse_recipe(config_file: Path | None, overrides: Sequence[str]) -> Recipe:
    """A recipe from a JSON file and ``key=value`` overrides (``d_model=64``,
    ``model.d_model=64``, ``family=bert4cmr``; values are read as JSON, else as strings)."""
    loaded: dict[str, Any] = json.loads(config_file.read_text()) if config_file else {}
    unknown_sections = set(loaded) - {"family", "model", "train"}
    if unknown_sections:
        raise ValueError(f"{config_file}: unknown sections {sorted(unknown_sections)}")
    family = str(loaded.get("family", DEFAULT_FAMILY))
    parsed = [_split_override(item) for item in overrides]
    family = next((v for s, k, v in parsed if k == "family" and not s), family)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    model_class, train_class = FAMILIES[family]
    fields = {
        "model": {f.name for f in dataclasses.fields(model_class)} - {"n_items", "n_markets"},
        "train": {f.name for f in dataclasses.fields(train_class)},
    }
    sections: dict[str, dict[str, Any]] = {
        name: dict(loaded.get(name, {})) for name in ("model", "train")
    }
    for section, names in fields.items():
        unknown = set(sections[section]) - names
        if unknown:
            raise ValueError(f"{config_file}: unknown {section} settings {sorted(unknown)}")
    for section, name, value in parsed:
        if name == "family" and not section:
            continue
        if not section:
            section = next((s for s, names in fields.items() if name in names), "")
        if section not in fields or name not in fields[section]:
            raise ValueError(f"--set {section + '.' if section else ''}{name}: unknown setting "
                             f"{name!r} for the {family} family")  # fmt: skip
        sections[section][name] = value
    train = sections["train"]
    for name, value in train.items():
        if isinstance(value, list):  # JSON lists are the config's tuples
            train[name] = tuple(value)
    return Recipe(family, sections["model"], train_class(**train))


def _split_override(item: str) -> tuple[str, str, Any]:
    key, sep, raw = item.partition("=")
    if not sep:
        raise ValueError(f"--set {item!r}: expected key=value")
    section, _, name = key.rpartition(".")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return section, name, value


def train_run(data_dir: Path, run_dir: Path, recipe: Recipe, command: str = "") -> list[Result]:
    """Train ``recipe`` into ``run_dir`` and evaluate it; resumable. ``command`` (what
    started it) is appended to ``commands.txt``, for the model store."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if command:
        with (run_dir / "commands.txt").open("a") as f:
            f.write(command + "\n")
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("training").addHandler(handler)
    try:
        if isinstance(recipe.train, TrainConfig):
            return train_bert4cmr(data_dir, run_dir, recipe.model, recipe.train)
        return train_hybrid(data_dir, run_dir, recipe.model, recipe.train)
    finally:
        logging.getLogger("training").removeHandler(handler)
        handler.close()


def hybrid_name(model: HybridConfig, cfg: HybridTrainConfig) -> str:
    """hybrid, plus what is switched off (ablations) or changed in kind."""
    parts = ["hybrid"]
    parts += [] if model.neural else ["no-network"]
    parts += [] if model.global_ease else ["no-shared-ease"]
    parts += [] if model.market_ease else ["no-market-ease"]
    parts += [] if cfg.adapt else ["no-adapt"]
    parts += [] if cfg.loss == "softmax" else [f"{cfg.loss}-{cfg.negatives}"]
    return "-".join(parts)


def load_closed_form(path: Path) -> ClosedForm:
    tensors = load_file(path)
    size = int((tensors["global_index"] >= 0).sum())
    return ClosedForm(**tensors, global_size=size)


def train_hybrid(
    data_dir: Path, run_dir: Path, model_settings: dict[str, Any], cfg: HybridTrainConfig
) -> list[Result]:
    """Fit the closed form, pre-train on every market, adapt each market, evaluate."""
    device = start_run(cfg.threads, cfg.seed, cfg.device)
    started = time.perf_counter()
    data = load_interactions(data_dir)
    split = make_split(data, cfg.split_scheme, cfg.seed)
    model_cfg = HybridConfig(n_items=data.items.size, n_markets=len(data.markets), **model_settings)
    name = hybrid_name(model_cfg, cfg)
    write_config(
        run_dir,
        family="hybrid",
        name=name,
        data_dir=data_dir,
        data=data,
        model=model_cfg,
        train=cfg,
    )
    blocks = Blocks(
        global_lambda=model_cfg.ease_lambda,
        market_lambda=model_cfg.market_ease_lambda,
        global_ease=model_cfg.global_ease,
        market_ease=model_cfg.market_ease,
        cooccurrence=Cooccurrence(model_cfg.cooccurrence_days, model_cfg.cooccurrence_floor),
    )
    closed_path = run_dir / CLOSED_FORM_FILE
    if closed_path.is_file():
        closed = load_closed_form(closed_path)
    else:
        closed = fit_closed_form(split, blocks)
        save_file(closed.tensors(), closed_path)
    log.info("closed form fitted: %.0f s", time.perf_counter() - started)
    folds = fold_fits(split, blocks, folds=cfg.folds, seed=cfg.seed)
    sets = UserSets.build(split, folds.fold, model_cfg.max_history)
    valid = [build_eval_set(split, p, "valid", cfg.seed) for p in cfg.valid_protocols]
    model = HybridRecommender(model_cfg, closed).to(device)
    stage: dict[str, Any] = {"sets": sets, "folds": folds, "valid": valid, "cfg": cfg}
    every = list(range(len(data.markets)))
    stages: dict[str, StageState] = {}
    stages["pretrain"] = run_hybrid_stage(
        "pretrain", model, markets=every, stage_dir=run_dir / "pretrained", shared=True, **stage
    )
    for m, code in enumerate(data.markets if cfg.adapt else ()):
        stages[code] = run_hybrid_stage(
            f"adapt {code}", model, markets=[m], stage_dir=run_dir / "markets" / code,
            shared=False, **stage,
        )  # fmt: skip
    log.info(
        "trained %d markets (closed form, pre-training, adaptation) in %.0f s",
        len(data.markets),
        time.perf_counter() - started,
    )
    plot_curves(run_dir, stages, cfg.valid_metric)
    scorer = HybridScorer(name, model)
    return finish_run(run_dir, scorer, split, cfg.eval_protocols, cfg.eval_splits, stages)


def load_hybrid(run_dir: Path, config: dict[str, Any]) -> HybridRecommender:
    """A finished hybrid run's model: closed form, pre-trained weights, each market's row."""
    model_cfg = HybridConfig(**config["model"])
    model = HybridRecommender(model_cfg, load_closed_form(run_dir / CLOSED_FORM_FILE))
    weights = run_dir / "pretrained" / "best.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: no pre-trained weights (unfinished?)")
    with torch.no_grad():
        for name, value in load_file(weights).items():
            model.get_parameter(name).copy_(value)
        for m, code in enumerate(config["markets"]):
            own = run_dir / "markets" / code / "best.safetensors"
            for name, value in (load_file(own) if own.is_file() else {}).items():
                model.get_parameter(name)[m] = value
    return model.eval()
