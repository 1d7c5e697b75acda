"""The ``cmr`` command: data, baselines, Bert4CMR training and evaluation, export, serving.

Heavy imports (numpy, scipy, torch) sit inside the commands, so ``cmr --help`` is quick.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import typer

app = typer.Typer(
    help="Cross-market recommendation: data, baselines, Bert4CMR training, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect, fetch or generate interaction data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
store_app = typer.Typer(help="List, inspect, promote and roll back model versions.")
app.add_typer(store_app, name="store", no_args_is_help=True)
bench_app = typer.Typer(help="Speed measurements.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


# Choices of repeatable options; tests check them against BASELINES and PROTOCOLS.
class Model(StrEnum):
    popularity = "popularity"
    global_popularity = "global-popularity"
    ease = "ease"
    ease_per_market = "ease-per-market"


class ProtocolName(StrEnum):
    paper = "paper"
    market = "market"
    full = "full"


class Variant(StrEnum):
    paper = "paper"
    history_once = "history-once"


class ProviderName(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


StoreDir = Annotated[Path, typer.Option("--store", help="Model store folder.", show_default=False)]
DataDir = Annotated[
    Path, typer.Option("--data", help="Folder of per-market interaction files.", show_default=False)
]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input ends the command with one clear line and exit code 2, no traceback."""
    from model_store.manifest import StoreError
    from training.data import DataFormatError
    from training.download import DownloadError

    try:
        yield
    except (
        DataFormatError,
        DownloadError,
        StoreError,
        FileNotFoundError,
        ValueError,
        KeyError,
    ) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from exc


@data_app.command("stats")
def data_stats(
    data: DataDir,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the stats here.")
    ] = None,
) -> None:
    """Rows, users, items and mean history per market, counted on the raw files."""
    from training.data import log_stats, read_logs
    from training.report import grid_table

    with user_errors():
        stats = log_stats(read_logs(data))
    header = ["market", "rows", "users", "items", "unique pairs", "mean history"]
    rows = [
        [
            s.market,
            f"{s.rows:,}",
            f"{s.users:,}",
            f"{s.items:,}",
            f"{s.unique_pairs:,}",
            f"{s.mean_history:.2f}",
        ]
        for s in stats
    ]
    print(grid_table(header, rows))
    if json_path:
        json_path.write_text(json.dumps([s.as_dict() for s in stats], indent=2) + "\n")


@data_app.command("download")
def data_download(
    dest: Annotated[Path, typer.Option(help="Folder to fill.")] = Path("data/xmarket-electronics"),
    base_url: Annotated[
        str | None,
        typer.Option(
            help="Where the files live: an http(s):// or file:// folder. [default: FOREC]"
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait per file.")] = 60.0,
) -> None:
    """Fetch the seven XMarket Electronics files, SHA-256 verified; good files are kept."""
    from training.download import XMARKET_URL, download_xmarket

    def report(name: str, status: str) -> None:
        print(f"{name}: {status}")

    with user_errors():
        download_xmarket(dest, base_url or XMARKET_URL, timeout=timeout, report=report)


@data_app.command("synth")
def data_synth(
    dest: Annotated[Path, typer.Option(help="Folder to write <market>_5core.txt files into.")],
    markets: Annotated[str, typer.Option(help="Comma-separated market codes.")] = "aa,bb,cc",
    users: Annotated[str, typer.Option(help="Comma-separated users per market.")] = "400,200,80",
    items: Annotated[int, typer.Option(min=2, help="Catalogue size.")] = 300,
    topics: Annotated[int, typer.Option(min=1, help="Shared item topics.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Synthetic multi-market data with planted market tastes and shared item topics."""
    from training.synth import SynthConfig, write_synth

    with user_errors():
        cfg = SynthConfig(
            markets=tuple(m.strip() for m in markets.split(",")),
            users=tuple(int(u) for u in users.split(",")),
            items=items,
            topics=topics,
            seed=seed,
        )
        for path in write_synth(dest, cfg):
            print(path)


@app.command("evaluate")
def evaluate_command(
    data: DataDir,
    model: Annotated[
        list[Model] | None,
        typer.Option(help="Model to evaluate; repeat for several. [default: popularity]"),
    ] = None,
    protocol: Annotated[
        list[ProtocolName] | None,
        typer.Option(
            help="paper: 99 negatives from all items; market: from the market's items; "
            "full: the whole market catalogue. Repeat for several. [default: market]"
        ),
    ] = None,
    split: Annotated[
        Literal["test", "valid"], typer.Option(help="Held-out item to rank.")
    ] = "test",
    split_scheme: Annotated[
        Literal["random", "temporal"],
        typer.Option(help="Leave-one-out: random (the paper's) or temporal."),
    ] = "random",
    seed: Annotated[int, typer.Option(help="Seed of the split and the negatives.")] = 0,
    lambdas: Annotated[
        str | None,
        typer.Option(
            help="EASE^R lambdas to choose from on validation, comma-separated. "
            "[default: 2,5,10,25,...,3200]"
        ),
    ] = None,
    duplicates: Annotated[
        Literal["first", "last"],
        typer.Option(help="Which row of a repeated (user, item) pair to keep."),
    ] = "first",
    k_core: Annotated[
        int | None, typer.Option(min=1, help="Drop users and items with fewer rows, per market.")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write results: an object, or a list if several.")
    ] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the tables as markdown.")] = None,
) -> None:
    """Rank each user's held-out item among candidates; print per-market metrics.

    EASE^R's lambda is chosen on the validation split, per protocol.
    """
    from training.baselines import LAMBDA_GRID, evaluate_baselines
    from training.data import load_interactions
    from training.report import report, write_json
    from training.split import make_split

    with user_errors():
        grid = tuple(float(x) for x in lambdas.split(",")) if lambdas else LAMBDA_GRID
        interactions = load_interactions(data, duplicates=duplicates, k_core=k_core)
        data_split = make_split(interactions, split_scheme, seed)
        results = evaluate_baselines(
            data_split,
            [m.value for m in model or [Model.popularity]],
            [p.value for p in protocol or [ProtocolName.market]],
            split_name=split,
            seed=seed,
            grid=grid,
        )
    print(report(results))
    if json_path:
        write_json(results, json_path)
    if markdown:
        markdown.write_text(report(results, markdown=True))


@app.command("train")
def train_command(
    data: DataDir,
    out: Annotated[Path, typer.Option(help="Run folder; an interrupted run there resumes.")],
    config: Annotated[
        Path | None,
        typer.Option(
            help='Recipe file: {"family": "hybrid" | "bert4cmr", "model": {...}, "train": '
            "{...}}. [default: the hybrid's defaults, the served recipe]"
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override one setting, e.g. --set d_model=64 --set train.lr=5e-4. Repeatable.",
        ),
    ] = None,
) -> None:
    """Train on every market, adapt to each market, evaluate on validation and test.

    The default recipe is the hybrid (EASE^R's closed form plus a learned market-aware
    correction); `--config configs/bert4cmr.json` trains the paper's Bert4CMR. Writes
    checkpoints, metrics per protocol, curves.png and train.log into OUT.
    """
    from training.recipe import parse_recipe, train_run
    from training.report import report

    with user_errors():
        recipe = parse_recipe(config, set_ or [])
        args = ["cmr", "train", "--data", str(data), "--out", str(out)]
        args += ["--config", str(config)] if config else []
        args += [a for setting in set_ or [] for a in ("--set", setting)]
        results = train_run(data, out, recipe, shlex.join(args))
    print(report([r for r in results if r.split == "test"]))


@app.command("compare")
def compare_command(
    files: Annotated[list[Path], typer.Argument(help="Result JSON files (cmr evaluate/train).")],
    split: Annotated[
        Literal["test", "valid"], typer.Option(help="Which split's results.")
    ] = "test",
    markdown: Annotated[Path | None, typer.Option(help="Also write the tables here.")] = None,
) -> None:
    """Tables of mean ± std over seeds, model beside model, per protocol and metric."""
    from training.report import compare, load_results

    with user_errors():
        tables = compare(load_results(files), split=split)
    print(tables)
    if markdown:
        markdown.write_text(tables)


@app.command("export")
def export_command(
    run: Annotated[Path, typer.Option(help="A finished `cmr train` run folder.")],
    store: StoreDir,
    version: Annotated[
        str | None, typer.Option(help="Version name (default: UTC time and the run's model name).")
    ] = None,
    variant: Annotated[
        Variant | None,
        typer.Option(help="Attention pattern of the graphs (default: the one trained)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="The run's data, for catalogues (default: as recorded).")
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="Make the new version current once published.")
    ] = True,
) -> None:
    """Export a run's pre-trained and fine-tuned models as ONNX scoring graphs and
    publish them, with vocabulary, catalogues and metrics, as one store version."""
    from model_store.store import ModelStore
    from training.export import export_run

    with user_errors():
        published = export_run(
            run, ModelStore(store), version, variant.value if variant else None, data, promote
        )
    state = "current" if promote else "not current; `cmr store promote` serves it"
    print(f"published {published.name} ({published.manifest.variant}) in {store}, {state}")


@store_app.command("list")
def store_list(store: StoreDir) -> None:
    """Versions, oldest first; * marks the current one. Each with its variant, creation
    time and the markets with parameters of their own (the rest use the shared ones)."""
    from model_store.store import ModelStore

    with user_errors():
        opened = ModelStore(store)
        current = opened.current()
        for name in opened.versions():
            manifest = opened.open(name, verify=False).manifest
            mark = "*" if name == current else " "
            own = ",".join(manifest.own_parameters) or "none"
            line = f"{mark} {name}  {manifest.variant}  {manifest.created_at}"
            print(f"{line}  own parameters: {own}")


@store_app.command("show")
def store_show(
    store: StoreDir,
    version: Annotated[str | None, typer.Argument(help="Default: the current one.")] = None,
) -> None:
    """A version's manifest, after verifying every file's hash."""
    from model_store.store import ModelStore

    with user_errors():
        print(ModelStore(store).open(version).manifest.to_json(), end="")


@store_app.command("promote")
def store_promote(store: StoreDir, version: Annotated[str, typer.Argument()]) -> None:
    """Verify VERSION and make it current (services pick it up on their next reload)."""
    from model_store.store import ModelStore

    with user_errors():
        ModelStore(store).promote(version)
    print(f"current: {version}")


@store_app.command("rollback")
def store_rollback(store: StoreDir) -> None:
    """Make the previously current version current again."""
    from model_store.store import ModelStore

    with user_errors():
        restored = ModelStore(store).rollback()
    print(f"current: {restored.name}")


@bench_app.command("scoring")
def bench_scoring_command(
    store: StoreDir,
    version: Annotated[
        list[str] | None, typer.Option(help="Versions to time (default: all). Repeatable.")
    ] = None,
    threads: Annotated[
        int, typer.Option(help="onnxruntime intra-op threads; 0 = one per core.")
    ] = 0,
    provider: Annotated[ProviderName, typer.Option(help="Execution provider.")] = ProviderName.auto,
    min_seconds: Annotated[float, typer.Option(help="Time each case at least this long.")] = 1.0,
) -> None:
    """Candidates/s of each version's graph at history 10 and 50 and 100, 1,000 and the
    largest catalogue's candidates; history-once / paper ratios when both are there."""
    from model_store.store import ModelStore
    from service.scoring_bench import bench_scoring, timing_table

    with user_errors():
        timings = bench_scoring(
            ModelStore(store), version or (), provider.value, threads, min_seconds
        )
    print(timing_table(timings), end="")


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    access_log: Annotated[bool, typer.Option(help="A log line per request.")] = False,
) -> None:
    """Run the recommendation service (settings from CMR_* environment variables:
    CMR_STORE, CMR_REDIS_URL, CMR_API_KEY, CMR_DEVELOPMENT, CMR_PROVIDER, ...)."""
    import uvicorn
    from pydantic import ValidationError

    from service.app import create_app
    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as e:
        typer.secho(f"error: bad settings: {e}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from e
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=access_log)


@bench_app.command("serve")
def bench_serve_command(
    store: StoreDir,
    redis_url: Annotated[str, typer.Option(help="A Redis the bench may write users into.")] = (
        "redis://localhost:6379/0"
    ),
    clients: Annotated[int, typer.Option(help="Concurrent clients.")] = 32,
    candidates: Annotated[int, typer.Option(help="Candidates per request.")] = 200,
    seconds: Annotated[float, typer.Option(help="Duration of each run.")] = 10.0,
    threads: Annotated[
        int,
        typer.Option(help="onnxruntime threads per call; 0 = the service's default split."),
    ] = 0,
    provider: Annotated[ProviderName, typer.Option(help="Execution provider.")] = ProviderName.auto,
    port: Annotated[int, typer.Option(help="Port for the service processes.")] = 8765,
    rounds: Annotated[int, typer.Option(min=1, help="Repeat on / off / ceiling; medians.")] = 3,
) -> None:
    """Throughput and p50/p95/p99 latency of the service (store's current version) under
    concurrent clients, batching on and off, beside the graph called directly."""
    from service.serve_bench import bench_serve, measurement_table

    with user_errors():
        results = bench_serve(
            store, redis_url, clients, candidates, seconds=seconds, threads=threads,
            provider=provider.value, port=port, rounds=rounds,
        )  # fmt: skip
    print(measurement_table(results), end="")


if __name__ == "__main__":
    app()
