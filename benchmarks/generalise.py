"""Does the default recipe beat EASE^R on data it was not tuned on? The recipe and
EASE^R (lambda chosen per protocol on validation) on a suite of data sets, each seed
on identical candidates, as ratios of test NDCG@10 per data set and per market.

The suite (``--suite``, comma-separated; default all but the slow ones named in SLOW):
- ``xmarket``: ../shared/data/xmarket-electronics as is;
- ``xmarket-no-dates``: the same rows with the date column removed (plain
  co-occurrences only, as many users' logs are);
- ``xmarket-lmo`` (leave markets out): XMarket's jp, mx and uk, trained with what the
  recipe chose (the closed form's settings, pre-training's learning rate) in a run on
  the four other markets (ca, de, fr, in) with the same seed: do choices made on one
  set of markets hold on others?
- ``synth-*``: synthetic markets of several shapes (training/synth.py: Zipf
  popularity, topics shared by every market, each market its own taste and share of
  the catalogue), written with the data seed 0 whatever the training seed.

Each data set and seed runs ``cmr train`` with the default recipe plus ``--set``
(the run folder is kept: a finished run is not trained again) and ``cmr evaluate
--model ease --model popularity`` on the same split, under ``market`` and ``full``.
Prints the machine, then a markdown table: mean NDCG@10 of the recipe and of EASE^R
and their ratio per data set and protocol (mean over seeds), the lowest market's
ratio, and Recall@10 and MRR ratios. Progress on stderr.

    python -m benchmarks.generalise --out runs/generalise [--seeds 0,1,2] \\
        [--suite xmarket,synth-small] [--set lr=0.001] [--markdown F]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.ddp import machine
from training.protocols import Protocol
from training.synth import SynthConfig, write_synth

XMARKET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xmarket-electronics"
PROTOCOLS: tuple[Protocol, ...] = ("market", "full")
CMR = [sys.executable, "-m", "cmr"]


def _synth(**settings: Any) -> Callable[[Path], None]:
    def write(dest: Path) -> None:
        write_synth(dest, SynthConfig(**settings))

    return write


# Shapes apart from XMarket's (7 markets, 8,304 items, 9 rows a user): few or many
# items a topic, markets that share most or little of the catalogue, loose or tight
# topics, one rich market and several starved ones.
SYNTH: dict[str, dict[str, Any]] = {
    "synth-small": dict(markets=("aa", "bb", "cc"), users=(3000, 1200, 400), items=800,
                        topics=16),
    "synth-wide": dict(markets=("aa", "bb", "cc", "dd", "ee"),
                       users=(5000, 2500, 1200, 600, 300), items=4000, topics=80),
    "synth-disjoint": dict(markets=("aa", "bb", "cc", "dd"), users=(3000, 2000, 1000, 500),
                           items=2000, topics=40, market_share=0.4),
    "synth-loose": dict(markets=("aa", "bb", "cc"), users=(4000, 2000, 800), items=1500,
                        topics=30, topic_focus=0.5, mean_extra_history=8.0),
}  # fmt: skip
SLOW = ("xmarket", "xmarket-no-dates", "xmarket-lmo")  # 8-20 minutes a seed on 2 cores
# Leave-markets-out: the markets that choose, and those the choice is tested on.
CHOOSING, TESTED = ("ca", "de", "fr", "in"), ("jp", "mx", "uk")


@dataclass(frozen=True)
class DataSet:
    name: str
    write: Callable[[Path], None] | None  # None: used where it is (``source``)
    source: Path | None = None
    # Leave-markets-out: the recipe's choices come from a run on these other markets.
    choose_on: Callable[[Path], None] | None = None


def without_dates(source: Path) -> Callable[[Path], None]:
    """XMarket files rewritten as ``userId itemId rate``: the same rows, no dates."""

    def write(dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.glob("*_5core.txt")):
            lines = path.read_text().splitlines()
            if lines[0].split() != ["userId", "itemId", "rate", "date"]:
                raise ValueError(f"{path}: not an XMarket file")
            rows = (" ".join(line.split()[:3]) for line in lines[1:] if line.strip())
            (dest / path.name).write_text("\n".join(["userId itemId rate", *rows]) + "\n")

    return write


def markets_of(source: Path, codes: Sequence[str]) -> Callable[[Path], None]:
    """Those markets' files of ``source``, as they are."""

    def write(dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for code in codes:
            shutil.copy(source / f"{code}_5core.txt", dest)

    return write


def suite(xmarket: Path) -> dict[str, DataSet]:
    sets = {
        "xmarket": DataSet("xmarket", None, xmarket),
        "xmarket-no-dates": DataSet("xmarket-no-dates", without_dates(xmarket)),
        "xmarket-lmo": DataSet(
            "xmarket-lmo", markets_of(xmarket, TESTED), choose_on=markets_of(xmarket, CHOOSING)
        ),
    }
    sets |= {name: DataSet(name, _synth(**shape)) for name, shape in SYNTH.items()}
    return sets


def _run(command: list[str], log_file: Path) -> None:
    start = time.perf_counter()
    with log_file.open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log_file}")
    print(f"  {time.perf_counter() - start:.0f} s: {' '.join(command[2:5])}", file=sys.stderr)


def _train(data: Path, run: Path, *, settings: Sequence[str]) -> None:
    """`cmr train` on ``data`` into ``run`` with ``settings``, unless it finished before;
    its output goes to <run>.log beside it."""
    if (run / "summary.json").is_file():
        return
    command = [*CMR, "train", "--data", str(data), "--out", str(run)]
    for setting in settings:
        command += ["--set", setting]
    run.parent.mkdir(parents=True, exist_ok=True)
    _run(command, run.parent / f"{run.name}.log")


def chosen_on(data: Path, run: Path, *, seed: int, settings: Sequence[str]) -> list[str]:
    """What the recipe chooses on ``data``'s validation split (a run without test
    evaluation or refit), as settings that fix it: the closed form's and the learning rate."""
    _train(data, run, settings=[f"seed={seed}", 'eval_splits=["valid"]', "refit=false", *settings])
    choice = run / "closed_form_choice.json"
    chosen = json.loads(choice.read_text())["chosen"] if choice.is_file() else {}
    config = json.loads((run / "config.json").read_text())
    lr = config.get("pretrain_lr", config["train"]["lr"])  # absent: nothing chose a rate
    return [f"{name}={value}" for name, value in chosen.items()] + [
        f"lr={lr}",
        "lr_candidates=[]",
    ]


def run_one(
    data: Path, out: Path, *, seed: int, settings: Sequence[str], choose_on: Path | None = None
) -> list[dict[str, Any]]:
    """The recipe and the baselines on one data set and seed -> their test results;
    ``choose_on``: the recipe's choices are made on that data instead (``chosen_on``)."""
    run = out / f"hybrid-s{seed}"
    if choose_on is not None:
        fixed = chosen_on(choose_on, out / f"choice-s{seed}", seed=seed, settings=settings)
        print(f"  chosen on {choose_on.name}: {' '.join(fixed)}", file=sys.stderr)
        settings = [*settings, *fixed]
    protocols = f"eval_protocols={json.dumps(list(PROTOCOLS))}"
    _train(data, run, settings=[f"seed={seed}", protocols, 'eval_splits=["test"]', *settings])
    baselines = out / f"baselines-s{seed}.json"
    if not baselines.is_file():
        command = [*CMR, "evaluate", "--data", str(data), "--model", "ease"]
        command += ["--model", "popularity", "--seed", str(seed), "--json", str(baselines)]
        for protocol in PROTOCOLS:
            command += ["--protocol", protocol]
        _run(command, out / f"baselines-s{seed}.log")
    results = json.loads(baselines.read_text())
    for protocol in PROTOCOLS:
        results.append(json.loads((run / "metrics" / f"{protocol}-test.json").read_text()))
    return [r for r in results if r["split"] == "test"]


def ratio_rows(name: str, results: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown rows of one data set: the recipe against EASE^R per protocol."""
    rows = []
    for protocol in PROTOCOLS:
        ours = [r for r in results if r["protocol"] == protocol and r["model"] != "ease"
                and r["model"] != "popularity"]  # fmt: skip
        ease = [r for r in results if r["protocol"] == protocol and r["model"] == "ease"]
        pop = [r for r in results if r["protocol"] == protocol and r["model"] == "popularity"]

        def mean(runs: Sequence[dict[str, Any]], metric: str, market: str | None = None) -> float:
            values = [(r["mean"] if market is None else r["markets"][market])[metric] for r in runs]
            return float(np.mean(values))

        codes = sorted(ours[0]["markets"])
        per_market = {c: mean(ours, "ndcg@10", c) / mean(ease, "ndcg@10", c) for c in codes}
        low = min(per_market, key=per_market.__getitem__)
        cells = [
            name, protocol, str(len(ours)), f"{mean(pop, 'ndcg@10'):.4f}",
            f"{mean(ease, 'ndcg@10'):.4f}", f"{mean(ours, 'ndcg@10'):.4f}",
            f"**{mean(ours, 'ndcg@10') / mean(ease, 'ndcg@10'):.3f}x**",
            f"{low} {per_market[low]:.3f}x",
            f"{mean(ours, 'recall@10') / mean(ease, 'recall@10'):.3f}x",
            f"{mean(ours, 'mrr') / mean(ease, 'mrr'):.3f}x",
        ]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return rows


HEADER = (
    "| data set | protocol | seeds | popularity | EASE^R | recipe | x EASE^R "
    "| lowest market | Recall@10 x | MRR x |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for data and runs.")
    parser.add_argument("--seeds", default="0", help="Comma-separated seeds (default 0).")
    parser.add_argument(
        "--suite",
        default=",".join(n for n in suite(XMARKET) if n not in SLOW),
        help=f"Data sets, comma-separated, of: {', '.join(suite(XMARKET))}.",
    )
    parser.add_argument("--xmarket", type=Path, default=XMARKET, help="XMarket's folder.")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="settings",
        help="A recipe setting for every run (as `cmr train --set`).",
    )
    parser.add_argument("--markdown", type=Path, help="Also write the table here.")
    args = parser.parse_args(argv)
    sets = suite(args.xmarket)
    names = [n.strip() for n in args.suite.split(",") if n.strip()]
    unknown = set(names) - set(sets)
    if unknown:
        parser.error(f"unknown data sets {sorted(unknown)}; choose from {', '.join(sets)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    started = datetime.datetime.now(datetime.UTC)
    rows = []
    for name in names:
        data_set = sets[name]
        data = data_set.source or args.out / "data" / name
        if data_set.write is not None and not data.is_dir():
            data_set.write(data)
        choose_on = None
        if data_set.choose_on is not None:
            choose_on = args.out / "data" / f"{name}-choosing"
            if not choose_on.is_dir():
                data_set.choose_on(choose_on)
        results = []
        for seed in seeds:
            print(f"{name}, seed {seed}", file=sys.stderr)
            results += run_one(
                data, args.out / "runs" / name, seed=seed, settings=args.settings,
                choose_on=choose_on,
            )  # fmt: skip
        rows += ratio_rows(name, results)
    text = "\n".join([
        f"{started:%Y-%m-%d %H:%M} UTC, {machine('cpu').strip()}; seeds {args.seeds}; "
        f"settings {' '.join(args.settings) or '(the default recipe)'}",
        "",
        HEADER,
        *rows,
    ])  # fmt: skip
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
