"""`cmr report markets`: which markets of a hybrid version are alike, by the parameters
each learned on its own and by what they sell."""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmr.cli import app
from model_store.store import ModelStore, Version
from training.market_report import MATRICES, MarketReport, market_report, report_markdown
from training.store_model import StoredHybrid, load_stored_hybrid

SIMILARITIES = ("own_score_correlation", "vector_cosine", "bias_correlation", "jaccard")


@pytest.fixture(scope="module")
def stored(tiny_store: Version) -> StoredHybrid:
    return load_stored_hybrid(tiny_store.path.parents[1], "tiny-1")


@pytest.fixture(scope="module")
def report(stored: StoredHybrid) -> MarketReport:
    return market_report(stored)


def test_similarities_are_symmetric_with_ones_on_the_diagonal(report: MarketReport) -> None:
    assert report.markets == ["aa", "bb", "cc"] and report.version == "tiny-1"
    for field in SIMILARITIES:
        matrix = getattr(report, field)
        assert matrix.shape == (3, 3) and not np.isnan(matrix).any(), field
        np.testing.assert_allclose(matrix, matrix.T, err_msg=field)
        np.testing.assert_allclose(np.diag(matrix), 1.0, err_msg=field)
        assert (np.abs(matrix) <= 1 + 1e-9).all(), field


def test_overlap_is_a_count_of_the_catalogues(stored: StoredHybrid, report: MarketReport) -> None:
    sold = {code: set(stored.catalogues[code].items.tolist()) for code in report.markets}
    counts = {
        code: dict(zip(c.items.tolist(), c.counts.tolist(), strict=True))
        for code, c in stored.catalogues.items()
    }
    for i, a in enumerate(report.markets):
        assert report.common_items[i, i] == len(stored.catalogues[a])
        for j, b in enumerate(report.markets):
            both = sold[a] & sold[b]
            assert report.common_items[i, j] == len(both)
            assert report.jaccard[i, j] == pytest.approx(len(both) / len(sold[a] | sold[b]))
            on_b = sum(n for item, n in counts[a].items() if item in sold[b])
            share = on_b / sum(counts[a].values())
            assert report.interaction_share[i, j] == pytest.approx(share)
    # rows are whose interactions: the largest catalogue covers more of the others' than
    # they of its
    big = int(np.argmax(np.diag(report.common_items)))
    others = [k for k in range(3) if k != big]
    assert all(report.interaction_share[k, big] > report.interaction_share[big, k] for k in others)


def test_learned_similarities_come_from_the_markets_own_rows(
    stored: StoredHybrid, report: MarketReport
) -> None:
    model, rows = stored.model, stored.manifest.markets
    a, b = rows["aa"], rows["cc"]
    va, vb = model.market_vectors[a].detach(), model.market_vectors[b].detach()
    cosine = float(torch.nn.functional.cosine_similarity(va, vb, dim=0))
    assert report.vector_cosine[0, 2] == pytest.approx(cosine, abs=1e-6)
    both = np.intersect1d(stored.catalogues["aa"].items, stored.catalogues["cc"].items)
    bias = model.market_bias.detach().double().numpy()
    expected = np.corrcoef(bias[a, both], bias[b, both])[0, 1]
    assert report.bias_correlation[0, 2] == pytest.approx(expected)
    # market vectors are trained, not left at their zero start
    assert (np.linalg.norm(model.market_vectors[:3].detach().numpy(), axis=1) > 0).all()


def test_unsold_items_and_a_markets_level_do_not_change_its_similarity(
    stored: StoredHybrid, report: MarketReport
) -> None:
    changed = copy.deepcopy(stored)
    row = changed.manifest.markets["aa"]
    unsold = np.setdiff1d(
        np.arange(1, changed.model.config.n_items), changed.catalogues["aa"].items
    )
    assert len(unsold) > 0
    with torch.no_grad():
        changed.model.market_bias[row] += 5.0  # one level for every item: ranks unchanged
        changed.model.market_bias[row, torch.from_numpy(unsold)] = torch.randn(len(unsold))
    again = market_report(changed)
    for field in SIMILARITIES:
        # float32 weights: adding the level rounds them a little
        np.testing.assert_allclose(
            getattr(again, field), getattr(report, field), atol=1e-5, err_msg=field
        )


def test_markdown_holds_every_matrix_and_each_markets_mix(report: MarketReport) -> None:
    text = report_markdown(report, image="markets.png")
    assert "![market similarity](markets.png)" in text
    for name, _, _ in MATRICES:
        assert f"### {name}: " in text
    for i, code in enumerate(report.markets):
        delta = report.market_mix[i, 2]
        assert f"| {code} |" in text
        assert f"{report.shared_mix[2] + delta:.2f} ({delta:+.3f})" in text
    jaccard = report.jaccard[0, 1]
    assert f"| aa | 1.00 | {jaccard:.2f} |" in text


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_cli_writes_the_heatmap_and_the_tables(tiny_store: Version, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["report", "markets", "--store", str(tiny_store.path.parents[1]), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = (out / "markets.md").read_text()
    assert table in result.output and "# Which markets are alike: tiny-1" in table
    png = (out / "markets.png").read_bytes()
    width, height = _png_size(png)
    assert 400 < height < width < 2000
    assert 10_000 < len(png) < 300_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variant": "history-once"}, "is a Bert4CMR (history-once) version"),
        ({"drop": "state.safetensors"}, "has no state.safetensors"),
    ],
)
def test_a_version_without_hybrid_state_is_one_line_and_exit_2(
    store: ModelStore, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    path = store.root / "versions" / "tiny-1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["variant"] = change.get("variant", manifest["variant"])
    manifest["files"].pop(change.get("drop", ""), None)
    path.write_text(json.dumps(manifest))
    args = ["report", "markets", "--store", str(store.root), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and message in result.output
    assert not (tmp_path / "r").exists()
