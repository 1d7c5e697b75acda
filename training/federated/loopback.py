"""The federation as real processes on this machine: a SuperLink, one SuperNode per
market and ``flwr run`` (Flower's deployment engine) on 127.0.0.1, running the App in
training/federated/app/ (training/federated/deployment.py).

``prepare`` plays the one who sets a federation up: it gives each market a folder of
its own holding its own interaction file and the shared file (training/federated/
shared.py), and the server a copy of the shared file. ``run_loopback`` starts the
processes, each SuperNode pointed at its market's folder alone, waits for the run,
checks the run folder and stops every process it started, whatever happens: each is
started in a session of its own, and its process group (the SuperExec and app
processes it starts) is ended with it. Ports: ``base``, ``base + 1`` and ``base + 2``
for the SuperLink (ServerAppIo, Fleet, Control), ``base + 3 + i`` for market i's
SuperNode (ClientAppIo).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from training.data import load_interactions
from training.evaluate import Result
from training.federated.config import FederatedConfig, to_json
from training.federated.errors import FederationError
from training.federated.shared import SharedInfo
from training.market_files import find_market_files
from training.report import load_results

log = logging.getLogger(__name__)

APP = Path(__file__).parent / "app"
COMMANDS = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr")
HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 19100
POLL_SECONDS = 0.2
START_TIMEOUT = 60.0  # seconds for the SuperLink to open its port
STOP_TIMEOUT = 10.0
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception)\b.*: ")
PROCESSES_FILE = "processes.json"  # in the logs folder: each process's pid and command


@dataclass(frozen=True, kw_only=True)
class Node:
    market: str
    folder: Path  # all its client reads: its own file and the shared file
    data: Path
    shared: Path

    def node_config(self) -> str:
        """``--node-config``: Flower reads it as TOML key=value pairs."""
        pairs = {"market": self.market, "data": str(self.data), "shared": str(self.shared)}
        return " ".join(f"{k}={json.dumps(v)}" for k, v in pairs.items())


def prepare(data_dir: Path, work: Path) -> tuple[list[Node], Path]:
    """Each market's own folder under ``work/markets/``, and the server's shared file;
    -> the nodes (markets in index order) and the server's shared file."""
    work = work.resolve()  # the processes get these paths
    shared = SharedInfo.from_data(load_interactions(data_dir))
    files = find_market_files(data_dir)
    nodes = []
    for code in shared.markets:
        folder = work / "markets" / code
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / files[code].name
        shutil.copyfile(files[code], data)
        shared.save(folder / "shared.json")
        nodes.append(Node(market=code, folder=folder, data=data, shared=folder / "shared.json"))
    (work / "server").mkdir(parents=True, exist_ok=True)
    server_shared = work / "server" / "shared.json"
    shared.save(server_shared)
    return nodes, server_shared


def federate_loopback(
    data_dir: Path,
    run_dir: Path,
    *,
    work: Path,
    model_settings: dict[str, Any],
    cfg: FederatedConfig,
    base_port: int = DEFAULT_BASE_PORT,
    item_text: Path | None = None,
    command: str = "",
    timeout: float = 24 * 3600.0,
) -> list[Result]:
    """``cmr federate --deploy loopback``: ``prepare`` in ``work``, ``run_loopback``;
    -> the clients' results, as the run folder holds them."""
    nodes, server_shared = prepare(data_dir, work)
    run_loopback(
        nodes, server_shared=server_shared, run_dir=run_dir, work=work, cfg=cfg,
        model_settings=model_settings, base_port=base_port, item_text=item_text,
        command=command, timeout=timeout,
    )  # fmt: skip
    metrics = run_dir / "metrics"
    paths = sorted(metrics.glob("*.json")) + sorted((metrics / "no-adapt").glob("*.json"))
    return [
        Result(model=r["model"], protocol=r["protocol"], split=r["split"], seed=r["seed"],
               markets=r["markets"])
        for r in load_results(paths)
    ]  # fmt: skip


def run_loopback(
    nodes: Sequence[Node],
    *,
    server_shared: Path,
    run_dir: Path,
    work: Path,
    cfg: FederatedConfig,
    model_settings: dict[str, Any],
    base_port: int = DEFAULT_BASE_PORT,
    item_text: Path | None = None,
    command: str = "",
    timeout: float = 24 * 3600.0,
) -> None:
    """Run the federation over ``nodes`` into ``run_dir``; process logs go to
    ``work/logs/``. Raises ``FederationError`` when a command is missing, a port is
    taken, a process dies or the run ends without a run folder."""
    if cfg.strategy == "alone":
        raise FederationError("strategy alone trains no shared model: run it in simulation")
    work = work.resolve()  # Flower's home for every process, whatever its folder
    ports = range(base_port, base_port + 3 + len(nodes))
    for port in ports:
        if not port_free(port):
            raise FederationError(f"port {port} on {HOST} is in use: choose another base port")
    link, fleet, control = (f"{HOST}:{p}" for p in ports[:3])
    env = _environment(work, control)
    missing = [c for c in COMMANDS if shutil.which(c, path=env["PATH"]) is None]
    if missing:
        raise FederationError(
            f"{', '.join(missing)} not on PATH nor beside {sys.executable}: install "
            "'.[federated]' (the SuperLink and SuperNodes start flower-superexec from PATH)"
        )
    (work / "logs").mkdir(parents=True, exist_ok=True)
    settings = {
        "federation": to_json(cfg),
        "model": json.dumps(model_settings),
        "shared": str(server_shared.resolve()),
        "run-dir": str(run_dir.resolve()),
        "command": command,
        "item-text": str(item_text.resolve()) if item_text else "",
    }
    run_config = work / "run-config.toml"
    run_config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    began, began_at = time.monotonic(), time.time()
    with _processes(work / "logs", env) as start:
        # No runtime dependency installation: the ServerApp runs in this environment.
        superlink = start(
            "superlink",
            ["flower-superlink", "--insecure", "--serverappio-api-address", link,
             "--fleet-api-address", fleet, "--control-api-address", control,
             "--disable-runtime-dependency-installation"],
        )  # fmt: skip
        _wait_for_port(ports[2], superlink)
        log.info("SuperLink up on %s (fleet %s, control %s)", link, fleet, control)
        # The SuperNodes and the run start together: the ServerApp waits for every
        # market's SuperNode (deployment.py), and a SuperNode that dies is caught below.
        supernodes = []
        for node, port in zip(nodes, ports[3:], strict=True):
            argv = ["flower-supernode", "--insecure", "--superlink", fleet,
                    "--clientappio-api-address", f"{HOST}:{port}",
                    "--node-config", node.node_config()]  # fmt: skip
            supernodes.append(start(f"supernode-{node.market}", argv))
        log.info("%d SuperNodes started: %s", len(nodes), ", ".join(n.market for n in nodes))
        flwr = start(
            "flwr-run",
            ["flwr", "run", str(APP), "loopback", "--run-config", str(run_config), "--stream"],
        )
        log.info("run submitted; the ServerApp's log streams to %s", flwr.log_path)
        deadline = time.monotonic() + timeout
        while flwr.popen.poll() is None:
            for process in [superlink, *supernodes]:
                process.check_alive()
            if time.monotonic() > deadline:
                raise FederationError(f"the run did not finish in {timeout:.0f} s")
            time.sleep(POLL_SECONDS)
        if flwr.popen.returncode != 0:
            raise FederationError(f"flwr run failed: {flwr.last_line()}")
    summary = run_dir / "summary.json"
    if not summary.is_file() or summary.stat().st_mtime < began_at:
        raise FederationError(
            f"the run ended without writing {run_dir}; the end of the ServerApp's log "
            f"({flwr.log_path}): {flwr.last_line()}"
        )
    log.info("run folder %s written in %.0f s", run_dir, time.monotonic() - began)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _environment(work: Path, control: str) -> dict[str, str]:
    """Flower's home in ``work`` (installed Apps, and the SuperLink connection
    ``loopback`` that ``flwr run`` reads), this Python's bin folder first on PATH (the
    SuperLink and SuperNodes start flower-superexec from PATH) and this checkout's
    packages first on the Python path, so every process runs this code."""
    home = work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
        f'address = "{control}"\ninsecure = true\n'
    )
    env = dict(os.environ, FLWR_HOME=str(home))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass(kw_only=True)
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def last_line(self) -> str:
        """Its log's last exception line (``FooError: ...``), else its last line."""
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
        return (errors or lines or ["(no output)"])[-1]

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise FederationError(
                f"{self.name} exited with code {code}: {self.last_line()} (log: {self.log_path})"
            )

    def stop(self) -> None:
        """SIGTERM to its process group (it and what it started), SIGKILL if need be."""
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:  # the group is gone
                break
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; what it started may linger in its group for a moment.
            deadline = time.monotonic() + wait
            while _group_alive(self.popen.pid) and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
            if not _group_alive(self.popen.pid):
                break
        self.log_file.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def _processes(logs: Path, env: dict[str, str]) -> Iterator[Any]:
    """``start(name, argv)`` -> a ``Process`` logging to ``logs/<name>.log``; on the way
    out, every process started is stopped, the last started first."""
    started: list[Process] = []

    def start(name: str, argv: list[str]) -> Process:
        log_path = logs / f"{name}.log"
        log_file = log_path.open("wb")
        popen = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        process = Process(name=name, popen=popen, log_path=log_path, log_file=log_file)
        started.append(process)
        record = {p.name: {"pid": p.popen.pid, "argv": p.popen.args} for p in started}
        (logs / PROCESSES_FILE).write_text(json.dumps(record, indent=1) + "\n")
        return process

    try:
        yield start
    finally:
        for process in reversed(started):
            process.stop()
        log.info("stopped %d processes", len(started))


def _wait_for_port(port: int, process: Process) -> None:
    """Until ``process`` accepts connections on ``port``; it must not exit meanwhile."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        process.check_alive()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise FederationError(f"{process.name} did not open port {port} in {START_TIMEOUT} s")
        time.sleep(POLL_SECONDS)
