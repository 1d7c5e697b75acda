"""What ``cmr train`` is told: each family's training settings, and a recipe read from
a JSON file plus ``--set key=value`` overrides, every value checked against its type.

A recipe file is JSON ``{"family": ..., "model": {...}, "train": {...}}``. The
families are ``hybrid`` (training/hybrid.py, the served model; the default
recipe is its defaults, no file needed) and ``bert4cmr`` (the paper's model,
training/model.py, kept as the faithful reference; configs/bert4cmr*.json).

An override names a setting alone (``d_model=64``) or with its section
(``model.d_model=64``, ``train.lr=5e-4``). Its value is read as JSON (``true``,
``0.3``, ``["market"]``), else as text, and must fit the type the setting declares:
``--set train.lr=abc`` is refused with "expected a float", never kept as a string.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from training.examples import NegativePool
from training.hybrid import HybridConfig
from training.model import Bert4CMRConfig
from training.protocols import PROTOCOLS, Protocol
from training.split import Scheme, SplitName

Device = Literal["auto", "cpu", "cuda"]  # auto: CUDA when torch sees a GPU


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How Bert4CMR is trained (training/bert4cmr_train.py)."""

    seed: int = 0
    split_scheme: Scheme = "random"
    lr: float = 1e-3
    weight_decay: float = 1e-7  # Adam's L2 penalty
    batch_size: int = 1024
    negatives: int = 4
    negative_pool: NegativePool = "market"
    max_epochs: int = 50
    patience: int = 3
    finetune_lr: float = 1e-3
    finetune_max_epochs: int = 50
    pretrain: bool = True  # False: each market trained alone, from scratch (ablation)
    finetune: bool = True  # False: the pre-trained model serves every market (ablation)
    valid_protocol: Protocol = "market"
    valid_metric: str = "ndcg@5"
    eval_protocols: tuple[Protocol, ...] = PROTOCOLS
    eval_splits: tuple[SplitName, ...] = ("valid", "test")  # metrics/ files written at the end
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    device: Device = "auto"


@dataclass(frozen=True, kw_only=True)
class HybridTrainConfig:
    """How the hybrid is trained (training/hybrid_train.py)."""

    seed: int = 0
    split_scheme: Scheme = "random"
    lr: float = 3e-4
    batch_size: int = 256  # users per step
    mask_rate: float = 0.3  # share of each user's items hidden and predicted, per epoch
    loss: Literal["softmax", "bce"] = "softmax"  # bce: `negatives` sampled per hidden item
    negatives: int = 4
    # Pre-training then goes on at these rates and keeps one only where it is better
    # under every validation protocol (training/hybrid_stage.py); (): ``lr`` alone.
    lr_candidates: tuple[float, ...] = (3e-3,)
    # With two rates, keep the sum of their networks where it validates better still.
    sum_networks: bool = True
    # And each network at these shares of its learned weight in the mix, kept likewise;
    # (): the learned weight alone.
    network_scales: tuple[float, ...] = (0.5,)
    max_epochs: int = 30
    patience: int = 2  # epochs without a better validation metric, and at least:
    patience_steps: int = 150  # optimiser steps (small data sets have few an epoch)
    folds: int = 5  # training users' closed-form scores come from fits without their fold
    adapt: bool = True  # then train each market's own parameter row on that market
    adapt_lr: float = 1e-3
    adapt_max_epochs: int = 5
    refit: bool = True  # then refit the closed form on every row for publishing
    # What chooses the closed form's settings left open (training/closed_form_choice.py).
    choice_protocols: tuple[Protocol, ...] = ("full",)
    valid_protocols: tuple[Protocol, ...] = ("market", "full")
    valid_metric: str = "ndcg@10"
    eval_protocols: tuple[Protocol, ...] = PROTOCOLS
    eval_splits: tuple[SplitName, ...] = ("valid", "test")
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    device: Device = "auto"


FAMILIES: dict[str, tuple[type[Any], type[Any]]] = {
    "hybrid": (HybridConfig, HybridTrainConfig),
    "bert4cmr": (Bert4CMRConfig, TrainConfig),
}
DEFAULT_FAMILY = "hybrid"
FROM_DATA = ("n_items", "n_markets")  # model sizes: the data's, never a setting


@dataclass(frozen=True)
class Recipe:
    family: str
    model: dict[str, Any]  # model settings; the item and market counts come from the data
    train: HybridTrainConfig | TrainConfig


def named_variant(model: Mapping[str, Any]) -> dict[str, Any]:
    """Model settings with ``variant`` where they hold the bool that runs and recipes
    stored before the variant had its name (``history_sees_candidate``; True: paper)."""
    settings = dict(model)
    if "history_sees_candidate" in settings:
        settings["variant"] = "paper" if settings.pop("history_sees_candidate") else "history-once"
    return settings


def parse_recipe(config_file: Path | None, overrides: Sequence[str]) -> Recipe:
    """A recipe from a JSON file and ``key=value`` overrides (``d_model=64``,
    ``model.d_model=64``, ``family=bert4cmr``), each value converted to its setting's type."""
    loaded: dict[str, Any] = json.loads(config_file.read_text()) if config_file else {}
    unknown_sections = set(loaded) - {"family", "model", "train"}
    if unknown_sections:
        raise ValueError(f"{config_file}: unknown sections {sorted(unknown_sections)}")
    family = str(loaded.get("family", DEFAULT_FAMILY))
    parsed = [_split_override(item) for item in overrides]
    for section, name, raw, item in parsed:
        if name == "family" and not section:  # the family decides which settings exist
            family = setting_from_text(raw, str, f"--set {item}")
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    model_class, train_class = FAMILIES[family]
    types_of = {"model": _field_types(model_class), "train": _field_types(train_class)}
    for name in FROM_DATA:
        del types_of["model"][name]
    valid = "; ".join(f"{s} settings: {', '.join(t)}" for s, t in types_of.items())
    sections: dict[str, dict[str, Any]] = {}
    for section, kinds in types_of.items():
        given = loaded.get(section, {})
        given = named_variant(given) if section == "model" else dict(given)
        unknown = set(given) - set(kinds)
        if unknown:
            raise ValueError(
                f"{config_file}: unknown {section} settings {sorted(unknown)}; {valid}"
            )
        sections[section] = {
            name: _checked(
                value, kinds[name], f"{config_file}: {section}.{name}={json.dumps(value)}"
            )
            for name, value in given.items()
        }
    for section, name, raw, item in parsed:
        if name == "family" and not section:
            continue
        if not section:
            section = next((s for s, kinds in types_of.items() if name in kinds), "")
        if section not in types_of or name not in types_of[section]:
            raise ValueError(
                f"--set {item}: unknown setting {name!r} for the {family} family; {valid}"
            )
        sections[section][name] = setting_from_text(raw, types_of[section][name], f"--set {item}")
    return Recipe(family, sections["model"], train_class(**sections["train"]))


def _split_override(item: str) -> tuple[str, str, str, str]:
    """``train.lr=5e-4`` -> (section, name, raw value, the item as given)."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise ValueError(f"--set {item!r}: expected key=value")
    section, _, name = key.rpartition(".")
    return section, name, raw, item


def _field_types(config_class: type[Any]) -> dict[str, Any]:
    """Setting name -> its declared type (annotations are strings here: resolve them)."""
    hints = get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


class _Refused(Exception):
    """A value that does not fit a setting's type."""


def setting_from_text(raw: str, kind: Any, where: str) -> Any:
    """An override's text as a ``kind`` (a setting's type: bool, int, float, str, a
    Literal, a tuple, an Optional), or a ValueError that starts with ``where``. The text's
    JSON reading is tried first, then the text itself: ``valid_metric=mrr`` needs no
    quotes, while ``lr=abc`` stays refused."""
    try:
        readings = [json.loads(raw), raw]
    except json.JSONDecodeError:
        readings = [raw]
    for value in readings:
        try:
            return _convert(value, kind)
        except _Refused:
            pass
    raise ValueError(f"{where}: expected {_describe(kind)}")


def _checked(value: Any, kind: Any, where: str) -> Any:
    """A recipe file's value as a ``kind``, or a ValueError that starts with ``where``."""
    try:
        return _convert(value, kind)
    except _Refused:
        raise ValueError(f"{where}: expected {_describe(kind)}") from None


def _convert(value: Any, kind: Any) -> Any:
    """``value`` as JSON gives it, as a ``kind``: lists become tuples, integers floats."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option)
            except _Refused:
                pass
        raise _Refused
    if origin is Literal:
        # 1 == True: the type must match too, not only the value.
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Refused
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Refused
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Refused
        return tuple(_convert(v, a) for v, a in zip(value, args, strict=True))
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if kind not in (bool, int, float, str):
        raise TypeError(f"a setting of type {kind!r} cannot be read from a recipe")
    raise _Refused


def _describe(kind: Any) -> str:
    """What a ``kind`` setting expects, as the error says it: "a float", "one of ..."."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        options = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(options + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            return f"a JSON list of {len(args)}: " + ", ".join(_describe(a) for a in args)
        example = json.dumps(get_args(args[0])[:1] if get_origin(args[0]) is Literal else [])
        return f"a JSON list, each {_describe(args[0])} (e.g. {example})"
    names = {bool: "true or false", int: "an integer", float: "a float", str: "a string"}
    return names.get(kind, str(kind))
