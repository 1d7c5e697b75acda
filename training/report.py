"""Evaluation results as text and markdown tables, and as JSON files.

``compare`` puts models side by side, one table per protocol and metric, each
cell the mean ± std over the seeds found; under the ``paper`` protocol the
Bert4CMR paper's own Table 2 row is added, as published.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate import Result

COMPARE_METRICS = ("ndcg@10", "recall@10", "mrr")


def _number(value: float) -> str:
    return f"{value:.4f}"


def grid_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*row) for row in [header, *rows])


def _titled(title: str, grid: str, markdown: bool) -> str:
    return f"{title}\n\n{grid}" if markdown else f"{title}\n{grid}"


def result_table(result: Result, markdown: bool = False) -> str:
    """One model under one protocol: a row per market plus the mean."""
    metrics = [k for k in result.mean if k != "users"]
    header = ["market", *metrics, "users"]
    rows = [
        [code, *(_number(m[k]) for k in metrics), str(int(m["users"]))]
        for code, m in [*result.markets.items(), ("mean", result.mean)]
    ]
    title = f"{result.model}, {result.protocol} protocol, {result.split} split, seed {result.seed}"
    if result.params:
        title += f", {json.dumps(result.params)}"
    return _titled(title, grid_table(header, rows, markdown), markdown)


def report(results: Sequence[Result], markdown: bool = False) -> str:
    """The models side by side per protocol and headline metric, then each model's detail."""
    as_json = [r.to_json() for r in results]
    comparisons = [
        compare(as_json, split=split, markdown=markdown).rstrip("\n")
        for split in {r.split for r in results}
    ]
    return "\n\n".join([*comparisons, *(result_table(r, markdown) for r in results)]) + "\n"


def write_json(results: Sequence[Result], path: Path) -> None:
    """One result as an object; several as a list of such objects."""
    payload = [r.to_json() for r in results]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2) + "\n")


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
    *,
    split: str = "test",
    metrics: Sequence[str] = COMPARE_METRICS,
    markdown: bool = True,
) -> str:
    """Per protocol and metric, a row per model, a column per market and the mean."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["split"] == split:
            groups[(r["protocol"], r["model"])].append(r)
    blocks = []
    for protocol in dict.fromkeys(p for p, _ in groups):
        models = [m for p, m in groups if p == protocol]
        codes = sorted({c for m in models for r in groups[(protocol, m)] for c in r["markets"]})
        for metric in metrics:
            if not all(metric in r["mean"] for m in models for r in groups[(protocol, m)]):
                continue  # results written before this metric was measured
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
            if protocol == "paper" and all(metric in PAPER_TABLE2.get(c, {}) for c in codes):
                table2 = [PAPER_TABLE2[c][metric] for c in codes]
                rows.append(
                    [PAPER_ROW, "5 runs", *(f"{v:.4f}" for v in table2), f"{np.mean(table2):.4f}"]
                )
            header = ["model", "seeds", *codes, "mean"]
            title = f"{metric}, {protocol} protocol, {split} split"
            if markdown:
                title = f"**{title}** (mean ± std over seeds)"
            blocks.append(_titled(title, grid_table(header, rows, markdown), markdown))
    return "\n\n".join(blocks) + "\n"
