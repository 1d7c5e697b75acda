"""Pre-training keeps the sum of its two rates' networks, or a network at a smaller
weight, only where it validates better under every protocol than the rate chosen alone,
and a resumed run finds it again.

Validation is faked here (the decision around it is what is tested); that the sum scores
as the weighted sum of the two models, and a scaled network as its share, is
tests/training/test_hybrid.py's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from training import network_choice
from training.closed_form import Blocks, FoldFits, fit_closed_form
from training.config import HybridTrainConfig
from training.distributed import ONE
from training.hybrid import HybridConfig, HybridRecommender, scaled_network, summed_networks
from training.hybrid_examples import UserSets
from training.hybrid_stage import PRETRAINED, learned, pretrain
from training.protocols import build_eval_set
from training.runs import StageState
from training.split import Split

RATES = (0.01, 0.003)
ALONE = {"valid_market": 0.50, "valid_full": 0.30}  # the chosen rate at its best epoch
# The order candidates are validated in (default settings): the chosen rate's network at
# half its weight, then each sum (0.5, then 0.7 of the first rate's) whole and at half.
LOSES = (0.49, 0.31)  # worse under `market` than the rate alone


def _run(split: Split, run_dir: Path) -> tuple[HybridRecommender, list[dict[str, Any]]]:
    """A model and two trials' weights on disk, the first rate chosen into pretrained/."""
    closed = fit_closed_form(split, Blocks(global_lambda=50.0, market_lambda=20.0))
    config = HybridConfig(n_items=split.data.items.size, n_markets=3, d_model=8)
    weights = []
    for seed, lr in enumerate(RATES):
        torch.manual_seed(seed)
        model = HybridRecommender(config, closed)
        trial = run_dir / "pretrain-trials" / f"lr-{lr:g}"
        trial.mkdir(parents=True)
        save_file(learned(model), trial / "best.safetensors")
        state = StageState(epoch=1, best=0.4, best_epoch=1, done=True, lr=lr)
        state.curve.append({"epoch": 1, **ALONE})
        (trial / "stage.json").write_text(json.dumps(vars(state)))
        weights.append(learned(model))
    shutil.copytree(run_dir / "pretrain-trials" / f"lr-{RATES[0]:g}", run_dir / PRETRAINED)
    return model, weights


def _fake_validation(monkeypatch: pytest.MonkeyPatch, scores: list[tuple[float, float]]) -> None:
    """Each call of evaluate_sets in network_choice answers the next (market, full)."""
    answers = iter(scores)

    def evaluate_sets(*args: Any, **kwargs: Any) -> list[SimpleNamespace]:
        return [SimpleNamespace(mean={"ndcg@10": s}) for s in next(answers)]

    monkeypatch.setattr(network_choice, "evaluate_sets", evaluate_sets)


def _choose(model: HybridRecommender, split: Split, run_dir: Path) -> HybridRecommender:
    trials = run_dir / "pretrain-trials"
    valid = [build_eval_set(split, p, "valid") for p in ("market", "full")]
    return network_choice.choose_network(
        model, learned(model), trials=[trials / f"lr-{lr:g}" / "best.safetensors" for lr in RATES],
        alone=list(ALONE.values()), final=run_dir / PRETRAINED / "best.safetensors",
        markets=[0, 1, 2], valid=valid, cfg=HybridTrainConfig(), ranks=ONE,
    )  # fmt: skip


def test_the_sum_is_kept_where_it_is_better_under_every_protocol(
    synth_split: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, (first, second) = _run(synth_split, tmp_path)
    # Share 0.5 wins `market` only; 0.7 wins both, better whole than at half: 0.7 is kept.
    _fake_validation(monkeypatch, [LOSES, (0.55, 0.29), (0.54, 0.29), (0.52, 0.31), (0.51, 0.305)])
    summed = _choose(model, synth_split, tmp_path)
    assert summed.config.networks == 2
    assert network_choice.kept_scale(tmp_path / PRETRAINED) == 1.0
    kept = load_file(tmp_path / PRETRAINED / "best.safetensors")
    for name, value in summed_networks(first, second, weight=0.7).items():
        torch.testing.assert_close(kept[name], value)
        torch.testing.assert_close(summed.get_parameter(name).detach(), value)
    # A resumed run builds the wider model from pretrained/ without training again.
    state = StageState(epoch=1, best=0.4, best_epoch=1, done=True, lr=RATES[0])
    (tmp_path / PRETRAINED / "stage.json").write_text(json.dumps(vars(state)))
    fold = np.zeros(synth_split.data.n_users, np.int64)
    _, resumed = pretrain(
        model, run_dir=tmp_path, sets=UserSets.build(synth_split, fold=fold, max_history=50),
        folds=FoldFits(fold, ()), markets=[0, 1, 2], valid=[], cfg=HybridTrainConfig(),
    )  # fmt: skip
    assert resumed.config.networks == 2
    torch.testing.assert_close(resumed.items.weight.detach(), kept["items.weight"])


def test_a_network_at_half_its_weight_is_kept_where_it_is_better_under_every_protocol(
    synth_split: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, (first, second) = _run(synth_split, tmp_path)
    # The sum at 0.5 loses `full` whole and wins both at half its weight.
    _fake_validation(monkeypatch, [LOSES, (0.56, 0.29), (0.54, 0.31), LOSES, LOSES])
    summed = _choose(model, synth_split, tmp_path)
    assert summed.config.networks == 2
    assert network_choice.kept_scale(tmp_path / PRETRAINED) == 0.5
    expected = scaled_network(summed_networks(first, second, weight=0.5), 0.5)
    for name, value in expected.items():
        torch.testing.assert_close(summed.get_parameter(name).detach(), value)


def test_the_chosen_network_at_half_its_weight_stays_one_network(
    synth_split: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = _run(synth_split, tmp_path)
    chosen = learned(model)
    _fake_validation(monkeypatch, [(0.51, 0.31), LOSES, LOSES, LOSES, LOSES])
    halved = _choose(model, synth_split, tmp_path)
    assert halved is not model and halved.config.networks == 1
    for name, value in scaled_network(chosen, 0.5).items():
        torch.testing.assert_close(halved.get_parameter(name).detach(), value)


def test_the_rate_alone_is_kept_where_every_candidate_loses_a_protocol(
    synth_split: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = _run(synth_split, tmp_path)
    before = (tmp_path / PRETRAINED / "best.safetensors").read_bytes()
    # Each loses `market` or `full`, or ties one.
    _fake_validation(monkeypatch, [LOSES, (0.60, 0.29), (0.50, 0.40), (0.51, 0.30), LOSES])
    assert _choose(model, synth_split, tmp_path) is model
    assert network_choice.kept_scale(tmp_path / PRETRAINED) is None
    assert (tmp_path / PRETRAINED / "best.safetensors").read_bytes() == before
