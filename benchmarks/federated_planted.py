"""Federating on planted data, and its ablations, over several synthetic data seeds.

For each seed, the planted markets (training/federated/planted.py: the federation
test's setting) are drawn with that seed, which also seeds training, and each variant
is trained on them with ``federate`` (training/federated/run.py, in simulation):
FedAvg with S2CE and item weighting (the default, hybrid-fedavg), FedAvg with plain
cross-entropy (hybrid-fedavg-ce), FedAvg with Flower's plain weights
(hybrid-fedavg-plain), FedProx (hybrid-fedprox) and each market alone (hybrid-alone).
Prints the machine, then markdown: NDCG@10 under the market protocol on the test
split, per market and mean, as mean ± std over seeds (``cmr compare``'s table), after
adaptation and before it (-no-adapt); then per row the seeds x markets where it beats
hybrid-alone, hybrid-fedavg-ce and hybrid-fedavg at the same stage; then seconds per run (the
first run also pays the one-time start-up). Progress on stderr.

    python -m benchmarks.federated_planted [--seeds 0,1,2] [--markdown F] [--json F]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.ddp import machine
from training.federated.planted import FED, MODEL, SYNTH, seeded
from training.federated.run import federate
from training.report import compare, grid_table
from training.synth import write_synth

# What each variant changes in the planted FederatedConfig; the rows are named by
# FederatedConfig.name, e.g. hybrid-fedavg-ce.
VARIANTS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "fedavg-ce": {"semantics": "none"},
    "fedavg-plain": {"item_weighting": False},
    "fedprox": {"strategy": "fedprox"},
    "alone": {"strategy": "alone"},
}
# Each row against them: the ablations against the default as well.
BASELINES = ("alone", "fedavg-ce", "fedavg")
METRIC = "ndcg@10"
PROTOCOL, SPLIT = "market", "test"  # all the planted setting evaluates
NO_ADAPT = "-no-adapt"  # the suffix of the results before adaptation


def model_name(variant: str) -> str:
    return replace(FED, **VARIANTS[variant]).name


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_planted(
    *, seeds: Sequence[int], variants: Sequence[str], scratch: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every variant on every seed's planted data, run folders under ``scratch``: the
    results (``Result.to_json``, adapted and -no-adapt) and each run's seconds."""
    results: list[dict[str, Any]] = []
    seconds: list[dict[str, Any]] = []
    for seed in seeds:
        synth, fed = seeded(seed)
        data = scratch / f"data-s{seed}"
        write_synth(data, synth)
        for variant in variants:
            cfg = replace(fed, **VARIANTS[variant])
            began = time.perf_counter()
            got = federate(
                data, scratch / f"{variant}-s{seed}", model_settings=dict(MODEL), cfg=cfg
            )
            took = time.perf_counter() - began
            results += [r.to_json() for r in got]
            seconds.append({"model": cfg.name, "seed": seed, "seconds": round(took, 2)})
            (adapted,) = [r for r in got if r.model == cfg.name]
            progress(f"seed {seed} {cfg.name}: {took:.1f} s, {METRIC} {adapted.mean[METRIC]:.4f}")
    return results, seconds


def wins(results: Sequence[dict[str, Any]], *, model: str, baseline: str) -> tuple[int, int] | None:
    """(seeds x markets where ``model``'s NDCG@10 is above ``baseline``'s, seeds x
    markets compared); None when they share no seed. A tie is not a win."""
    scores = {
        (r["model"], r["seed"]): r["markets"]
        for r in results
        if r["protocol"] == PROTOCOL and r["split"] == SPLIT
    }
    pairs = [
        (markets[code][METRIC], scores[(baseline, seed)][code][METRIC])
        for (name, seed), markets in scores.items()
        if name == model and (baseline, seed) in scores
        for code in markets
    ]
    return (sum(a > b for a, b in pairs), len(pairs)) if pairs else None


def wins_table(results: Sequence[dict[str, Any]], baselines: Sequence[str]) -> str:
    """Markdown: a row per model, a column per baseline at the row's own stage."""
    models = list(dict.fromkeys(r["model"] for r in results))
    header = ["model", *(f"beats {b}" for b in baselines)]
    rows = []
    for model in models:
        cells = []
        for base in baselines:
            against = base + NO_ADAPT if model.endswith(NO_ADAPT) else base
            won = None if against == model else wins(results, model=model, baseline=against)
            cells.append("-" if won is None else f"{won[0]}/{won[1]}")
        rows.append([model, *cells])
    return grid_table(header, rows, markdown=True)


def planted_report(
    results: Sequence[dict[str, Any]], seconds: Sequence[dict[str, Any]], *, header: str
) -> str:
    """The whole markdown: ``header``, the scores, the wins, the seconds per run."""
    # Adapted rows first, then -no-adapt; a stable sort keeps the variants' order.
    ordered = sorted(results, key=lambda r: str(r["model"]).endswith(NO_ADAPT))
    scores = compare(ordered, split=SPLIT, metrics=(METRIC,)).rstrip("\n")
    baselines = [model_name(b) for b in BASELINES]
    explained = (
        f"**Wins**: seeds x markets where the row's {METRIC} is above the baseline's, "
        "before adaptation against the baseline before it"
    )
    per_model: dict[str, list[float]] = {}
    for s in seconds:
        per_model.setdefault(s["model"], []).append(s["seconds"])
    times = ", ".join(f"{m} {np.mean(v):.1f}" for m, v in per_model.items())
    return (
        f"{header}\n\n{scores}\n\n{explained}\n\n{wins_table(ordered, baselines)}\n\n"
        f"Seconds per run (mean over seeds): {times}\n"
    )


def _seeds(text: str) -> list[int]:
    """The text "0,1,2" -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seeds like 0,1,2") from None
    if min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: seeds must be distinct and >= 0")
    return seeds


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.federated_planted",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[2],
    )
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=[0, 1, 2],
        help="data seeds, each also seeding training (default: 0,1,2)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="which variants to run (default: all); wins need alone, fedavg-ce, fedavg",
    )
    parser.add_argument("--markdown", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="write the raw per-seed results here")
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.ERROR)  # not Flower's lines per round
    command = shlex.join(["python", "-m", "benchmarks.federated_planted", *argv])
    load_before = os.getloadavg()[0]  # a shared machine's other work slows the runs
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        results, seconds = run_planted(
            seeds=args.seeds, variants=args.variants, scratch=Path(scratch)
        )
    total = time.perf_counter() - began
    where = machine("cpu").strip()
    date = datetime.date.today().isoformat()
    header = (
        f"Planted data (training/federated/planted.py), seeds {args.seeds}: `{command}`\n\n"
        f"{date}, {where}; {total:.0f} s in all; load average (1 min) "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    text = planted_report(results, seconds, header=header)
    print(text, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.json:
        raw = {
            "command": command, "date": date, "machine": where, "seconds_total": round(total, 1),
            "seeds": args.seeds, "variants": {v: VARIANTS[v] for v in args.variants},
            "planted": {"synth": asdict(SYNTH), "federation": asdict(FED), "model": dict(MODEL),
                        "seeding": "each seed replaces synth.seed and federation.train.seed"},
            "seconds": seconds, "results": results,
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
