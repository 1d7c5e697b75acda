"""Per-stage time and speed of `cmr train` runs, as a markdown table (docs/results.md).

    usage: .venv/bin/python scripts/stage_times.py RUN_DIR [RUN_DIR ...]

Reads each run's summary.json (epochs, best epoch, seconds, samples/s per stage)
and the evaluation lines of its train.log (seconds per protocol and split).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def main(runs: list[Path]) -> None:
    print("| run | stage | epochs | best epoch | best valid NDCG@5 | seconds | samples/s |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        for stage, s in json.loads((run / "summary.json").read_text()).items():
            print(
                f"| {run.name} | {stage} | {s['epochs']} | {s['best_epoch']} | {s['best']:.4f} "
                f"| {s['seconds']:.0f} | {s['samples_per_s']:.0f} |"
            )
    print()
    print("| run | evaluation | seconds |")
    print("|---|---|---|")
    # Runs before 2026-12-07 timed each protocol; later ones time a split's protocols together.
    one = re.compile(r"(\w+) protocol, (\w+): mean NDCG@10 [0-9.]+ \((\d+) s\)")
    together = re.compile(r"(\w+) split evaluated under (\d+) protocols in (\d+) s")
    for run in runs:
        for line in (run / "train.log").read_text().splitlines():
            if found := one.search(line):
                print(f"| {run.name} | {found[1]}, {found[2]} | {found[3]} |")
            elif found := together.search(line):
                print(f"| {run.name} | {found[1]}, {found[2]} protocols | {found[3]} |")


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
