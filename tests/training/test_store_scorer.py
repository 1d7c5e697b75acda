"""An exported store version as an ``evaluate`` scorer: the trained model's scores through
the split's indices, rows it cannot score skipped and counted, and ``cmr evaluate --store``
beside a baseline on the same candidates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from cmr.cli import app
from model_store.manifest import StoreError
from model_store.store import Version
from model_store.vocab import PAD, Vocabulary
from tests.training.test_candidate_file import write_files
from training import store_scorer
from training.baselines import evaluate_baselines
from training.candidate_file import load_candidate_set
from training.export import load_run
from training.hybrid import HybridRecommender
from training.predict import HybridScorer
from training.protocols import EvalSet, build_eval_set
from training.split import Split
from training.store_scorer import UNKNOWN_TO_STORE, StoreScorer, restrict_to_store

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def market_set(synth_split: Split) -> EvalSet:
    return build_eval_set(synth_split, "market", "test", seed=0)


@pytest.fixture(scope="module")
def scorer(tiny_store: Version, synth_split: Split) -> StoreScorer:
    data = synth_split.data
    return StoreScorer(tiny_store, items=data.items, markets=data.markets)


def test_the_store_scores_as_the_trained_torch_model(
    scorer: StoreScorer,
    market_set: EvalSet,
    tiny_run: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = load_run(tiny_run, refitted=False).graphs["model.onnx"]
    assert isinstance(model, HybridRecommender)
    torch_scorer = HybridScorer("torch", model)
    batches = list(market_set.batches(128))
    assert {b.market for b in batches} == {0, 1, 2}
    for batch in batches:
        args = (batch.histories, batch.candidates, batch.markets)
        np.testing.assert_allclose(scorer.score(*args), torch_scorer.score(*args), atol=TOLERANCE)
    # Histories longer than the model's max_history keep their most recent items, and
    # calls split into one row each give the same scores.
    rng = np.random.default_rng(0)
    histories = rng.integers(1, market_set.split.data.items.size, size=(5, 70))
    candidates, markets = batches[0].candidates[:5], np.full(5, 1, np.int64)
    expected = torch_scorer.score(histories, candidates, markets)
    monkeypatch.setattr(store_scorer, "MAX_CELLS", 1)
    got = scorer.score(histories, candidates, markets)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)


def test_split_indices_are_translated_into_the_stores(tiny_store: Version) -> None:
    """Another vocabulary order and market order than the store's, and an item the store
    does not know: the scores are the graph's, called in the store's own indices with
    that item left out of the history."""
    stored = Vocabulary.load(tiny_store.file("items.json"))
    items = Vocabulary((*reversed(stored.ids), "new-item"))
    scorer = StoreScorer(tiny_store, items=items, markets=("cc", "aa", "bb"))
    rng = np.random.default_rng(1)
    history = rng.integers(1, stored.size, size=(4, 6))
    history[3, 4:] = PAD  # a shorter history
    candidates = rng.integers(1, stored.size, size=(4, 9))
    market = np.array([2, 0, 1, 1], np.int64)  # the store's cc, aa, bb, bb

    def to_split(indices: np.ndarray) -> np.ndarray:
        out = np.array([items.index(stored.item(int(i))) if i else PAD for i in indices.flat])
        return out.reshape(indices.shape)

    new = items.index("new-item")
    split_history = np.insert(to_split(history), [0, 3], new, axis=1)  # (4, 8), row 3 padded
    split_market = np.array([0, 1, 2, 2], np.int64)  # the split's cc, aa, bb, bb
    session = ort.InferenceSession(
        str(tiny_store.file("model.onnx")), providers=["CPUExecutionProvider"]
    )
    (expected,) = session.run(
        None, {"history": history, "candidates": candidates, "market": market}
    )
    got = scorer.score(split_history, to_split(candidates), split_market)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    with pytest.raises(ValueError, match="unknown to the store"):
        scorer.score(split_history, np.full((4, 1), new), split_market)


def test_rows_with_an_item_unknown_to_the_store_are_skipped_and_counted(
    tiny_store: Version, market_set: EvalSet
) -> None:
    split = market_set.split
    unknown = [int(market_set.positive[0]), int(market_set.negatives[5, 3])]
    # The split's vocabulary with those two items renamed: ids the store never saw.
    ids = list(split.data.items.ids)
    for n, index in enumerate(unknown):
        ids[index - 1] = f"gone-{n}"
    scorer = StoreScorer(tiny_store, items=Vocabulary(tuple(ids)), markets=split.data.markets)
    full = build_eval_set(split, "full", "test", seed=0)
    for eval_set in (market_set, full):
        kept, skipped = restrict_to_store(eval_set, scorer)
        assert 0 < len(kept) < len(eval_set)
        assert skipped == {UNKNOWN_TO_STORE: len(eval_set) - len(kept)}
        assert eval_set.users[0] not in kept.users
        for batch in kept.batches(64):
            assert not np.isin(batch.candidates, unknown).any()
        row = int(np.flatnonzero(eval_set.users == kept.users[-1])[0])
        np.testing.assert_array_equal(kept.history(len(kept) - 1), eval_set.history(row))
    kept, _ = restrict_to_store(market_set, scorer)
    assert market_set.users[5] not in kept.users  # for its negative alone


def test_a_market_the_store_lacks_is_an_error_naming_its_markets(
    tiny_store: Version, synth_split: Split
) -> None:
    data = synth_split.data
    markets = ("aa", "bb", "zz")  # the split's third market renamed
    scorer = StoreScorer(tiny_store, items=data.items, markets=markets)
    eval_set = build_eval_set(synth_split, "market", "test", seed=0)
    with pytest.raises(StoreError, match="no graph for market 'zz'; its markets: aa, bb, cc"):
        restrict_to_store(eval_set, scorer)
    # A set without rows in that market is fine.
    two = eval_set.keep(eval_set.market != 2)
    assert len(restrict_to_store(two, scorer)[0]) == len(two)


def cmr(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_cli_evaluates_the_store_beside_a_baseline(
    synth_dir: Path, synth_split: Split, market_set: EvalSet, tiny_store: Version, tmp_path: Path
) -> None:
    candidates, held_out = write_files(market_set, tmp_path)
    store = str(tiny_store.path.parents[1])
    out = tmp_path / "r.json"
    printed = cmr(
        "evaluate", "--data", str(synth_dir), "--candidates", str(candidates),
        "--held-out", str(held_out), "--store", store, "--json", str(out),
    )  # fmt: skip
    assert "store:tiny-1, file protocol, test split" in printed
    assert "popularity, file protocol, test split" in printed
    assert "skipped" not in printed and "note:" not in printed
    popularity, exported = json.loads(out.read_text())
    assert (popularity["model"], exported["model"]) == ("popularity", "store:tiny-1")
    users = {code: m["users"] for code, m in popularity["markets"].items()}
    assert users == {code: m["users"] for code, m in exported["markets"].items()}
    assert sum(users.values()) == len(market_set)
    # The baseline is untouched by the store, and the store's row is the run's own test
    # result: the file holds the run's market-protocol candidates.
    from_file, _ = load_candidate_set(synth_split, candidates=candidates, held_out=held_out)
    alone = evaluate_baselines(synth_split, ["popularity"], ["market"], targets=[from_file])[0]
    assert popularity["markets"] == alone.to_json()["markets"]
    for code, metrics in tiny_store.manifest.metrics["market"].items():
        assert exported["markets"][code]["ndcg@10"] == pytest.approx(metrics["ndcg@10"], abs=1e-6)
    assert exported["mean"]["ndcg@10"] > popularity["mean"]["ndcg@10"]


def test_the_cli_skips_rows_the_store_cannot_score_for_every_model(
    synth_dir: Path, tiny_store: Version, tmp_path: Path
) -> None:
    """A data folder with one item more than the store's: its rows are skipped for the
    baseline too, and counted."""
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    bb = data / "bb_5core.txt"
    user = bb.read_text().splitlines()[1].split()[0]
    with bb.open("a") as f:
        f.write(f"{user} ZZ-new 5.0 2017-07-14\n")
    store = str(tiny_store.path.parents[1])
    from training.data import load_interactions
    from training.split import make_split

    eval_set = build_eval_set(make_split(load_interactions(data)), "market", "test", seed=0)
    candidates, held_out = write_files(eval_set, tmp_path)
    # ZZ-new only among the first row's candidates (not the market's sampled negatives),
    # and perhaps a held-out item.
    rows = [
        r.replace(",ZZ-new", "").replace("\tZZ-new,", "\t")
        for r in candidates.read_text().splitlines()
    ]
    rows[0] += ",ZZ-new"
    candidates.write_text("\n".join(rows) + "\n")
    expected = 1 + held_out.read_text().count("\tZZ-new\n")
    out = tmp_path / "r.json"
    printed = cmr(
        "evaluate", "--data", str(data), "--candidates", str(candidates),
        "--held-out", str(held_out), "--store", store, "--version", "tiny-1",
        "--json", str(out),
    )  # fmt: skip
    plural = "s" if expected > 1 else ""
    assert f"skipped {expected} row{plural}: {expected} {UNKNOWN_TO_STORE}" in printed
    popularity, exported = json.loads(out.read_text())
    assert popularity["mean"]["users"] == exported["mean"]["users"] == len(eval_set) - expected
    # Without a candidates file: the protocol's sets, restricted the same way.
    printed = cmr("evaluate", "--data", str(data), "--store", store, "--protocol", "full")
    assert "store:tiny-1, full protocol" in printed and "popularity, full protocol" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--version", "nope"], "no version 'nope'"),
        (["--version", "../x"], "bad version name '../x'"),
    ],
)
def test_an_unknown_version_is_one_clear_line(
    synth_dir: Path, tiny_store: Version, extra: list[str], message: str
) -> None:
    store = str(tiny_store.path.parents[1])
    args = ["evaluate", "--data", str(synth_dir), "--store", store, *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_store_options_are_checked(synth_dir: Path, tmp_path: Path) -> None:
    args = ["evaluate", "--data", str(synth_dir)]
    result = CliRunner().invoke(app, [*args, "--version", "v1"])
    assert result.exit_code == 2 and "--version only applies with --store" in result.output
    result = CliRunner().invoke(app, [*args, "--store", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no such model store" in result.output
