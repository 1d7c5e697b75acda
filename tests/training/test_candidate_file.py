"""Candidates from a file: the same metrics as the built-in protocol it copies, clear
errors for malformed rows, counted skips for rows this data cannot score, and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmr.cli import app
from model_store.vocab import PAD
from training.baselines import evaluate_baselines
from training.candidate_file import (
    AMBIGUOUS_USER,
    HELD_OUT_IN_HISTORY,
    NO_CANDIDATES,
    NO_HELD_OUT,
    UNKNOWN_CANDIDATE,
    UNKNOWN_HELD_OUT,
    UNKNOWN_USER,
    CandidateRow,
    describe_skipped,
    eval_set_from_candidates,
    load_candidate_set,
    read_candidates,
    read_held_out,
)
from training.data import load_interactions
from training.market_files import DataFormatError
from training.protocols import EvalSet, build_eval_set
from training.split import Split, make_split

GRID = (10.0, 100.0)  # two lambdas: the choice is exercised, the test stays quick


def write_files(eval_set: EvalSet, folder: Path) -> tuple[Path, Path]:
    """A built EvalSet as the two files: its candidates and its held-out items."""
    data = eval_set.split.data
    candidates, held_out = folder / "candidates.tsv", folder / "held_out.tsv"
    cand_lines, held_lines = [], []
    for m in range(len(eval_set.markets)):
        rows = eval_set.market_rows(m)
        for r, row in enumerate(eval_set.candidates(rows)):
            user = data.user_ids[eval_set.users[rows.start + r]]
            items = [data.items.item(int(i)) for i in row[1:] if i != PAD]
            cand_lines.append(f"{user}\t{','.join(items)}\n")
            held_lines.append(f"{user}\t{data.items.item(int(row[0]))}\n")
    candidates.write_text("".join(cand_lines))
    held_out.write_text("".join(held_lines))
    return candidates, held_out


@pytest.fixture(scope="module")
def market_set(synth_split: Split) -> EvalSet:
    return build_eval_set(synth_split, "market", "test", seed=0)


def test_a_file_of_the_market_protocol_scores_as_the_protocol(
    synth_split: Split, market_set: EvalSet, tmp_path: Path
) -> None:
    candidates, held_out = write_files(market_set, tmp_path)
    from_file, skipped = load_candidate_set(synth_split, candidates=candidates, held_out=held_out)
    assert not skipped and len(from_file) == len(market_set)
    models = ["popularity", "ease"]
    built = evaluate_baselines(synth_split, models, ["market"], grid=GRID)
    filed = evaluate_baselines(synth_split, models, ["market"], grid=GRID, targets=[from_file])
    for b, f in zip(built, filed, strict=True):
        assert f.protocol == "file" and f.model == b.model
        assert f.markets == b.markets
        assert f.params == b.params


def test_a_row_with_one_column_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_text("U0_00001\tI00001,I00002\nU0_00002 I00003\n")
    with pytest.raises(DataFormatError, match=f"{path}:2: expected 2 tab-separated columns"):
        read_candidates(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("U0_00001\tI00001,,I00002\n", ":1: empty item id"),
        ("\nU0_00001\tI00001,\n", ":2: empty item id"),
        ("\tI00001\n", ":1: empty user id"),
        ("U0_00001\tI00001\nU0_00001\tI00002\n", ":2: user 'U0_00001' listed again"),
    ],
)
def test_empty_ids_and_repeated_users_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.tsv"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=f"{path}{message}"):
        read_candidates(path)


def test_an_empty_held_out_item_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.tsv"
    path.write_text("U0_00001\tI00001\nU0_00002\t \n")
    with pytest.raises(DataFormatError, match=f"{path}:2: empty item id"):
        read_held_out(path)


def test_unknown_users_and_items_are_skipped_and_counted(
    synth_split: Split, market_set: EvalSet, tmp_path: Path
) -> None:
    candidates, held_out = write_files(market_set, tmp_path)
    rows, targets = read_candidates(candidates)[:5], read_held_out(held_out)
    good = rows[:2]
    rows = [
        *good,
        CandidateRow(line=90, user="nobody", items=rows[2].items),
        CandidateRow(line=91, user=rows[2].user, items=(*rows[2].items, "no-such-item")),
        rows[3],
        rows[4],
    ]
    targets[rows[4].user] = "no-such-item"
    del targets[rows[5].user]
    eval_set, skipped = eval_set_from_candidates(synth_split, rows, targets)
    assert len(eval_set) == len(good)
    assert skipped == {UNKNOWN_USER: 1, UNKNOWN_CANDIDATE: 1, UNKNOWN_HELD_OUT: 1, NO_HELD_OUT: 1}
    assert describe_skipped(skipped).startswith("skipped 4 rows: 1 ")
    with pytest.raises(ValueError, match=r"no usable row.*skipped 1 row: 1 unknown user"):
        eval_set_from_candidates(synth_split, rows[2:3], targets)


def test_a_user_id_in_two_markets_needs_a_market(tmp_path: Path) -> None:
    for code in ("aa", "bb"):
        rows = "".join(f"u1,I{i},5.0,2020-01-0{i}\n" for i in range(1, 6))
        (tmp_path / f"{code}_5core.txt").write_text("userId,itemId,rating,date\n" + rows)
    split = make_split(load_interactions(tmp_path), "random", seed=0)
    aa_user = split.data.user_market.tolist().index(0)
    test_item = split.data.items.item(int(split.test[aa_user]))
    rows = [CandidateRow(line=1, user="u1", items=split.data.items.ids)]
    with pytest.raises(ValueError, match=re.escape(AMBIGUOUS_USER)):
        eval_set_from_candidates(split, rows, {"u1": test_item})
    eval_set, skipped = eval_set_from_candidates(split, rows, {"u1": test_item}, market="aa")
    assert not skipped and eval_set.users.tolist() == [aa_user]
    assert eval_set.candidates(slice(0, 1))[0, 0] == split.test[aa_user]
    with pytest.raises(ValueError, match="unknown market 'zz'"):
        eval_set_from_candidates(split, rows, {"u1": test_item}, market="zz")


def test_the_cli_evaluates_a_candidates_file(
    synth_dir: Path, market_set: EvalSet, tmp_path: Path
) -> None:
    candidates, held_out = write_files(market_set, tmp_path)
    with candidates.open("a") as f:
        f.write("nobody\tI00001\n")
    out = tmp_path / "r.json"
    args = ["evaluate", "--data", str(synth_dir), "--candidates", str(candidates)]
    result = CliRunner().invoke(app, [*args, "--held-out", str(held_out), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "skipped 1 row: 1 unknown user" in result.output
    written = json.loads(out.read_text())
    assert written["protocol"] == "file"
    expected = evaluate_baselines(market_set.split, ["popularity"], ["market"])[0]
    assert written["markets"] == expected.to_json()["markets"]

    candidates.write_text("nobody\tI00001\n")
    result = CliRunner().invoke(app, [*args, "--held-out", str(held_out)])
    assert result.exit_code == 2
    assert "no usable row" in result.output and "Traceback" not in result.output


def test_a_history_item_or_a_lone_held_out_item_is_skipped(
    synth_split: Split, market_set: EvalSet, tmp_path: Path
) -> None:
    candidates, held_out = write_files(market_set, tmp_path)
    first, second = read_candidates(candidates)[:2]
    targets = read_held_out(held_out)
    user = market_set.users[0]  # the first row of the file is the set's first row
    targets[first.user] = synth_split.data.items.item(int(market_set.history(0)[0]))
    lone = CandidateRow(line=2, user=second.user, items=(targets[second.user],))
    assert synth_split.data.user_ids[user] == first.user
    with pytest.raises(ValueError, match="no usable row") as refused:
        eval_set_from_candidates(synth_split, [first, lone], targets)
    assert f"1 {HELD_OUT_IN_HISTORY}" in str(refused.value)
    assert f"1 {NO_CANDIDATES}" in str(refused.value)


def test_the_cli_refuses_bad_files_with_file_and_line(synth_dir: Path, tmp_path: Path) -> None:
    candidates, held_out = tmp_path / "c.tsv", tmp_path / "h.tsv"
    candidates.write_text("U0_00001\tI00001\nU0_00002\n")
    held_out.write_text("U0_00001\tI00002\n")
    args = ["evaluate", "--data", str(synth_dir), "--candidates", str(candidates)]
    result = CliRunner().invoke(app, [*args, "--held-out", str(held_out)])
    assert result.exit_code == 2
    assert f"{candidates}:2: expected 2 tab-separated columns, found 1" in result.output
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--candidates and --held-out go together" in result.output
