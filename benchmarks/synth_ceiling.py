"""How far is each model from the best possible on the synthetic shapes? The generator's
own probabilities as a scorer: no model can know more about the data.

For a user of market m with history h, the scorer infers the user's topic from the
market's taste and the history (Bayes, each purchase drawn as training/synth.py draws
it, sampling without replacement neglected) and scores candidate c by its chance under
that posterior. Its test NDCG@10 under `market` and `full` is printed per shape, beside
EASE^R's and the recipe's where a ``benchmarks.generalise --out`` folder holds their
runs for the same seeds: how much of the headroom each one takes.

    python -m benchmarks.synth_ceiling [--suite synth-small,synth-loose] [--seeds 0,1,2] \\
        [--runs runs/generalise/runs]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.generalise import PROTOCOLS, SYNTH
from model_store.vocab import Vocabulary
from training.data import load_interactions
from training.evaluate import evaluate
from training.protocols import build_eval_set
from training.split import make_split
from training.synth import SynthConfig, synth_world, write_synth


class GeneratorScorer:
    """Scores with the probabilities the synthetic rows were drawn from."""

    name = "generator"

    def __init__(self, cfg: SynthConfig, items: Vocabulary) -> None:
        world = synth_world(cfg)
        # Item index (1-based, 0 = PAD) -> the generator's item number ("I00042" -> 42).
        number = np.array([0] + [int(item_id[1:]) for item_id in items.ids])
        self.markets: list[tuple[np.ndarray, np.ndarray]] = []
        for taste, sold in zip(world.taste, world.sold, strict=True):
            on_sale = np.zeros(cfg.items, bool)
            on_sale[sold] = True
            chance = np.zeros((cfg.topics, cfg.items))  # P(item | the user's topic)
            for t in range(cfg.topics):
                own = on_sale & (world.topic == t)
                if own.any():
                    chance[t, own] = cfg.topic_focus * world.appeal[own] / world.appeal[own].sum()
            rest = np.where(on_sale, world.appeal * taste[world.topic], 0.0)
            chance += (1 - cfg.topic_focus) * rest / rest.sum()
            by_index = chance[:, number]
            by_index[:, 0] = 1.0  # PAD in a history: no evidence
            self.markets.append((np.log(taste), by_index))

    def score(
        self, histories: np.ndarray, candidates: np.ndarray, markets: np.ndarray
    ) -> np.ndarray:
        out = np.zeros(candidates.shape)
        for m in np.unique(markets):
            rows = markets == m
            log_taste, chance = self.markets[m]
            with np.errstate(divide="ignore"):
                log_post = np.log(chance[:, histories[rows]]).sum(-1).T + log_taste  # (B, T)
            post = np.exp(log_post - log_post.max(1, keepdims=True))
            post /= post.sum(1, keepdims=True)
            out[rows] = np.einsum("bt,tbc->bc", post, chance[:, candidates[rows]])
        return out


def ceiling(name: str, seeds: Sequence[int]) -> dict[str, float]:
    """Protocol -> the generator's test NDCG@10 on shape ``name``, mean over ``seeds``."""
    cfg = SynthConfig(**SYNTH[name])
    with tempfile.TemporaryDirectory() as folder:
        write_synth(Path(folder), cfg)
        data = load_interactions(Path(folder))
    scorer = GeneratorScorer(cfg, data.items)
    scores: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
    for seed in seeds:
        split = make_split(data, "random", seed)
        for protocol in PROTOCOLS:
            result = evaluate(scorer, build_eval_set(split, protocol, "test", seed=seed))
            scores[protocol].append(result.mean["ndcg@10"])
    return {p: float(np.mean(v)) for p, v in scores.items()}


def measured(runs: Path, name: str, seeds: Sequence[int], protocol: str) -> dict[str, float]:
    """EASE^R's and the recipe's mean test NDCG@10 from benchmarks.generalise's runs."""
    values: dict[str, list[float]] = {"EASE^R": [], "recipe": []}
    for seed in seeds:
        baselines = json.loads((runs / name / f"baselines-s{seed}.json").read_text())
        ease = [r for r in baselines if r["model"] == "ease" and r["protocol"] == protocol]
        values["EASE^R"].append(ease[0]["mean"]["ndcg@10"])
        ours = runs / name / f"hybrid-s{seed}" / "metrics" / f"{protocol}-test.json"
        values["recipe"].append(json.loads(ours.read_text())["mean"]["ndcg@10"])
    return {k: float(np.mean(v)) for k, v in values.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default=",".join(SYNTH), help="Synthetic shapes.")
    parser.add_argument("--seeds", default="0", help="Comma-separated seeds (default 0).")
    parser.add_argument("--runs", type=Path, help="benchmarks.generalise's <out>/runs folder.")
    args = parser.parse_args(argv)
    names = [n for n in args.suite.split(",") if n]
    if unknown := set(names) - set(SYNTH):
        parser.error(f"unknown shapes {sorted(unknown)}; choose from {', '.join(SYNTH)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| shape | protocol | generator (ceiling) | EASE^R | recipe | recipe / ceiling |")
    print("|---|---|---|---|---|---|")
    for name in names:
        best = ceiling(name, seeds)
        for protocol in PROTOCOLS:
            cells = [name, protocol, f"{best[protocol]:.4f}", "", "", ""]
            if args.runs is not None:
                got = measured(args.runs, name, seeds, protocol)
                cells[3:] = [f"{got['EASE^R']:.4f}", f"{got['recipe']:.4f}",
                             f"{got['recipe'] / best[protocol]:.3f}"]  # fmt: skip
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
