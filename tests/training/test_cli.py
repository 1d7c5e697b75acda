"""The cmr command: help everywhere, stats, synth, evaluate, and clean errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
from typer.testing import CliRunner

from cmr.cli import app
from training.baselines import BASELINES
from training.cli import Variant
from training.cli_evaluate import Model, ProtocolName
from training.model import Variant as ModelVariant
from training.protocols import PROTOCOLS

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["data"],
        ["data", "stats"],
        ["data", "download"],
        ["data", "synth"],
        ["evaluate"],
        ["train"],
        ["compare"],
        ["report"],
        ["report", "markets"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_stats_on_real_data(xmarket_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["data", "stats", "--data", str(xmarket_dir), "--json", str(tmp_path / "s.json")]
    )
    assert result.exit_code == 0, result.output
    assert "134,845" in result.output and "14,311" in result.output
    stats = {row["market"]: row for row in json.loads((tmp_path / "s.json").read_text())}
    assert stats["ca"]["rows"] == 44779 and stats["all"]["items"] == 8304


def test_synth_then_evaluate_writes_the_json_schema(tmp_path: Path) -> None:
    data = tmp_path / "synth"
    result = runner.invoke(
        app, ["data", "synth", "--dest", str(data), "--markets", "xx,yy", "--users", "60,30"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(data),
            "--model",
            "popularity",
            "--protocol",
            "full",
            "--split",
            "valid",
            "--split-scheme",
            "temporal",
            "--json",
            str(tmp_path / "r.json"),
            "--markdown",
            str(tmp_path / "r.md"),
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "r.json").read_text())
    assert (payload["model"], payload["protocol"], payload["split"]) == (
        "popularity",
        "full",
        "valid",
    )
    assert set(payload["markets"]) == {"xx", "yy"}
    assert payload["mean"]["users"] == 90
    markdown = (tmp_path / "r.md").read_text()
    assert "| popularity |" in markdown and "full protocol" in markdown


def test_several_results_are_a_json_list(synth_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(synth_dir),
            "--model",
            "popularity",
            "--model",
            "ease",
            "--protocol",
            "paper",
            "--protocol",
            "market",
            "--lambdas",
            "50",
            "--json",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "r.json").read_text())
    assert [(r["model"], r["protocol"]) for r in payload] == [
        ("popularity", "paper"),
        ("popularity", "market"),
        ("ease", "paper"),
        ("ease", "market"),
    ]
    assert payload[2]["params"] == {"lambda": 50.0}


def test_bad_data_gives_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "de_5core.txt").write_text("userId itemId rate date\nu1 A 5.0 yesterday\n")
    result = runner.invoke(app, ["evaluate", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path / 'de_5core.txt'}:2: unparsable date 'yesterday'" in result.output
    assert "Traceback" not in result.output


def test_unknown_choice_is_refused() -> None:
    result = runner.invoke(app, ["evaluate", "--data", ".", "--protocol", "easy"])
    assert result.exit_code == 2
    assert "easy" in result.output


def test_choices_match_the_library() -> None:
    assert tuple(m.value for m in Model) == BASELINES
    assert tuple(p.value for p in ProtocolName) == PROTOCOLS
    assert tuple(v.value for v in Variant) == get_args(ModelVariant)
