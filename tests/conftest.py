"""Shared fixtures: the real XMarket folder, small synthetic data sets, the tiny store and
a redis-server per test session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from benchmarks.processes import RedisProcess
from cmr.cli import app
from model_store.store import ModelStore, Version
from training.data import Interactions, load_interactions
from training.split import Split, make_split
from training.synth import SynthConfig, write_synth

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def xmarket_dir() -> Path:
    """The real data, beside the checkout as ../shared (CI has it there too)."""
    path = Path(os.environ.get("CMR_XMARKET", REPO.parent / "shared/data/xmarket-electronics"))
    assert (path / "de_5core.txt").is_file(), f"real XMarket data not found at {path}"
    return path


@pytest.fixture(scope="session")
def xmarket(xmarket_dir: Path) -> Interactions:
    return load_interactions(xmarket_dir)


@pytest.fixture(scope="session")
def xmarket_split(xmarket: Interactions) -> Split:
    return make_split(xmarket, "random", seed=0)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("synth")
    write_synth(dest, SynthConfig())
    return dest


@pytest.fixture(scope="session")
def synth_split(synth_dir: Path) -> Split:
    return make_split(load_interactions(synth_dir), "random", seed=0)


# Small enough for CI, big enough to learn the synthetic markets' structure.
TINY_BERT4CMR = [
    "family=bert4cmr",
    "d_model=32",
    "n_layers=1",
    "n_heads=2",
    "dropout=0.1",
    "lr=0.01",  # a higher rate, fewer epochs: the planted structure in half the time
    "finetune_lr=0.001",
    "max_epochs=5",
    "finetune_max_epochs=2",
    "batch_size=128",
    'eval_protocols=["market"]',
]
# The served family's default recipe, smaller and with fewer epochs.
TINY = [
    "d_model=32",
    "dropout=0.1",
    "lr=0.01",
    "batch_size=64",
    "folds=3",
    "max_epochs=8",
    "patience_steps=20",
    "adapt_max_epochs=3",
    'eval_protocols=["market", "full"]',
]


def train_args(data: Path, out: Path, settings: list[str] = TINY) -> list[str]:
    args = ["train", "--data", str(data), "--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    return args


@pytest.fixture(scope="session")
def tiny_run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `cmr train` run of the served family (the hybrid) on the synthetic
    markets."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    result = CliRunner().invoke(app, train_args(synth_dir, run))
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="session")
def tiny_bert4cmr_run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `cmr train` run of Bert4CMR (the paper variant) on the synthetic markets."""
    run = tmp_path_factory.mktemp("tiny-bert4cmr") / "run"
    result = CliRunner().invoke(app, train_args(synth_dir, run, TINY_BERT4CMR))
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="session")
def tiny_store(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Version:
    """``tiny_run`` exported and published as the current version of a fresh store, with
    the closed form it was evaluated with (not the refit: the store then scores as the
    run did; tests/training/test_export.py publishes the refit)."""
    from training.export import export_run

    store = ModelStore(tmp_path_factory.mktemp("store"))
    return export_run(tiny_run, store, version="tiny-1", refitted=False)


ONBOARD_RESULTS = "onboard.json"


def write_new_market(synth_dir: Path, dest: Path, code: str = "dd") -> Path:
    """A market no tiny version knows: cc's rows under other user ids, plus items no
    other market sells (three per user, for the first 30 users)."""
    rows = (synth_dir / "cc_5core.txt").read_text().splitlines()[1:]
    lines = ["user\titem\ttimestamp"]
    for row in rows:
        user, item, _, date = row.split()
        lines.append(f"{code}-{user}\t{item}\t{date}")
    users = sorted({line.split("\t")[0] for line in lines[1:]})[:30]
    lines += [f"{u}\tnew-{k}\t2016-0{k + 1}-01" for u in users for k in range(3)]
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{code}.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_onboarded(
    tiny_store: Version, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Version:
    """A copy of the tiny store with market dd onboarded onto tiny-1 (`cmr onboard`),
    published as "tiny-dd", not promoted; its printed results in ONBOARD_RESULTS
    beside the store."""
    root = tmp_path_factory.mktemp("onboarded") / "store"
    shutil.copytree(tiny_store.path.parents[1], root)
    data = write_new_market(synth_dir, tmp_path_factory.mktemp("dd"))
    args = ["onboard", "--store", str(root), "--market", "dd", "--data", str(data)]
    args += ["--new-version", "tiny-dd", "--no-promote", "--max-epochs", "4"]
    args += ["--set", "folds=3", "--set", "batch_size=64"]
    args += ["--json", str(root.parent / ONBOARD_RESULTS)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return ModelStore(root).open("tiny-dd")


@pytest.fixture
def store(tiny_store: Version, tmp_path: Path) -> ModelStore:
    """A private copy of the tiny store (current: tiny-1), free to change."""
    root = tmp_path / "store"
    shutil.copytree(tiny_store.path.parents[1], root)
    return ModelStore(root)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of its own on a free port, without an append-only file (the later
    argument wins): these tests need no durability, and fsync on every write is slow."""
    server = RedisProcess(tmp_path_factory.mktemp("redis"), "--appendonly", "no")
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def flushed_redis(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url
