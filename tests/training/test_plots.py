"""Training curves: one picture of every stage's loss and validation metric."""

from __future__ import annotations

from pathlib import Path

from training.plots import plot_curves


def test_curves_are_drawn_into_a_png(tmp_path: Path) -> None:
    curves = {
        "pretrain": [
            {"epoch": 1, "loss": 0.9, "ndcg@10": 0.2},
            {"epoch": 2, "loss": 0.7, "ndcg@10": 0.3},
        ],
        "aa": [{"epoch": 1, "loss": 0.6, "ndcg@10": 0.35}],
    }
    path = plot_curves(tmp_path / "curves.png", curves, "ndcg@10")
    assert path == tmp_path / "curves.png"
    assert path.read_bytes().startswith(b"\x89PNG")
