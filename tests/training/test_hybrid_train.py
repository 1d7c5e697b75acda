"""Training the hybrid: `cmr train` end to end on planted structure, pre-training's
learning rate chosen, adaptation touching one market only, and resuming a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cmr.cli import app
from tests.conftest import train_args
from training.baselines import Popularity
from training.evaluate import evaluate
from training.hybrid import scaled_network
from training.hybrid_stage import MARKET_ROWS
from training.hybrid_train import load_hybrid
from training.protocols import build_eval_set
from training.split import Split


def test_cmr_train_of_the_hybrid_learns_the_planted_structure(
    synth_dir: Path, synth_split: Split, tiny_run: Path
) -> None:
    run = tiny_run  # the default family with the TINY settings, once per session
    for path in [
        "config.json", "items.json", "train.log", "curves.png", "summary.json",
        "closed_form.safetensors", "pretrained/best.safetensors",
        "markets/aa/best.safetensors", "metrics/market-test.json", "metrics/full-valid.json",
    ]:  # fmt: skip
        assert (run / path).is_file(), path
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "hybrid"
    # The closed form's settings were chosen on validation: numbers in config.json, every
    # trial in closed_form_choice.json, and the run's closed form fitted with them.
    choice = json.loads((run / "closed_form_choice.json").read_text())
    kept = {"networks", "network_scale"}  # where pre-training kept another network
    assert set(config["chosen"]) - kept == set(choice["chosen"]) | {"pretrain_lr"}
    for name, value in choice["chosen"].items():
        assert config["model"][name] == value, name
    assert len(choice["trials"]) >= 3 * 4 + 4  # 3 time scales, then the markets' blocks
    assert (run / "closed_form_refit.safetensors").is_file()
    for protocol in ("market", "full"):
        hybrid = json.loads((run / f"metrics/{protocol}-test.json").read_text())
        popularity = evaluate(
            Popularity.fit(synth_split), build_eval_set(synth_split, protocol, "test")
        )
        # The structure is learnable: well above market popularity on identical candidates.
        assert hybrid["mean"]["ndcg@10"] > popularity.mean["ndcg@10"] + 0.1, protocol
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"pretrain", "aa", "bb", "cc"}
    # Pre-training ran at the recipe's rate, then went on at the default candidate (3e-3);
    # pretrained/ is the chosen one's stage.
    trials = {p.name: p for p in (run / "pretrain-trials").iterdir()}
    assert set(trials) == {"lr-0.01", "lr-0.003"}
    chosen = trials[f"lr-{summary['pretrain']['lr']:g}"]
    assert config["pretrain_lr"] == summary["pretrain"]["lr"]  # config.json says which
    # pretrained/ holds its weights, or what training/network_choice.py kept instead: a sum
    # (twice the width) or the network at the share of its weight config.json names.
    scale = config.get("network_scale")
    assert ("network_scale" in config["chosen"]) == (scale is not None)
    rate_alone, final = (load_file(d / "best.safetensors") for d in (chosen, run / "pretrained"))
    width = rate_alone["items.weight"].shape[1]
    if config["model"]["networks"] == 1:
        expected = rate_alone if scale is None else scaled_network(rate_alone, scale)
        for name, value in expected.items():
            torch.testing.assert_close(final[name], value)
    else:
        assert scale is not None and final["items.weight"].shape[1] == 2 * width
    # Adaptation changed each market's own rows and nothing else.
    model = load_hybrid(run, json.loads((run / "config.json").read_text()))
    pretrained = load_file(run / "pretrained/best.safetensors")
    for m, code in enumerate(("aa", "bb", "cc")):
        own = load_file(run / "markets" / code / "best.safetensors")
        assert set(own) == set(MARKET_ROWS)
        for name in MARKET_ROWS:
            torch.testing.assert_close(model.get_parameter(name)[m], own[name])
        # Kept only if it validated better than the pre-trained row (epoch 0).
        stage = json.loads((run / "markets" / code / "stage.json").read_text())
        changed = bool((own["market_bias"] - pretrained["market_bias"][m]).abs().max() > 0)
        assert changed == (stage["best_epoch"] > 0), code
    assert any(s["best_epoch"] > 0 for code, s in summary.items() if code != "pretrain")
    for name, value in pretrained.items():
        if name not in MARKET_ROWS:  # the shared weights are the pre-trained ones
            torch.testing.assert_close(model.get_parameter(name), value)
    for name in MARKET_ROWS:  # the row of markets without parameters of their own
        assert model.get_parameter(name)[model.shared_row].abs().sum() == 0
    # A finished run resumes to the same result without training again.
    before = json.loads((run / "metrics/market-test.json").read_text())
    refit_written = (run / "closed_form_refit.safetensors").stat().st_mtime_ns
    again = CliRunner().invoke(app, train_args(synth_dir, run))
    assert again.exit_code == 0, again.output
    assert json.loads((run / "metrics/market-test.json").read_text())["mean"] == before["mean"]
    assert (run / "closed_form_refit.safetensors").stat().st_mtime_ns == refit_written
