"""Mean ± std over seeds, and the paper's row under the paper protocol."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cmr.cli import app
from training.report import PAPER_ROW


def result(model: str, protocol: str, seed: int, ndcg: float) -> dict[str, object]:
    metrics = {"ndcg@10": ndcg, "recall@10": 2 * ndcg, "users": 10}
    return {
        "model": model,
        "protocol": protocol,
        "split": "test",
        "seed": seed,
        "markets": {"de": metrics, "fr": metrics},
        "mean": metrics,
    }


def test_compare_aggregates_seeds(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        json.dumps([result("bert", "market", 0, 0.4), result("ease", "market", 0, 0.5)])
    )
    (tmp_path / "b.json").write_text(json.dumps(result("bert", "market", 1, 0.6)))
    (tmp_path / "c.json").write_text(json.dumps(result("bert", "paper", 0, 0.7)))
    out = CliRunner().invoke(
        app,
        [
            "compare",
            *(str(tmp_path / f) for f in ("a.json", "b.json", "c.json")),
            "--markdown",
            str(tmp_path / "t.md"),
        ],
    )
    assert out.exit_code == 0, out.output
    text = (tmp_path / "t.md").read_text()
    assert "| bert | 2 | 0.5000 ± 0.1000 | 0.5000 ± 0.1000 | 0.5000 ± 0.1000 |" in text
    assert "| ease | 1 | 0.5000 | 0.5000 | 0.5000 |" in text
    assert "recall@10, market protocol" in text
    assert "mrr" not in text  # a metric the results do not hold gets no table
    # de and fr of the paper's Table 2, NDCG@10: 0.5462 and 0.5622.
    assert f"| {PAPER_ROW} | 5 runs | 0.5462 | 0.5622 | 0.5542 |" in text
