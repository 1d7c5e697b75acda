"""The Grafana dashboard against a real Prometheus scraping the real service.

A ``cmr serve`` process and a ``prometheus`` server (the distribution's package)
scraping it every second under docker/prometheus/prometheus.yml's job; traffic that
moves every metric a panel shows; then every panel query of the dashboard, Grafana's
variables filled in, through Prometheus's HTTP API: each must succeed and return
series with values, name only metrics and labels the service exposes, and give each
series the labels its legend shows.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from benchmarks.processes import ManagedProcess, free_port, http_ready, running_service
from model_store.catalogue import load_catalogues
from model_store.store import ModelStore
from model_store.vocab import Vocabulary
from service.history import user_tag
from tests.conftest import REPO
from tests.service.conftest import clone_version

PROMETHEUS_YML = REPO / "docker/prometheus/prometheus.yml"
DASHBOARD = REPO / "docker/grafana/dashboards/cmr.json"
KEY = {"X-API-Key": "bench"}  # running_service's key
SCRAPE_S = 1
BROKEN_USER = "redis-fails-for-me"  # their history key holds a string: Redis says WRONGTYPE

# Grafana's variables: ${name}, ${name:format}, [[name]], [[name:format]], $name.
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*[\"'`]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
METRIC = re.compile(r"\bcmr_\w+")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Target:
    panel: str
    expr: str
    legend: str


def dashboard_targets(dashboard: dict[str, Any]) -> list[Target]:
    """Every query target of every panel, rows' nested panels included."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    legend = target.get("legendFormat", "")
                    found.append(Target(panel.get("title", "?"), target["expr"], legend))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


class Prometheus:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def get(self, path: str, **params: Any) -> Any:
        reply = self.http.get(path, params=params)
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        result: list[dict[str, Any]] = data["result"]
        return result

    def last_scrape(self) -> float:
        """When the last successful scrape of the service began (0 before any)."""
        # timestamp() of a selector is the sample's time; of anything else, the query's.
        up = self.query('timestamp(up{job="cmr-service"}) and up{job="cmr-service"} == 1')
        return float(up[0]["value"][1]) if up else 0.0

    def wait_for_scrape_after(self, moment: float, timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while self.last_scrape() <= moment:
            assert time.monotonic() < deadline, "Prometheus did not scrape the service"
            time.sleep(0.1)

    def label_names(self, metric: str) -> set[str]:
        """The label names of the metric's series; empty if it has none."""
        series = self.get("/api/v1/series", **{"match[]": metric, "start": time.time() - 600})
        return {name for labels in series for name in labels} - {"__name__"}


@contextmanager
def running_prometheus(target: str, folder: Path) -> Iterator[Prometheus]:
    """A prometheus server scraping ``target`` every second, with the job, metrics path
    and everything else of the deployment's prometheus.yml."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed; scripts/test.sh installs it"
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] |= {
        "scrape_interval": f"{SCRAPE_S}s",
        "scrape_timeout": f"{SCRAPE_S}s",
        "evaluation_interval": f"{SCRAPE_S}s",
    }
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'tsdb'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ]
    process = ManagedProcess(
        command, http_ready(f"{url}/-/ready"), name="prometheus", ready_s=20, stop_s=20
    )
    with process:
        prometheus = Prometheus(url)
        try:
            yield prometheus
        except BaseException:
            print(f"prometheus log:\n{process.log_text()[-3000:]}")
            raise
        finally:
            prometheus.http.close()


def grafana_values(dashboard: dict[str, Any], prometheus: Prometheus) -> dict[str, str]:
    """What Grafana puts in for its built-in variables, for this dashboard's time range
    and a 1 s scrape interval, and for the dashboard's own variables: every value
    (the "All" choice) for multi-value ones, the first value for the others."""
    found = re.fullmatch(r"now-(\d+)([smhdw])", dashboard.get("time", {}).get("from", "now-1h"))
    range_s = int(found[1]) * DURATION[found[2]] if found else 3600
    interval_s = SCRAPE_S  # range / panel width, never under the scrape interval
    values = {
        "__interval": f"{interval_s}s",
        "__interval_ms": str(interval_s * 1000),
        "__rate_interval": f"{max(interval_s + SCRAPE_S, 4 * SCRAPE_S)}s",
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
        "__range_ms": str(range_s * 1000),
    }
    for variable in dashboard.get("templating", {}).get("list", []):
        name, kind = variable["name"], variable.get("type", "query")
        query = variable.get("query", "")
        query = query.get("query", "") if isinstance(query, dict) else str(query)
        if kind == "datasource":
            values[name] = "prometheus"
            continue
        if kind == "query":
            label = re.fullmatch(r"\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*", query)
            assert label, f"dashboard variable {name}: query {query!r} not understood"
            params = {"match[]": label[1]} if label[1] else {}
            options = prometheus.get(f"/api/v1/label/{label[2]}/values", **params)
        elif kind in ("custom", "interval"):
            options = [o.strip() for o in query.split(",") if o.strip()]
        else:  # constant, textbox
            options = [query]
        assert options, f"dashboard variable {name} has no values"
        if variable.get("multi") or variable.get("includeAll"):
            every = "|".join(re.escape(o) for o in options)
            values[name] = variable.get("allValue") or f"({every})"
        else:
            values[name] = options[0]
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def value(found: re.Match[str]) -> str:
        name = found[1] or found[2] or found[3]
        assert name in values, f"{expr}: Grafana variable ${name} is not defined"
        return values[name]

    return VARIABLE.sub(value, expr)


def legend(template: str, labels: dict[str, str]) -> str:
    """The series' name as Grafana shows it."""
    return LEGEND.sub(lambda found: labels.get(found[1], "?"), template)


def labels_used(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    names = set(MATCHER.findall(expr))
    for group in GROUPING.findall(STRING.sub('""', expr)):
        names |= {n.strip() for n in group.split(",") if n.strip()}
    return names


def catalogues(store: ModelStore) -> dict[str, list[str]]:
    version = store.open()
    vocab = Vocabulary.load(version.file(version.manifest.items))
    found = load_catalogues(version.file(version.manifest.catalogues))
    return {m: [vocab.item(int(i)) for i in c.items] for m, c in found.items()}


def send_traffic(
    http: httpx.Client, markets: list[str], items: dict[str, list[str]], phase: int
) -> None:
    """One round of what the panels show: events (fresh, duplicate, unknown items) and
    recommendations in every market, client errors, Redis failures (5xx)."""

    def expect(reply: httpx.Response, status: int) -> None:
        assert reply.status_code == status, (reply.request.url, reply.status_code, reply.text)

    for market in markets:
        user, catalogue = f"user-{market}", items[market]
        events = [
            {"market": market, "user_id": user, "item_id": item, "event_id": f"{phase}-{i}"}
            for i, item in enumerate(catalogue[phase * 4 : phase * 4 + 4])
        ]
        events.append({"market": market, "user_id": user, "item_id": "never-sold-item"})
        expect(http.post("/events", json={"events": events}, headers=KEY), 200)
        expect(http.post("/events", json={"events": events[:2]}, headers=KEY), 200)  # dups
        for ask in (
            {"user_id": user},
            {"user_id": user, "candidates": catalogue[-10:], "k": 3},
            {"user_id": f"newcomer-{phase}"},  # no history: popularity
        ):
            expect(http.post(f"/markets/{market}/recommend", json=ask), 200)
    first, item = markets[0], items[markets[0]][0]
    expect(http.post("/markets/no-such-market/recommend", json={"user_id": "u"}), 404)
    expect(http.post(f"/markets/{first}/recommend", json={"k": 3}), 422)
    expect(http.get(f"/markets/{first}/recommend"), 405)
    one = {"events": [{"market": first, "user_id": "u", "item_id": item}]}
    expect(http.post("/events", json=one), 401)
    expect(http.post("/events", json={"events": [{"market": first}]}, headers=KEY), 422)
    unknown = {"events": [{"market": "no-such-market", "user_id": "u", "item_id": item}]}
    expect(http.post("/events", json=unknown), 401)
    expect(http.post("/events", json=unknown, headers=KEY), 422)
    broken = {"events": [{"market": first, "user_id": BROKEN_USER, "item_id": item}]}
    expect(http.post("/events", json=broken, headers=KEY), 503)
    expect(http.post(f"/markets/{first}/recommend", json={"user_id": BROKEN_USER}), 503)
    expect(http.get("/livez"), 200)
    expect(http.get("/readyz"), 200)


def test_every_dashboard_query_returns_data_from_prometheus_scraping_the_service(
    store: ModelStore, flushed_redis: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    dashboard = json.loads(DASHBOARD.read_text())
    targets = dashboard_targets(dashboard)
    assert len(targets) >= 10
    items = catalogues(store)
    # Redis answers WRONGTYPE for this user's history: a real failed call, cheaply.
    client = redis.Redis.from_url(flushed_redis)
    for market in items:
        client.set(f"{user_tag(market, BROKEN_USER)}:h", "not a list")
    client.close()

    def reload_to_a_new_version() -> None:
        clone_version(store, "tiny-1", "tiny-2")
        store.promote("tiny-2")
        reply = http.post("/admin/reload", headers=KEY)
        assert reply.status_code == 200 and reply.json()["serving"] == "tiny-2", reply.text

    def reload_refused() -> None:  # files that hash right, a graph that does not load
        broken = clone_version(store, "tiny-1", "tiny-3")
        broken.file(broken.manifest.graphs[next(iter(items))]).write_bytes(b"not onnx")
        clone_version(store, "tiny-3", "tiny-4")  # re-hashed: passes verification
        store.promote("tiny-4")
        reply = http.post("/admin/reload", headers=KEY)
        assert reply.status_code == 409 and "refused" in reply.json()["error"], reply.text

    env = {"CMR_SCORING_WORKERS": "1", "CMR_MAX_WAIT_MS": "2"}
    with (
        running_service(store.root, flushed_redis, free_port(), threads=1, env=env) as service,
        running_prometheus(service.url.removeprefix("http://"), tmp_path) as prometheus,
        httpx.Client(base_url=service.url, timeout=30) as http,
    ):
        started = time.monotonic()
        prometheus.wait_for_scrape_after(0)
        # Two rounds, each scraped after it: every counter moves between two samples,
        # so rates and quantiles have something to show.
        markets = [m["market"] for m in http.get("/markets").json()["markets"]]
        assert len(markets) >= 2 and set(markets) <= set(items), markets
        for phase, reload in enumerate([reload_to_a_new_version, reload_refused]):
            send_traffic(http, markets, items, phase)
            reload()
            prometheus.wait_for_scrape_after(time.time())
        print(f"\nservice ready in {started - began:.1f} s; traffic and scrapes "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip

        values = grafana_values(dashboard, prometheus)
        exposed: dict[str, set[str]] = {}
        problems = []
        for target in targets:
            expr = substitute(target.expr, values)
            result = prometheus.query(expr)
            finite = [s for s in result if math.isfinite(float(s["value"][1]))]
            shown = sorted({legend(target.legend, s["metric"]) for s in result})
            print(f"{len(result):2d} series ({len(finite)} finite)  {expr}  -> {shown}")
            metrics = METRIC.findall(expr)
            for metric in metrics:
                if metric not in exposed:
                    exposed[metric] = prometheus.label_names(metric)
            if missing := [m for m in metrics if not exposed[m]]:
                problems.append(f"{target.panel}: {missing} not exposed")
            elif unknown := labels_used(expr) - set().union(*(exposed[m] for m in metrics)):
                problems.append(f"{target.panel}: {expr}: labels {sorted(unknown)} not exposed")
            if not result:
                problems.append(f"{target.panel}: {expr}: no series")
            elif not finite:
                problems.append(f"{target.panel}: {expr}: no series with a value (all NaN)")
            for label in LEGEND.findall(target.legend):
                if any(label not in s["metric"] for s in result):
                    problems.append(f"{target.panel}: legend {{{{{label}}}}} not in {expr}")
        assert not problems, "\n".join(problems)

        # The traffic reached what the panels split by.
        ranked = 'cmr_requests_total{route="/markets/{market}/recommend", status="200"}'
        assert {s["metric"]["market"] for s in prometheus.query(ranked)} == set(markets)
        errors = prometheus.query('sum by (status) (cmr_requests_total{status=~"[45].."})')
        assert {s["metric"]["status"] for s in errors} == {"401", "404", "405", "409", "422", "503"}
        increase = "sum by (result) (increase(cmr_model_reloads_total[1h]))"
        counted = {s["metric"]["result"]: float(s["value"][1]) for s in prometheus.query(increase)}
        assert counted.keys() == {"loaded", "refused"} and min(counted.values()) > 0, counted
        assert prometheus.query("cmr_redis_errors_total")[0]["value"][1] == "4"
    print(f"test body {time.monotonic() - began:.1f} s")
