"""A training run into the model store: ONNX scoring graphs plus what serving needs.

Every graph has the one scoring contract of docs/architecture.md:
    history int64 [B, N], candidates int64 [B, C], market int64 [B] -> scores float32 [B, C]
with B, N and C dynamic and 0 as padding; higher scores rank first. A hybrid run
becomes one graph that serves every market (its scores are logits); a Bert4CMR run
one graph per fine-tuned market plus the pre-trained one (probabilities). Graphs come
from torch.export (the ``dynamo`` exporter), whose symbolic shapes keep B, N and C
free; the exporter of the TorchScript path is the one known to bake shapes into
Reshape nodes. Each graph is checked against torch on several shapes, with markets
mixed in one call, before it is published.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from model_store.catalogue import Catalogue, load_catalogues, save_catalogues
from model_store.manifest import Manifest, StoreError
from model_store.store import ModelStore, Version, check_version_name
from model_store.vocab import PAD, Vocabulary
from training.closed_form import REFIT_FILE
from training.config import named_variant
from training.data import Interactions, load_interactions
from training.hybrid import HybridConfig, HybridRecommender
from training.hybrid_train import load_hybrid
from training.model import Bert4CMR, Bert4CMRConfig, Variant
from training.runs import CATALOGUES_FILE, CHOSEN_IN_TRAINING
from training.store_model import STATE_FILE, save_state

log = logging.getLogger(__name__)

INPUTS = ("history", "candidates", "market")
OUTPUT = "scores"
PARITY_TOLERANCE = 1e-5
# (B, N, C) checked at export time; the tests cover many more.
EXPORT_CHECK_SHAPES = ((1, 0, 1), (3, 50, 7), (16, 9, 300))


def variant_name(config: Bert4CMRConfig | HybridConfig) -> str:
    """The manifest's ``variant``: Bert4CMR's own, or "hybrid"."""
    return "hybrid" if isinstance(config, HybridConfig) else config.variant


class ScoringGraph(nn.Module):
    """A model behind the scoring contract: Bert4CMR's probabilities, the hybrid's logits
    (a softmax-trained model has no per-candidate probability, and a sigmoid of its
    large logits would tie at 1.0)."""

    def __init__(self, model: Bert4CMR | HybridRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: Tensor, candidates: Tensor, market: Tensor) -> Tensor:
        # One more PAD column, so the graph never holds a zero-width history (N = 0,
        # which onnxruntime's Reshape rejects). PAD is left out of every score, so the
        # scores do not change; an all-PAD row is a user without history.
        pad = torch.zeros_like(market)[:, None]
        logits = self.model(torch.cat([history, pad], dim=1), candidates, market)
        return logits if isinstance(self.model, HybridRecommender) else torch.sigmoid(logits)


def export_graph(model: Bert4CMR | HybridRecommender, path: Path) -> None:
    """Write ``model`` as an ONNX scoring graph with dynamic B, N and C."""
    model.eval()
    # Sizes of at least 2 and all different, so torch.export specialises none of them.
    example = (
        torch.ones((2, 3), dtype=torch.int64),
        torch.ones((2, 4), dtype=torch.int64),
        torch.zeros((2,), dtype=torch.int64),
    )
    batch, n, c = torch.export.Dim("B"), torch.export.Dim("N"), torch.export.Dim("C")
    # The exporter's own warnings, progress prints and optimiser logs are not ours.
    quiet = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ScoringGraph(model),
            example,
            str(path),
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_shapes={
                "history": {0: batch, 1: n},
                "candidates": {0: batch, 1: c},
                "market": {0: batch},
            },
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    for logger, level in zip(quiet, levels, strict=True):
        logger.setLevel(level)


def random_inputs(
    rng: np.random.Generator, shape: tuple[int, int, int], *, n_items: int, n_markets: int
) -> dict[str, np.ndarray[Any, Any]]:
    """Contract inputs of shape (B, N, C): ragged right-padded histories (some rows
    empty), real candidates."""
    b, n, c = shape
    history = rng.integers(1, n_items, size=(b, n), dtype=np.int64)
    lengths = rng.integers(0, n + 1, size=b)
    history[np.arange(n)[None, :] >= lengths[:, None]] = PAD
    return {
        "history": history,
        "candidates": rng.integers(1, n_items, size=(b, c), dtype=np.int64),
        "market": rng.integers(0, n_markets, size=b, dtype=np.int64),
    }


@torch.no_grad()
def torch_scores(
    model: Bert4CMR | HybridRecommender, inputs: dict[str, np.ndarray[Any, Any]]
) -> np.ndarray[Any, Any]:
    model.eval()
    graph = ScoringGraph(model)
    out: Tensor = graph(*(torch.from_numpy(inputs[name]) for name in INPUTS))
    return out.numpy()


def parity(
    model: Bert4CMR | HybridRecommender,
    session: ort.InferenceSession,
    shapes: tuple[tuple[int, int, int], ...],
    *,
    seed: int = 0,
) -> float:
    """Largest |onnxruntime - torch| score difference over random inputs of ``shapes``."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for shape in shapes:
        inputs = random_inputs(
            rng, shape, n_items=model.config.n_items, n_markets=model.config.n_markets
        )
        (scores,) = session.run([OUTPUT], inputs)
        expected = torch_scores(model, inputs)
        if scores.shape != expected.shape or not np.isfinite(scores).all():
            raise StoreError(f"graph gave shape {scores.shape} or non-finite scores on {shape}")
        worst = max(worst, float(np.abs(scores - expected).max()))
    return worst


@dataclass(frozen=True, kw_only=True)
class RunModels:
    config: dict[str, Any]  # the run's config.json
    graphs: dict[str, Bert4CMR | HybridRecommender]  # graph file in the version -> model
    market_graphs: dict[str, str]  # market code -> the graph scoring it with its own parameters
    pretrained: str | None  # the graph for markets without parameters of their own
    trained_variant: str  # what the run trained (``variant`` may be the other attention)
    refitted: bool = False  # the hybrid's closed form refitted on every row

    @property
    def variant(self) -> str:
        return variant_name(next(iter(self.graphs.values())).config)


def load_run(run_dir: Path, variant: str | None = None, *, refitted: bool = True) -> RunModels:
    """The best weights of every stage of a finished run. ``variant`` picks Bert4CMR's
    attention pattern to export (the weights fit both); default: the trained one.
    ``refitted``: a hybrid's closed form refitted on every row, when the run has one."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run (no config.json)")
    config = json.loads(config_path.read_text())
    if config.get("family", "bert4cmr") == "hybrid":
        if variant not in (None, "hybrid"):
            raise ValueError(f"{run_dir} is a hybrid run: it has no {variant!r} variant")
        refitted = refitted and (run_dir / REFIT_FILE).is_file()
        model = load_hybrid(run_dir, config, refitted=refitted)
        every_market = dict.fromkeys(config["markets"], "model.onnx")
        return RunModels(
            config=config,
            graphs={"model.onnx": model},
            market_graphs=every_market,
            pretrained=None,
            trained_variant="hybrid",
            refitted=refitted,
        )
    config["model"] = named_variant(config["model"])
    model_cfg = Bert4CMRConfig(**config["model"])
    trained_variant = model_cfg.variant
    if variant is not None:
        if variant not in get_args(Variant):
            raise ValueError(f"{run_dir} is a Bert4CMR run: variant paper or history-once")
        model_cfg = replace(model_cfg, variant=cast(Variant, variant))  # checked above

    def load(stage_dir: Path) -> Bert4CMR | None:
        weights = stage_dir / "best.safetensors"
        if not weights.is_file():
            return None
        model = Bert4CMR(model_cfg)
        model.load_state_dict(load_file(weights))
        return model.eval()

    graphs: dict[str, Bert4CMR | HybridRecommender] = {}
    pretrained = load(run_dir / "pretrained")
    if pretrained is not None:
        graphs["pretrained.onnx"] = pretrained
    market_graphs = {}
    for code in config["markets"]:
        if (trained := load(run_dir / "markets" / code)) is not None:
            graphs[f"markets/{code}.onnx"] = trained
            market_graphs[code] = f"markets/{code}.onnx"
    if pretrained is None and set(market_graphs) != set(config["markets"]):
        raise FileNotFoundError(f"{run_dir}: no trained weights for every market (unfinished?)")
    return RunModels(
        config=config,
        graphs=graphs,
        market_graphs=market_graphs,
        pretrained="pretrained.onnx" if pretrained is not None else None,
        trained_variant=trained_variant,
    )


def market_catalogues(data: Interactions) -> dict[str, Catalogue]:
    """Each market's items and their interaction counts, from all of its rows."""
    return {
        code: Catalogue.from_interactions(data.item[data.user_market[data.user] == m])
        for m, code in enumerate(data.markets)
    }


def _run_catalogues(
    run_dir: Path, cfg: dict[str, Any], data_dir: Path | None
) -> tuple[Vocabulary, dict[str, Catalogue]]:
    """The run's vocabulary and its markets' catalogues: the run's own (a federation's,
    sent by its clients) unless ``data_dir`` is given, else from the data it used."""
    # The run's vocabulary as the base: a warm-started run's keeps its source's order.
    vocabulary = Vocabulary.load(run_dir / "items.json")
    own = run_dir / CATALOGUES_FILE
    if own.is_file() and data_dir is None:
        catalogues = load_catalogues(own)
        if list(catalogues) != cfg["markets"]:
            raise ValueError(f"{own} has markets {list(catalogues)}, the run {cfg['markets']}")
        return vocabulary, catalogues
    if cfg["data"] is None and data_dir is None:
        raise ValueError(f"{run_dir} names no data folder and has no {CATALOGUES_FILE}")
    data = load_interactions(Path(data_dir or cfg["data"]), base_items=vocabulary)
    if data.items.sha256() != cfg["items_sha256"]:
        raise ValueError(f"the data in {data_dir or cfg['data']} is not the data the run used")
    if list(data.markets) != cfg["markets"]:
        raise ValueError(f"the data has markets {data.markets}, the run {cfg['markets']}")
    return data.items, market_catalogues(data)


def _test_metrics(run_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    metrics = {}
    for path in sorted((run_dir / "metrics").glob("*-test.json")):
        result = json.loads(path.read_text())
        metrics[result["protocol"]] = result["markets"]
    return metrics


def export_run(
    run_dir: Path,
    store: ModelStore,
    *,
    version: str | None = None,
    variant: str | None = None,
    data_dir: Path | None = None,
    promote: bool = True,
    refitted: bool = True,
) -> Version:
    """Export every model of ``run_dir`` (``refitted``: ``load_run``'s) as one version."""
    run = load_run(run_dir, variant=variant, refitted=refitted)
    cfg = run.config
    variant = run.variant
    if version is None:
        version = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{cfg['name']}"
        version += f"-as-{variant}" if variant != run.trained_variant else ""
    check_version_name(version)
    vocabulary, catalogues = _run_catalogues(run_dir, cfg, data_dir)
    commands = run_dir / "commands.txt"
    command = commands.read_text().splitlines()[0] if commands.is_file() else "unknown"
    manifest = Manifest(
        version=version,
        variant=variant,
        model=cfg["model"] | ({} if variant == "hybrid" else {"variant": variant}),
        # The recipe's training settings, and the pre-training rate chosen on validation.
        train=cfg["train"] | {k: cfg[k] for k in CHOSEN_IN_TRAINING if k in cfg},
        markets={code: m for m, code in enumerate(cfg["markets"])},
        pretrained=run.pretrained,
        graphs=run.market_graphs,
        items="items.json",
        catalogues="catalogues.json",
        # The run measured the variant it trained; another variant's are unknown.
        metrics=_test_metrics(run_dir) if variant == run.trained_variant else {},
        files={},  # publish() hashes the files
        command=command,
        source_run=str(run_dir.resolve()),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        chosen=list(cfg.get("chosen", [])),
        refitted=run.refitted,
    )
    return publish_version(
        store,
        manifest=manifest,
        graphs=run.graphs,
        vocabulary=vocabulary,
        catalogues=catalogues,
        promote=promote,
    )


def publish_version(
    store: ModelStore,
    *,
    manifest: Manifest,
    graphs: Mapping[str, Bert4CMR | HybridRecommender],
    vocabulary: Vocabulary,
    catalogues: Mapping[str, Catalogue],
    promote: bool,
) -> Version:
    """Export ``graphs`` (file name -> model), check each against torch, and publish
    them with the vocabulary, the catalogues and, for the hybrid, its whole state
    (training/store_model.py), under ``manifest`` (its ``files`` are filled in)."""
    check_version_name(manifest.version)
    with store.staging() as folder:
        for name, model in graphs.items():
            path = folder / name
            path.parent.mkdir(exist_ok=True)
            export_graph(model, path)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            worst = parity(model, session, EXPORT_CHECK_SHAPES)
            if worst > PARITY_TOLERANCE:
                raise StoreError(f"{name}: onnxruntime differs from torch by {worst:.2e}")
            log.info("exported %s (max |onnx - torch| %.1e)", name, worst)
            if isinstance(model, HybridRecommender):
                save_state(model, folder / STATE_FILE)
        vocabulary.save(folder / manifest.items)
        save_catalogues(catalogues, folder / manifest.catalogues)
        return store.publish(folder, manifest, promote)
