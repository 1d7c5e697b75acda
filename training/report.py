"""Evaluation results as text and markdown tables, and as JSON files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from training.evaluate import Result

COMPARE_METRICS = ("ndcg@10", "recall@10")


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


def comparison_table(results: Sequence[Result], metric: str, markdown: bool = False) -> str:
    """Several models under the same protocol and split: a row per model, a column per market."""
    protocols = {(r.protocol, r.split, r.seed) for r in results}
    if len(protocols) != 1:
        raise ValueError("a comparison needs results of one protocol, split and seed")
    codes = list(results[0].markets)
    header = ["model", *codes, "mean"]
    rows = [
        [
            r.model,
            *(_number(r.markets[c][metric]) if c in r.markets else "-" for c in codes),
            _number(r.mean[metric]),
        ]
        for r in results
    ]
    protocol, split, seed = protocols.pop()
    title = f"{metric}, {protocol} protocol, {split} split, seed {seed}"
    return _titled(title, grid_table(header, rows, markdown), markdown)


def report(results: Sequence[Result], markdown: bool = False) -> str:
    """Per protocol: the model comparison for each headline metric, then each model's detail."""
    blocks: list[str] = []
    for protocol in dict.fromkeys(r.protocol for r in results):
        group = [r for r in results if r.protocol == protocol]
        blocks += [comparison_table(group, metric, markdown) for metric in COMPARE_METRICS]
        blocks += [result_table(r, markdown) for r in group]
    return "\n\n".join(blocks) + "\n"


def write_json(results: Sequence[Result], path: Path) -> None:
    """One result as an object; several as a list of such objects."""
    payload = [r.to_json() for r in results]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2) + "\n")
