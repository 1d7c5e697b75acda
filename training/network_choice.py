"""What pre-training keeps once its learning rates are tried: the chosen rate's network,
the two rates' networks summed, or either at a smaller weight in the mix.

Two reasons for looking past the chosen rate. On some data the two rates trade one
validation protocol for the other, and the sum of their networks (an ensemble in one
graph: training/hybrid.py ``summed_networks``) can beat both. And the network's weight in
the mix is learned on the training users' hidden items, while on some data (XMarket
without dates) a smaller weight validates better under `full` than the learned one
(the network wins `market` and costs `full`); with the sum's gain in `market`, half the
weight can be better under both. Each candidate is validated; one replaces the chosen
rate's network only where it is better under every protocol; of several, the best mean.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from training.config import HybridTrainConfig
from training.distributed import Ranks
from training.evaluate import evaluate_sets
from training.hybrid import HybridConfig, HybridRecommender, scaled_network, summed_networks
from training.predict import HybridScorer
from training.protocols import EvalSet

log = logging.getLogger(__name__)

# The first (default) rate's share when pre-training sums its two rates' networks.
SUM_SHARES = (0.5, 0.7)
# Beside the kept weights: the share of its learned weight the network kept is at.
KEPT_FILE = "network.json"

Weights = dict[str, torch.Tensor]


def choose_network(
    model: HybridRecommender,
    chosen: Weights,
    *,
    trials: Sequence[Path],
    alone: Sequence[float],
    final: Path,
    markets: Sequence[int],
    valid: Sequence[EvalSet],
    cfg: HybridTrainConfig,
    ranks: Ranks,
) -> HybridRecommender:
    """``model`` holding ``chosen`` (the chosen rate's weights, validated at ``alone``
    under each of ``valid``'s protocols), or a new model with the candidate kept, which
    rank 0 also writes to ``final`` (its scale to KEPT_FILE beside it). ``trials``: the
    two rates' weight files to sum (``cfg.sum_networks``), or none."""
    config = model.config
    if config.n_layers or not config.neural or config.networks != 1:
        return model  # attention over the history would mix the summed networks
    networks = None
    if ranks.main:
        bases: list[tuple[str, int, Weights]] = [("alone", 1, chosen)]
        if cfg.sum_networks and len(trials) == 2:
            first, second = (load_file(t) for t in trials)
            bases += [
                (f"summed ({s:g} the first rate's)", 2, summed_networks(first, second, weight=s))
                for s in SUM_SHARES
            ]
        best: tuple[float, int, Weights, str, float] | None = None
        for what, width, weights in bases:
            for scale in (1.0, *cfg.network_scales):
                if what == "alone" and scale == 1.0:
                    continue  # what every candidate is measured against
                candidate = scaled_network(weights, scale)
                scorer = HybridScorer(what, with_networks(model, width, candidate))
                results = evaluate_sets(scorer, valid, markets=markets)
                scores = [r.mean[cfg.valid_metric] for r in results]
                name = f"the network {what} at {scale:g} of its weight"
                log.info(
                    "pre-training, %s: valid %s %s",
                    name, cfg.valid_metric,
                    " / ".join(f"{v.protocol} {x:.4f}" for v, x in zip(valid, scores, strict=True)),
                )  # fmt: skip
                mean = float(np.mean(scores))
                if better_everywhere(scores, alone) and (best is None or mean > best[0]):
                    best = (mean, width, candidate, name, scale)
        if best is not None:
            save_file(best[2], final)
            (final.parent / KEPT_FILE).write_text(json.dumps({"network_scale": best[4]}) + "\n")
            networks = best[1]
        log.info("pre-training keeps %s", "the chosen rate's network" if best is None else best[3])
    networks = ranks.from_main(networks)
    if networks is None:
        return model
    return with_networks(model, networks, load_file(final))


def better_everywhere(scores: Sequence[float], than: Sequence[float]) -> bool:
    """Better under every validation protocol: what a choice of pre-training needs to
    replace its default (a rate, a network)."""
    return all(a > b for a, b in zip(scores, than, strict=True))


def kept_scale(stage_dir: Path) -> float | None:
    """The scale of the network ``choose_network`` kept in ``stage_dir``; None: none kept."""
    path = stage_dir / KEPT_FILE
    return float(json.loads(path.read_text())["network_scale"]) if path.is_file() else None


def networks_in(path: Path, config: HybridConfig) -> int:
    """How many networks side by side saved weights hold (read from the header alone)."""
    with safe_open(path, "pt") as saved:
        return int(saved.get_slice("items.weight").get_shape()[1]) // config.d_model


def with_networks(
    model: HybridRecommender, networks: int, weights: Weights | None = None
) -> HybridRecommender:
    """``model`` (``weights`` given: a new model with them) with ``networks`` side by side
    and the same closed form, on the same device."""
    if networks == model.config.networks and weights is None:
        return model
    config = dataclasses.replace(model.config, networks=networks)
    device = next(model.parameters()).device
    out = HybridRecommender(config, model.closed_form).to(device)
    with torch.no_grad():
        for name, value in (weights or {}).items():
            out.get_parameter(name).copy_(value)
    return out
