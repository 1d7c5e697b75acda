"""Counts over the raw market files, against the data's own README."""

from __future__ import annotations

from pathlib import Path

from training.market_files import read_logs
from training.stats import log_stats


def test_real_data_stats_match_the_data_readme(xmarket_dir: Path) -> None:
    # The counts published in ../shared/data/xmarket-electronics/README.md.
    expected = {
        "de": (17300, 1851, 2179),
        "jp": (4485, 487, 955),
        "in": (2015, 239, 470),
        "fr": (17624, 1838, 1879),
        "ca": (44779, 4668, 5735),
        "mx": (17095, 1878, 1645),
        "uk": (31547, 3352, 3251),
        "all": (134845, 14311, 8304),
    }
    stats = {s.market: (s.rows, s.users, s.items) for s in log_stats(read_logs(xmarket_dir))}
    assert stats == expected
