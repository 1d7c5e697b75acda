"""A federation's run folder, from what the server ends with (``Outcome``) and what every
party holds (``SharedInfo``): no interaction data, so the in-process simulation
(training/federated/run.py) and a deployed server (training/federated/deployment.py)
write it alike.

It holds what a hybrid run holds (config.json, items.json, closed_form.safetensors,
pretrained/, markets/<code>/, metrics/; the model before adaptation in
metrics/no-adapt/), so ``cmr export`` publishes it unchanged, plus catalogues.json
(each market's items and interaction counts, sent by its client at the publish step:
what the published version's catalogues hold, so the export reads no data folder),
federation.json (the settings), traffic.json (bytes per round and client) and
summary.json (wall times).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from model_store.catalogue import save_catalogues
from training.closed_form import CLOSED_FORM_FILE
from training.evaluate import Result
from training.federated.apps import Outcome
from training.federated.assemble import assemble
from training.federated.config import FederatedConfig
from training.federated.shared import SharedInfo
from training.federated.wire import Traffic
from training.hybrid import HybridConfig
from training.report import write_json
from training.runs import CATALOGUES_FILE, write_config

log = logging.getLogger(__name__)


def write_run(
    run_dir: Path,
    outcome: Outcome,
    *,
    cfg: FederatedConfig,
    model_cfg: HybridConfig,
    shared: SharedInfo,
    traffic: Traffic,
    data_dir: Path | None,
    command: str,
    began: float,
    setup_seconds: float,
) -> list[Result]:
    """Write ``run_dir``; -> the clients' results. ``data_dir``: the data folder when
    there is one (the simulation); ``command``: what started the run (commands.txt, for
    the model store); ``began``: ``time.perf_counter()`` at the start."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if command:
        with (run_dir / "commands.txt").open("a") as f:
            f.write(command + "\n")
    write_config(
        run_dir, family="hybrid", name=cfg.name, data_dir=data_dir, markets=shared.markets,
        items=shared.items, model=model_cfg, train=cfg.train,
    )  # fmt: skip
    (run_dir / "federation.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    results = client_results(outcome, markets=shared.markets, cfg=cfg)
    for result in results:  # the run's model in metrics/, as a hybrid run has it
        folder = run_dir / "metrics" / ("" if result.model == cfg.name else "no-adapt")
        write_json([result], folder / f"{result.protocol}-{result.split}.json")
    if cfg.strategy != "alone":  # one model for every market: a hybrid run, exportable
        _save_model(run_dir, outcome, model_cfg=model_cfg, markets=shared.markets)
    catalogues = {shared.markets[m]: c for m, c in sorted(outcome.catalogues.items())}
    save_catalogues(catalogues, run_dir / CATALOGUES_FILE)
    traffic.save(run_dir / "traffic.json")
    summary: dict[str, Any] = {
        "rounds": cfg.rounds,
        "strategy": cfg.strategy,
        "clients": len(outcome.metrics),
        "bytes_total": traffic.total,
        "seconds": {
            "setup": setup_seconds,
            **outcome.seconds,
            "total": time.perf_counter() - began,
        },
        "train_loss_per_round": outcome.train_loss,
        "valid_per_round": outcome.valid_per_round,  # mean over markets
        "best_round": {shared.markets[m]: r for m, r in sorted(outcome.best_round.items())},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "federation %s: %.0f s, %d bytes over the wire",
        cfg.name,
        summary["seconds"]["total"],
        traffic.total,
    )
    return results


def client_results(
    outcome: Outcome, *, markets: tuple[str, ...], cfg: FederatedConfig
) -> list[Result]:
    """The clients' reported metrics as results: after adaptation (the run's name) and
    after the rounds alone (``-no-adapt``)."""
    stages = {"adapted": cfg.name} if cfg.adapt else {}
    stages["rounds"] = cfg.name if not cfg.adapt else f"{cfg.name}-no-adapt"
    results = []
    for stage, name in stages.items():
        for protocol in cfg.train.eval_protocols:
            for split in cfg.train.eval_splits:
                prefix = f"{stage}/{protocol}/{split}/"
                per_market = {
                    markets[m]: {
                        k.removeprefix(prefix): v for k, v in got.items() if k.startswith(prefix)
                    }
                    for m, got in sorted(outcome.metrics.items())
                }
                results.append(
                    Result(
                        model=name,
                        protocol=protocol,
                        split=split,
                        seed=cfg.train.seed,
                        markets=per_market,
                    )
                )
    return results


def _save_model(
    run_dir: Path, outcome: Outcome, *, model_cfg: HybridConfig, markets: tuple[str, ...]
) -> None:
    """The layout ``load_hybrid`` reads: the model after the rounds as pretrained/, each
    market's adapted rows as markets/<code>/."""
    rounds = {m: {**outcome.parts[m], **outcome.round_rows[m]} for m in outcome.parts}
    model = assemble(model_cfg, shared=outcome.shared, parts=rounds)
    save_file(model.closed_form.tensors(), run_dir / CLOSED_FORM_FILE)
    (run_dir / "pretrained").mkdir(exist_ok=True)
    learned = {n: p.detach().contiguous() for n, p in model.named_parameters()}
    save_file(learned, run_dir / "pretrained" / "best.safetensors")
    done = json.dumps({"done": True})
    (run_dir / "pretrained" / "stage.json").write_text(done)
    for m, parts in outcome.parts.items():
        folder = run_dir / "markets" / markets[m]
        folder.mkdir(parents=True, exist_ok=True)
        rows = {n: t.contiguous() for n, t in parts.items() if n in outcome.round_rows[m]}
        save_file(rows, folder / "best.safetensors")
        (folder / "stage.json").write_text(done)
