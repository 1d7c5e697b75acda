"""The warm-start and onboarding tables of docs/results.md, from scripts/reproduce_loop.sh's
folder (or the copy of its small files in docs/results/loop).

    usage: .venv/bin/python scripts/loop_tables.py [DIR]   (default docs/results/loop)

NDCG@10 on the test split, mean over markets, then mean ± std over the seeds found.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from statistics import mean, stdev
from typing import Any

PROTOCOLS = ("market", "full")


def spread(values: list[float], digits: int = 4) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "-"
    return f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"


def results(path: Path) -> list[dict[str, Any]]:
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, list) else [loaded]


def log_seconds(path: Path, pattern: str) -> float:
    found = re.findall(pattern, path.read_text())
    if not found:
        raise SystemExit(f"{path}: no line matching {pattern!r}")
    return float(found[-1])


def warm_table(seeds: list[Path]) -> None:
    print("| model | market | full | pre-training epochs (best) | trained in, s |")
    print("|---|---|---|---|---|")
    for name in ("popularity", "ease"):
        by_protocol: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
        for seed in seeds:
            for r in results(seed / "baselines.json"):
                if r["model"] == name:
                    by_protocol[r["protocol"]].append(r["mean"]["ndcg@10"])
        label = "EASE^R" if name == "ease" else name
        print(f"| {label} | {spread(by_protocol['market'])} | {spread(by_protocol['full'])} | | |")
    for run in ("cold", "warm"):
        ndcg = {
            p: [
                results(s / run / "metrics" / f"{p}-test.json")[0]["mean"]["ndcg@10"] for s in seeds
            ]
            for p in PROTOCOLS
        }
        summaries = [json.loads((s / run / "summary.json").read_text())["pretrain"] for s in seeds]
        epochs = ", ".join(f"{x['epochs']} ({x['best_epoch']})" for x in summaries)
        pattern = r"trained 7 markets .* in (\d+) s"
        seconds = [log_seconds(s / run / "train.log", pattern) for s in seeds]
        label = "hybrid, cold (all data)" if run == "cold" else "hybrid, warm from the 90% version"
        print(
            f"| {label} | {spread(ndcg['market'])} | {spread(ndcg['full'])} | {epochs} "
            f"| {', '.join(f'{t:.0f}' for t in seconds)} |"
        )


def onboarding_table(seeds: list[Path], markets: list[str]) -> None:
    print("| market | protocol | onboarded | trained with it from the start | EASE^R, market alone "
          "| popularity, market alone |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for code in markets:
        for protocol in PROTOCOLS:
            cells: dict[str, list[float]] = {}
            for seed in seeds:
                for kind in ("cold", "onboarded"):
                    for r in results(seed / f"eval-{kind}-{code}.json"):
                        if r["protocol"] != protocol:
                            continue
                        key = kind if r["model"].startswith("store:") else f"{kind}/{r['model']}"
                        cells.setdefault(key, []).append(r["mean"]["ndcg@10"])
            print(
                f"| {code} | {protocol} | {spread(cells['onboarded'])} | {spread(cells['cold'])} "
                f"| {spread(cells['cold/ease'])} | {spread(cells['cold/popularity'])} |"
            )
    print()
    print("| market | onboarding epochs (best) | training, s | the command with publishing, s |")
    print("|---|---|---|---|")
    for code in markets:
        logs = [seed / f"onboard-{code}.log" for seed in seeds]
        epochs = [
            re.findall(r"onboarded \S+: (\d+) epochs, best (\d+)", p.read_text())[-1] for p in logs
        ]
        train = [log_seconds(p, r"onboarded \S+ in (\d+) s") for p in logs]
        command = [log_seconds(p, r"onboard command: (\d+) ms") / 1000 for p in logs]
        print(
            f"| {code} | {', '.join(f'{e} ({b})' for e, b in epochs)} "
            f"| {', '.join(f'{t:.0f}' for t in train)} | {', '.join(f'{t:.0f}' for t in command)} |"
        )


def main(folder: Path) -> None:
    seeds = sorted(p for p in folder.glob("s[0-9]*") if p.is_dir())
    markets = sorted({p.stem.split("-")[-1] for p in seeds[0].glob("onboard-*.json")})
    print(f"seeds: {', '.join(s.name for s in seeds)}\n")
    warm_table(seeds)
    print()
    onboarding_table(seeds, markets)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/loop"))
