"""benchmarks.synth_ceiling: the generator's own probabilities rank as no fitted model can."""

from __future__ import annotations

from pathlib import Path

from benchmarks.synth_ceiling import GeneratorScorer
from training.baselines import Popularity, tune_ease
from training.data import load_interactions
from training.evaluate import evaluate
from training.protocols import build_eval_set
from training.split import make_split
from training.synth import SynthConfig, synth_world, synthesize, write_synth


def test_the_world_is_what_the_rows_are_drawn_from(tmp_path: Path) -> None:
    cfg = SynthConfig(seed=3)
    world, rows = synth_world(cfg), synthesize(cfg)
    for m, code in enumerate(cfg.markets):
        bought = {int(item[1:]) for _, item, _, _ in rows[code]}
        assert bought <= set(world.sold[m].tolist())  # a market's users buy what it sells
    assert world.topic.shape == world.appeal.shape == (cfg.items,)


def test_the_generator_beats_ease_and_popularity_on_identical_candidates(tmp_path: Path) -> None:
    cfg = SynthConfig(users=(600, 300, 150), items=300, topics=12, topic_focus=0.7)
    write_synth(tmp_path, cfg)
    data = load_interactions(tmp_path)
    split = make_split(data, "random", 0)
    generator = GeneratorScorer(cfg, data.items)
    for protocol in ("market", "full"):
        test = build_eval_set(split, protocol, "test")
        valid = build_eval_set(split, protocol, "valid")
        (ease,) = tune_ease(split, [valid])
        best = evaluate(generator, test).mean["ndcg@10"]
        assert best > evaluate(ease, test).mean["ndcg@10"], protocol
        assert best > evaluate(Popularity.fit(split), test).mean["ndcg@10"] + 0.1, protocol
