"""A real Prometheus on loopback, and the checks of every dashboard and alert query against it.

Used by tests/integration/test_prometheus.py (the collector served over a computed site) and meant
for any test that has a metrics endpoint to check, e.g. a running operator's `--metrics-port`:

    from prometheus.harness import PrometheusServer, dashboard_problems, alert_problems

    with PrometheusServer(tmp_path, {"stargate-operator": ["127.0.0.1:8080"]}) as prom:
        prom.wait_for_scrapes("stargate-operator", 5)
        assert not dashboard_problems(prom)
        assert not alert_problems(prom, expect_firing={...})

The server is Debian's `prometheus` (hack/install-prometheus.sh); when it is missing the harness
fails and says so, it never skips.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "stargate-operator"
DASHBOARDS = CHART / "dashboards"
ALERTS = CHART / "files" / "stargate-alerts.yaml"
INSTALL_HINT = "install it with hack/install-prometheus.sh (Debian's prometheus package: server and promtool)"

# Grafana's built-in variables, as they resolve for a short time range on a 1 s scrape interval.
BUILTINS = {"$__rate_interval": "1m", "$__interval": "1s", "$__range_s": "60", "$__range": "1m"}


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"`{name}` is not on PATH: {INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """Prometheus on 127.0.0.1 with a temporary storage folder, scraping `targets` every second and
    evaluating `rule_files` every second. A context manager; `stop()` leaves no process behind."""

    def __init__(
        self,
        workdir: Path,
        targets: Mapping[str, Iterable[str]],
        rule_files: Iterable[Path] = (ALERTS,),
        interval: str = "1s",
        scrape_configs: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """`targets`: job -> addresses, each scraped on /metrics; `scrape_configs`: more jobs as
        Prometheus writes them (per-target labels, `__metrics_path__`, honor_labels)."""
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval,
                       "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(addrs)}]}
                for job, addrs in targets.items()
            ] + [dict(c) for c in scrape_configs],
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start it (again, after stop(): the same port and storage)."""
        if self.client.is_closed:
            self.client = httpx.Client(base_url=self.url, timeout=10.0)
        exe = binary("prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config))
        self.log = self.workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [exe, f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
                 "--storage.tsdb.retention.time=1h"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                if self.client.get("/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus did not become ready in 60 s: {self.log.read_text()}")

    def stop(self) -> None:
        self.client.close()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    # ---------------------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        r = self.client.get(f"/api/v1/{path}", params=params)
        body = r.json()
        if body.get("status") != "success":
            raise QueryError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result as a list of {metric: labels, value: float}."""
        data = self.api("query", query=expr)
        rtype, result = data["resultType"], data["result"]
        if rtype == "scalar":
            return [{"metric": {}, "value": float(result[1])}]
        if rtype != "vector":
            raise QueryError(f"{expr}: expected a vector, got {rtype}")
        return [{"metric": s["metric"], "value": float(s["value"][1])} for s in result]

    def query_range(self, expr: str, seconds: float = 30.0, step: str = "1s") -> list[dict[str, Any]]:
        """A range query over the last `seconds`: a list of {metric: labels, values: [float]}."""
        end = time.time()
        data = self.api("query_range", query=expr, start=str(end - seconds), end=str(end), step=step)
        if data["resultType"] != "matrix":
            raise QueryError(f"{expr}: expected a matrix, got {data['resultType']}")
        return [{"metric": s["metric"], "values": [float(v[1]) for v in s["values"]]} for s in data["result"]]

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def wait_for_scrapes(self, job: str, count: int, timeout: float = 60.0) -> None:
        expr = f'count_over_time(up{{job="{job}"}}[5m]) >= {count} and up{{job="{job}"}} == 1'
        if not self.wait_for(expr, timeout):
            targets = self.api("targets")
            raise RuntimeError(f"job {job} not scraped {count} times in {timeout} s: "
                               f"{json.dumps(targets)[:2000]}")


class QueryError(RuntimeError):
    pass


# -------------------------------------------------------------------------------------------------
# Dashboards


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str
    legend: str
    table: bool
    range: bool

    @property
    def where(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def load_dashboards(folder: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _panels(panels: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def panel_queries(name: str, dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    out = []
    for p in _panels(dashboard.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append(PanelQuery(name, str(p.get("title")), str(t.get("refId")), t["expr"],
                                      t.get("legendFormat", ""), t.get("format") == "table",
                                      bool(t.get("range", not t.get("instant", False)))))
    return out


def substitute(expr: str, values: Mapping[str, str]) -> str:
    for key, val in BUILTINS.items():
        expr = expr.replace(key, val)
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr


LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")


def resolve_variables(prom: PrometheusServer, dashboard: Mapping[str, Any],
                      prefer: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Resolve the query variables in order, as Grafana does. Each variable becomes `.*` (All), or
    the value `prefer` names when it is among the options, or, with `prefer` given but not naming
    it, the first option. Returns the values and every variable's options."""
    values: dict[str, str] = {}
    options: dict[str, list[str]] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], Mapping) else var["query"]
        m = LABEL_VALUES.match(substitute(q, values))
        if m is None:
            raise QueryError(f"variable {var['name']}: not a label_values(selector, label) query: {q}")
        label = m["label"]
        result = prom.query(f"group by ({label}) ({m['selector']})")
        opts = sorted({s["metric"].get(label, "") for s in result} - {""})
        options[var["name"]] = opts
        if prefer is None:
            values[var["name"]] = ".*"
        elif var["name"] in prefer and prefer[var["name"]] in opts:
            values[var["name"]] = prefer[var["name"]]
        else:
            values[var["name"]] = opts[0] if opts else ".*"
    return values, options


LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def expected_labels(q: PanelQuery) -> set[str]:
    """Labels the panel shows: those of its legend; for a table of plain per-object series, the
    object's identity labels."""
    labels = set(LEGEND_LABEL.findall(q.legend))
    if q.table and re.match(r"^stargate_(cluster|rack|pool|node)_\w+\{", q.expr):
        labels |= {"namespace", "cluster"}
    return labels


def query_problems(prom: PrometheusServer, q: PanelQuery, values: Mapping[str, str]) -> list[str]:
    expr = substitute(q.expr, values)
    if "$" in expr:
        return [f"{q.where}: unresolved variable in {expr}"]
    try:
        result = prom.query(expr)
    except QueryError as e:
        return [f"{q.where}: {e}"]
    if not result:
        return [f"{q.where}: no data for {expr}"]
    problems = []
    want = expected_labels(q)
    for s in result:
        missing = want - set(s["metric"])
        if missing:
            problems.append(f"{q.where}: series {s['metric']} lacks {sorted(missing)} for {expr}")
            break
    if not any(math.isfinite(s["value"]) for s in result):
        problems.append(f"{q.where}: only NaN/Inf values for {expr}: {result[:3]}")
    if q.range:  # a graph: the same over a time range, as Grafana asks for it
        try:
            matrix = prom.query_range(expr)
        except QueryError as e:
            return [*problems, f"{q.where} (range): {e}"]
        if not matrix or not any(math.isfinite(v) for s in matrix for v in s["values"]):
            problems.append(f"{q.where}: no data over a time range for {expr}")
    return problems


def dashboard_problems(prom: PrometheusServer, prefer: Mapping[str, str] | None = None) -> list[str]:
    """Every panel query of every dashboard, with its variables resolved (All, or `prefer`)."""
    problems = []
    for name, dash in load_dashboards().items():
        values, options = resolve_variables(prom, dash, prefer)
        problems += [f"{name}: variable {v} has no options" for v, opts in options.items() if not opts]
        for q in panel_queries(name, dash):
            problems += query_problems(prom, q, values)
    return problems


# -------------------------------------------------------------------------------------------------
# Alerts


@dataclass(frozen=True)
class AlertRule:
    alert: str
    expr: str
    labels_used: frozenset[str]
    annotations: Mapping[str, str]


def load_alert_rules(path: Path = ALERTS) -> list[AlertRule]:
    doc = yaml.safe_load(path.read_text())
    out = []
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            text = " ".join(rule.get("annotations", {}).values())
            used = frozenset(re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", text))
            out.append(AlertRule(rule["alert"], rule["expr"], used, rule.get("annotations", {})))
    return out


def alert_problems(prom: PrometheusServer, expect_firing: Iterable[str],
                   probes: Mapping[str, str] | None = None) -> list[str]:
    """Every alert expression: an alert in `expect_firing` must return series carrying every label
    its annotations use; any other must return nothing, and its probe (the expression without its
    threshold, from `probes`) must return data with those labels, so the rule is known to see the
    metrics it watches."""
    firing = set(expect_firing)
    probes = probes or {}
    problems = []
    for rule in load_alert_rules():
        try:
            result = prom.query(rule.expr)
        except QueryError as e:
            problems.append(f"{rule.alert}: {e}")
            continue
        if rule.alert in firing:
            check, expr = result, rule.expr
            if not result:
                problems.append(f"{rule.alert}: expected to fire, no data for {rule.expr}")
                continue
        else:
            if result:
                problems.append(f"{rule.alert}: not expected to fire, got {result[:3]}")
            if rule.alert not in probes:
                problems.append(f"{rule.alert}: neither expected to fire nor given a probe")
                continue
            expr = probes[rule.alert]
            check = prom.query(expr)
            if not check:
                problems.append(f"{rule.alert}: probe returned no data: {expr}")
                continue
        for s in check:
            missing = rule.labels_used - set(s["metric"]) - {"alertname", "severity"}
            if missing:
                problems.append(f"{rule.alert}: {expr} gives {s['metric']} without {sorted(missing)}, "
                                "which its annotations use")
                break
    return problems


# -------------------------------------------------------------------------------------------------
# Runbooks

RUNBOOKS = ROOT / "docs" / "operations" / "runbooks.md"
_METRIC = re.compile(r"\b(stargate_[a-z0-9_]+|up)\b(?!\s*\()")


def runbook_queries(path: Path = RUNBOOKS) -> list[tuple[str, str]]:
    """(runbook section, PromQL) for every line of every ```promql block of the runbooks page."""
    out: list[tuple[str, str]] = []
    section, in_block = "", False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.strip() == "```promql":
            in_block = True
        elif line.strip() == "```":
            in_block = False
        elif in_block and line.strip() and not line.lstrip().startswith("#"):
            out.append((section, line.strip()))
    return out


def runbook_problems(prom: PrometheusServer) -> list[str]:
    """Every runbook query must evaluate, and every metric it names must have series: a runbook
    cannot tell a person to look at a metric the operator does not export."""
    names = set(prom.api("label/__name__/values"))
    problems: list[str] = []
    queries = runbook_queries()
    if not queries:
        return [f"{RUNBOOKS} has no ```promql blocks"]
    for section, expr in queries:
        try:
            prom.query(expr)
        except QueryError as e:
            problems.append(f"{section}: {expr}: {e}")
            continue
        for metric in _METRIC.findall(expr):
            if metric not in names:
                problems.append(f"{section}: {expr}: no series named {metric}")
    return problems
