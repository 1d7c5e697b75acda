"""Mean and spread over seeds of result files, model beside model, per protocol.

Reads JSON written by ``cmr evaluate --json`` and ``cmr train`` (objects or lists
in the evaluation schema) and writes one table per protocol and metric, each
cell ``mean ± std`` over the seeds found. Under the ``paper`` protocol the
Bert4CMR paper's own Table 2 row is added, as published.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.report import grid_table

# Bert4CMR, the paper's Table 2 (mean of 5 runs), via ../shared/docs/bert4cmr.md.
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "de": {"recall@5": 0.6611, "ndcg@5": 0.5032, "recall@10": 0.7931, "ndcg@10": 0.5462},
    "jp": {"recall@5": 0.6308, "ndcg@5": 0.4731, "recall@10": 0.7888, "ndcg@10": 0.5243},
    "in": {"recall@5": 0.7163, "ndcg@5": 0.6066, "recall@10": 0.8033, "ndcg@10": 0.6345},
    "fr": {"recall@5": 0.6919, "ndcg@5": 0.5194, "recall@10": 0.8239, "ndcg@10": 0.5622},
    "ca": {"recall@5": 0.5196, "ndcg@5": 0.3933, "recall@10": 0.6359, "ndcg@10": 0.4310},
    "mx": {"recall@5": 0.7941, "ndcg@5": 0.6938, "recall@10": 0.8739, "ndcg@10": 0.7198},
    "uk": {"recall@5": 0.6481, "ndcg@5": 0.5172, "recall@10": 0.7636, "ndcg@10": 0.5546},
}
PAPER_ROW = "paper's Table 2 (Bert4CMR)"


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every result object in the files (a file holds one object or a list)."""
    results: list[dict[str, Any]] = []
    for path in paths:
        payload = json.loads(path.read_text())
        results += payload if isinstance(payload, list) else [payload]
    return results


def _cell(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def compare(
    results: Sequence[dict[str, Any]],
    split: str = "test",
    metrics: Sequence[str] = ("ndcg@10", "recall@10"),
) -> str:
    """Markdown: per protocol and metric, a row per model, a column per market and the mean."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["split"] == split:
            groups[(r["protocol"], r["model"])].append(r)
    blocks = []
    for protocol in dict.fromkeys(p for p, _ in groups):
        models = [m for p, m in groups if p == protocol]
        codes = sorted({c for m in models for r in groups[(protocol, m)] for c in r["markets"]})
        for metric in metrics:
            rows = []
            for model in models:
                runs = groups[(protocol, model)]
                seeds = sorted({r["seed"] for r in runs})
                cells = [
                    _cell([r["markets"][c][metric] for r in runs if c in r["markets"]])
                    for c in codes
                ]
                rows.append(
                    [model, str(len(seeds)), *cells, _cell([r["mean"][metric] for r in runs])]
                )
            if protocol == "paper" and all(c in PAPER_TABLE2 for c in codes):
                table2 = [PAPER_TABLE2[c][metric] for c in codes]
                rows.append(
                    [PAPER_ROW, "5 runs", *(f"{v:.4f}" for v in table2), f"{np.mean(table2):.4f}"]
                )
            header = ["model", "seeds", *codes, "mean"]
            title = f"**{metric}, {protocol} protocol, {split} split** (mean ± std over seeds)"
            blocks.append(f"{title}\n\n{grid_table(header, rows, markdown=True)}")
    return "\n\n".join(blocks) + "\n"
