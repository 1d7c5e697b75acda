"""NMF and FOREC: they find the planted structure, are deterministic, and the fork
freezes its bottom."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmr.cli import app
from training import forec
from training.baselines import Popularity
from training.evaluate import evaluate
from training.forec import NeuMFTraining, fit_forec, fit_forks, fit_nmf, new_model, train_epochs
from training.neumf import NeuMF, NeuMFConfig, fork
from training.protocols import build_eval_set
from training.split import Split

# One value per grid: no choice to make, so a fit trains each model once.
FAST = NeuMFTraining(
    epochs=(12,), finetune_epochs=(6,), l2=(1e-7,), finetune_lr=(0.01,), batch_size=256
)
ONE_EPOCH = replace(FAST, epochs=(1,), finetune_epochs=(1,))


@pytest.fixture(scope="module")
def results(synth_split: Split) -> dict[tuple[str, str], float]:
    """Mean NDCG@10 per (model, split) under the market protocol, each model fitted once."""
    models = [Popularity.fit(synth_split), fit_nmf(synth_split, FAST), fit_forec(synth_split, FAST)]
    out = {}
    for split_name in ("valid", "test"):
        eval_set = build_eval_set(synth_split, "market", split_name)
        for model in models:
            out[model.name, split_name] = evaluate(model, eval_set).mean["ndcg@10"]
    return out


@pytest.mark.parametrize("split_name", ["valid", "test"])
@pytest.mark.parametrize("model", ["nmf", "forec"])
def test_beats_popularity_on_planted_data(
    results: dict[tuple[str, str], float], model: str, split_name: str
) -> None:
    assert results[model, split_name] > results["popularity", split_name] + 0.05, results


def test_same_seed_same_scores(synth_split: Split) -> None:
    cfg = replace(FAST, epochs=(2,))
    valid = build_eval_set(synth_split, "market", "valid")
    runs = [evaluate(fit_nmf(synth_split, cfg), valid) for _ in range(2)]
    assert runs[0].markets == runs[1].markets
    other = evaluate(fit_nmf(synth_split, replace(cfg, seed=1)), valid)
    assert other.markets != runs[0].markets


def test_fork_freezes_the_bottom_and_trains_the_head(synth_split: Split) -> None:
    cfg = replace(ONE_EPOCH, finetune_epochs=(2,))
    general = new_model(synth_split, cfg)
    torch.manual_seed(cfg.seed)  # fit_forks' seeding for market 0: the head starts here
    start = fork(general, cfg.head).state_dict()
    valid = build_eval_set(synth_split, "market", "valid")
    forks, _ = fit_forks(general, synth_split, cfg, valid)
    tuned = forks[0]
    after = tuned.state_dict()
    for name in ("gmf_user.weight", "gmf_item.weight", "mlp_user.weight", "mlp.0.weight"):
        assert torch.equal(after[name], general.state_dict()[name]), name
    for name in ("head.0.weight", "out.weight", "mlp.6.weight"):  # head, output, top MLP
        assert not torch.equal(after[name], start[name]), name
    assert tuned.cfg.head == (16, 32, 16)


def test_neumf_shapes_and_head_width_check() -> None:
    model = NeuMF(NeuMFConfig(n_users=5, n_items=7, head=(16, 32, 16)))
    logits = model(torch.tensor([0, 4]), torch.tensor([[1, 2, 3], [6, 0, 5]]))
    assert logits.shape == (2, 3)
    with pytest.raises(ValueError, match="market head"):
        NeuMFConfig(n_users=5, n_items=7, head=(8, 16))


def test_cli_evaluates_forec_and_nmf(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = ["evaluate", "--data", str(synth_dir), "--model", "forec", "--model", "nmf"]
    args += ["--protocol", "market", "--protocol", "paper", "--epochs", "2", "--seed", "3"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [(r["model"], r["protocol"]) for r in rows] == [
        ("forec", "market"),
        ("forec", "paper"),
        ("nmf", "market"),
        ("nmf", "paper"),
    ]
    assert all(r["seed"] == 3 for r in rows)
    assert rows[0]["params"]["pretraining"]["epochs"] == 2
    assert {c["epochs"] for c in rows[0]["params"]["chosen"].values()} == {1}
    assert {c["epochs"] for c in rows[2]["params"]["chosen"].values()} == {2}
    assert np.isfinite(rows[0]["mean"]["ndcg@10"])


def test_scores_do_not_depend_on_how_rows_are_chunked(
    synth_split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = fit_nmf(synth_split, ONE_EPOCH)
    full = build_eval_set(synth_split, "full", "valid")
    whole = evaluate(scorer, full)
    monkeypatch.setattr(forec, "SCORE_PAIRS", 100)  # one row per forward pass
    assert evaluate(scorer, full).markets == whole.markets


def test_the_epochs_and_l2_are_chosen_on_validation(synth_split: Split) -> None:
    """Each market's choice is the snapshot that scores best on its validation users."""
    cfg = replace(FAST, epochs=(1, 6), l2=(1e-7, 1e-2))
    scorer = fit_nmf(synth_split, cfg)
    valid = build_eval_set(synth_split, "market", "valid")
    for m, code in enumerate(synth_split.data.markets):
        chosen = scorer.params["chosen"][code]
        best = evaluate(scorer, valid, markets=[m]).mean["ndcg@10"]
        for l2 in cfg.l2:
            model = new_model(synth_split, cfg)
            runs = train_epochs(
                model,
                synth_split,
                markets=[m],
                epochs=cfg.epochs,
                lr=cfg.lr,
                l2=l2,
                cfg=cfg,
                rng=np.random.default_rng([cfg.seed, 3, m]),
                label="again",
            )
            for epoch, state in runs:
                model.load_state_dict(state)
                probe = forec.NeuMFScorer("probe", {m: model}, {})
                ndcg = evaluate(probe, valid, markets=[m]).mean["ndcg@10"]
                assert ndcg <= best + 1e-12, (code, epoch, l2)
                if (epoch, l2) == (chosen["epochs"], chosen["l2"]):
                    assert ndcg == best
