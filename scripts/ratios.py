"""Each model's metrics as ratios to a reference model's (docs/results.md's "x EASE^R").

    usage: .venv/bin/python scripts/ratios.py MODEL REFERENCE FILE [FILE ...]

FILEs are result JSON files, as for `cmr compare` (test split). For each protocol:
the ratio of MODEL's mean over seeds to REFERENCE's, for the mean over markets of
NDCG@10, Recall@10 and MRR, and per market for NDCG@10.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from training.report import COMPARE_METRICS, load_results


def main(model: str, reference: str, files: list[Path]) -> None:
    results = [r for r in load_results(files) if r["split"] == "test"]
    for protocol in dict.fromkeys(r["protocol"] for r in results):

        def runs(name: str, protocol: str = protocol) -> list[dict[str, object]]:
            return [r for r in results if r["model"] == name and r["protocol"] == protocol]

        ours, theirs = runs(model), runs(reference)
        if not ours or not theirs:
            continue
        cells = []
        for metric in COMPARE_METRICS:
            a = np.mean([r["mean"][metric] for r in ours])  # type: ignore[index]
            b = np.mean([r["mean"][metric] for r in theirs])  # type: ignore[index]
            cells.append(f"{metric} {a:.4f} / {b:.4f} = {a / b:.3f}x")
        print(f"{protocol}: " + ", ".join(cells))
        codes = sorted(ours[0]["markets"])  # type: ignore[call-overload]
        per_market = []
        for code in codes:
            a = np.mean([r["markets"][code]["ndcg@10"] for r in ours])  # type: ignore[index]
            b = np.mean([r["markets"][code]["ndcg@10"] for r in theirs])  # type: ignore[index]
            per_market.append(f"{code} {a / b:.3f}x")
        print(f"  ndcg@10 per market: {', '.join(per_market)}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], [Path(p) for p in sys.argv[3:]])
