"""Training across processes: `cmr train --nproc 2` (gloo on the CPU) trains the hybrid
as one process does and writes each file once; a failing rank ends the launch with
its error and leaves no process behind; a batch's shares cover it once."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cmr.cli import app
from tests.conftest import TINY_BERT4CMR, train_args
from tests.training.failing_rank import fail_on_rank_one
from training.distributed import DistributedError, Ranks, launch

# Tiny, and without dropout: the ranks draw dropout masks of their own, everything else
# (batches, hidden items) is drawn alike, so weights agree up to floating-point order.
SETTINGS = [
    "d_model=16",
    "dropout=0",
    "lr=0.01",
    "batch_size=64",
    "folds=2",
    "max_epochs=2",
    "adapt_max_epochs=1",
    'valid_protocols=["market"]',
    'eval_protocols=["market"]',
]


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def test_two_processes_train_the_hybrid_as_one_does(
    synth_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="training")  # so that train.log is written
    runs = {}
    for nproc in (1, 2):
        runs[nproc] = tmp_path / f"nproc{nproc}"
        args = [*train_args(synth_dir, runs[nproc], SETTINGS), "--nproc", str(nproc)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    one, two = runs[1], runs[2]
    assert _files(one) == _files(two)
    configs = [json.loads((run / "config.json").read_text()) for run in (one, two)]
    assert [c.pop("nproc") for c in configs] == [1, 2]
    assert configs[0] == configs[1]
    # The log holds each line once: rank 0 logs, the others do not.
    log = (two / "train.log").read_text()
    assert log.count("training across 2 processes: gloo on cpu") == 1
    for line in (
        "pretrain lr 0.01 epoch 1:", "pretrain lr 0.01 epoch 2:", "pretrain lr 0.003 epoch 2:",
        "pre-training's learning rate", "adapt cc epoch 1:",
    ):  # fmt: skip
        assert log.count(line) == 1, line
    # The same steps: weights, losses, stopping decisions and metrics agree.
    for path in ["pretrained", "markets/aa", "markets/bb", "markets/cc"]:
        expected = load_file(one / path / "best.safetensors")
        got = load_file(two / path / "best.safetensors")
        assert set(got) == set(expected)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)
        stages = [json.loads((run / path / "stage.json").read_text()) for run in (one, two)]
        assert stages[1]["best_epoch"] == stages[0]["best_epoch"], path
        for got_point, point in zip(stages[1]["curve"], stages[0]["curve"], strict=True):
            assert got_point["loss"] == pytest.approx(point["loss"], rel=1e-5), path
            assert got_point["ndcg@10"] == pytest.approx(point["ndcg@10"], abs=1e-3), path
    for name in ("market-valid.json", "market-test.json"):
        metrics = [json.loads((run / "metrics" / name).read_text()) for run in (one, two)]
        assert metrics[1]["mean"] == pytest.approx(metrics[0]["mean"], abs=1e-3)


def test_a_failing_rank_ends_the_launch_and_every_rank(tmp_path: Path) -> None:
    pid_file = tmp_path / "rank0.pid"
    with pytest.raises(DistributedError, match="process 1 failed: ValueError: rank one breaks"):
        launch(fail_on_rank_one, pid_file, nproc=2, device_type="cpu", threads=1, seed=0)
    with pytest.raises(ProcessLookupError):  # rank 0 was stopped, not left waiting
        os.kill(int(pid_file.read_text()), 0)


def test_only_the_hybrid_trains_across_processes(synth_dir: Path, tmp_path: Path) -> None:
    args = train_args(synth_dir, tmp_path / "run", TINY_BERT4CMR)
    result = CliRunner().invoke(app, [*args, "--nproc", "2"])
    assert result.exit_code == 2
    assert "only the hybrid family trains across processes" in result.output
    assert "--nproc" in CliRunner().invoke(app, ["train", "--help"]).output


@pytest.mark.parametrize("n", [0, 1, 5, 64, 65])
def test_the_shares_of_a_batch_cover_it_once(n: int) -> None:
    shares = [Ranks(rank=r, world=3).share(n) for r in range(3)]
    covered = [i for s in shares for i in range(n)[s]]
    assert covered == list(range(n))
    sizes = [len(range(n)[s]) for s in shares]
    assert max(sizes) - min(sizes) <= 1
