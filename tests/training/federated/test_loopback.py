"""The federation as real processes on loopback (a SuperLink, one SuperNode per market,
``flwr run``): it writes the run the in-process simulation writes, with the same
metrics and weights, each SuperNode given its own market's file alone, the run
publishes, and no process is left running. Every process imports torch: the data and
model are tiny."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model_store.store import ModelStore
from training.config import HybridTrainConfig
from training.evaluate import Result
from training.export import export_run
from training.federated.config import FederatedConfig, from_json, to_json
from training.federated.errors import FederationError
from training.federated.loopback import (
    PROCESSES_FILE,
    Node,
    Process,
    federate_loopback,
    port_free,
    run_loopback,
)
from training.federated.run import federate
from training.market_files import find_market_files
from training.synth import SynthConfig, write_synth

# Two markets: each message starts a process per market, which imports torch.
SYNTH = SynthConfig(markets=("aa", "bb"), users=(30, 30), items=80, topics=4)
TRAIN = HybridTrainConfig(
    batch_size=64, lr=0.02, folds=2, adapt_max_epochs=1, valid_protocols=("market",),
    eval_protocols=("market",), eval_splits=("test",), threads=1, device="cpu",
)  # fmt: skip
MODEL = {"d_model": 8}
FED = FederatedConfig(rounds=2, local_epochs=1, walk_dim=8, walk_epochs=1, train=TRAIN)
PORTS = 3 + len(SYNTH.markets)
# Every message starts a process that imports torch: on a loaded 2-core machine the run
# can outlast pytest's default limit for a test and its fixtures.
pytestmark = pytest.mark.timeout(600)


def free_base_port() -> int:
    """A port whose next ``PORTS - 1`` ports are free too (the OS picks the first)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + PORTS < 65536 and all(port_free(p) for p in range(base, base + PORTS)):
            return base
    raise RuntimeError("no run of free ports found")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("markets")
    write_synth(folder, SYNTH)
    return folder


@pytest.fixture(scope="module")
def loopback_results(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, list[Result]]:
    root = tmp_path_factory.mktemp("loopback")
    results = federate_loopback(
        data_dir, root / "run", work=root / "work", model_settings=MODEL, cfg=FED,
        base_port=free_base_port(), command="test", timeout=540,
    )  # fmt: skip
    return root / "run", root / "work", results


@pytest.fixture(scope="module")
def loopback(loopback_results: tuple[Path, Path, list[Result]]) -> tuple[Path, Path]:
    """-> (the run folder, the work folder)."""
    return loopback_results[:2]


@pytest.fixture(scope="module")
def simulated_results(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[Result]]:
    run = tmp_path_factory.mktemp("simulation") / "run"
    return run, federate(data_dir, run, model_settings=MODEL, cfg=FED, command="test")


@pytest.fixture(scope="module")
def simulated(simulated_results: tuple[Path, list[Result]]) -> Path:
    return simulated_results[0]


def test_the_loopback_run_is_the_simulation(
    loopback_results: tuple[Path, Path, list[Result]],
    simulated_results: tuple[Path, list[Result]],
) -> None:
    run, _, results = loopback_results
    simulated, sim_results = simulated_results
    assert [(r.model, r.protocol, r.split) for r in results] == [
        (r.model, r.protocol, r.split) for r in sim_results
    ]
    for got_result, want_result in zip(results, sim_results, strict=True):
        for code, metrics in want_result.markets.items():
            assert got_result.markets[code] == pytest.approx(metrics, abs=1e-6)
    for name in ("metrics/market-test.json", "metrics/no-adapt/market-test.json"):
        got, want = (json.loads((r / name).read_text()) for r in (run, simulated))
        assert got["markets"].keys() == want["markets"].keys() == set(SYNTH.markets)
        for code, metrics in want["markets"].items():
            assert got["markets"][code] == pytest.approx(metrics, abs=1e-6), (name, code)
    for name in ("pretrained/best.safetensors", *(f"markets/{c}/best.safetensors" for c in
                                                  SYNTH.markets)):  # fmt: skip
        got, want = (load_file(r / name) for r in (run, simulated))
        assert got.keys() == want.keys()
        # Bit for bit: the same seeded work, replies averaged in the same (market) order.
        assert all(torch.equal(got[k], want[k]) for k in want), name
    for name in ("catalogues.json", "items.json", "federation.json"):
        assert (run / name).read_text() == (simulated / name).read_text(), name
    config, sim_config = (json.loads((r / "config.json").read_text()) for r in (run, simulated))
    assert config["data"] is None  # the server never had a data folder
    assert {**config, "data": None} == {**sim_config, "data": None}
    # The same messages, each with the same arrays (the simulation lists them as sent).
    sent = [
        sorted(json.dumps([t["stage"], t["round"], t["config"], t["arrays"]]) for t in transfers)
        for r in (run, simulated)
        for transfers in [json.loads((r / "traffic.json").read_text())["transfers"]]
    ]
    assert sent[0] == sent[1]


def test_each_supernode_was_given_its_own_market_file_alone(
    loopback: tuple[Path, Path], data_dir: Path
) -> None:
    _, work = loopback
    processes = json.loads((work / "logs" / PROCESSES_FILE).read_text())
    sources = find_market_files(data_dir)
    for code, source in sources.items():
        argv = processes[f"supernode-{code}"]["argv"]
        pairs = shlex.split(argv[argv.index("--node-config") + 1])
        config = dict(pair.split("=", 1) for pair in pairs)
        folder = (work / "markets" / code).resolve()
        assert config == {"market": code, "data": str(folder / source.name),
                          "shared": str(folder / "shared.json")}  # fmt: skip
        assert sorted(p.name for p in folder.iterdir()) == sorted([source.name, "shared.json"])
        assert (folder / source.name).read_bytes() == source.read_bytes()
        assert not any(str(other) in " ".join(argv) for other in sources.values())
    # The shared file holds codes, items and counts: no user of any market.
    shared = (work / "server" / "shared.json").read_text()
    users = {line.split()[0] for p in sources.values() for line in p.read_text().splitlines()[1:]}
    assert not any(f'"{u}"' in shared for u in users)


def test_every_process_started_is_stopped(loopback: tuple[Path, Path]) -> None:
    _, work = loopback
    processes = json.loads((work / "logs" / PROCESSES_FILE).read_text())
    assert set(processes) == {"superlink", "flwr-run", *(f"supernode-{c}" for c in SYNTH.markets)}
    for process in processes.values():
        with pytest.raises(ProcessLookupError):  # neither it nor anything in its group
            os.killpg(process["pid"], 0)


def test_the_loopback_run_publishes(
    loopback: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    run, _ = loopback
    store = ModelStore(tmp_path_factory.mktemp("store"))
    version = export_run(run, store, version="loopback-v1")  # no data folder: its catalogues
    assert store.current() == "loopback-v1"
    assert version.manifest.graphs == dict.fromkeys(SYNTH.markets, "model.onnx")


def test_a_port_in_use_or_a_missing_command_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(market="aa", folder=tmp_path, data=tmp_path / "aa.txt", shared=tmp_path / "s")
    base = free_base_port()
    kwargs = {"server_shared": tmp_path / "s", "run_dir": tmp_path / "run", "work": tmp_path,
              "cfg": FED, "model_settings": MODEL}  # fmt: skip
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))
        with pytest.raises(FederationError, match=f"port {base + 1} .* in use"):
            run_loopback([node], base_port=base, **kwargs)
    monkeypatch.setattr("training.federated.loopback.COMMANDS", ("flower-nowhere",))
    with pytest.raises(FederationError, match="flower-nowhere not on PATH"):
        run_loopback([node], base_port=base, **kwargs)
    assert not (tmp_path / "logs").exists()


def test_a_process_that_dies_is_named_with_its_last_line(tmp_path: Path) -> None:
    log_path = tmp_path / "dies.log"
    with log_path.open("wb") as log_file:
        argv = [sys.executable, "-c", "import sys; print('bad flag'); sys.exit(3)"]
        popen = subprocess.Popen(argv, stdout=log_file, start_new_session=True)
        popen.wait(30)
        process = Process(name="dies", popen=popen, log_path=log_path, log_file=log_file)
        with pytest.raises(FederationError, match="dies exited with code 3: bad flag"):
            process.check_alive()


def test_the_federation_settings_travel_as_json() -> None:
    assert from_json(to_json(FED)) == FED
    assert from_json("{}") == FederatedConfig()
