"""GPU telemetry read back from Prometheus: the node agents' own series, or NVIDIA's DCGM exporter's.

Two sources of series (`series`):

`agent` (the default): what every node agent serves on /metrics (agent/exposition.py), one series of
each per node, with the node taken from the scrape target's `node` label (the ServiceMonitor's
relabelling of the pod's node; never a label the agent exports: with `honor_labels: false` an
exported `node` becomes `exported_node`, so an agent cannot speak for another node):

- power:     `max by (node) (stargate_agent_node_power_watts)`             watts (GPUs and the rest)
- healthy:   `min by (node) (stargate_agent_node_healthy_gpus)`            GPUs
- enforced:  `max by (node) (stargate_agent_node_enforced_limit_watts)`    per-GPU watts (confirmation)
- peak:      `max by (node) (stargate_agent_node_peak_power_watts)`        the last window's highest sample
- HBM:       `max by (node) (stargate_agent_node_hbm_used_bytes)`          bytes
- time:      `max by (node) (stargate_agent_node_observed_timestamp_seconds)`  when the agent read its GPUs
(`max`/`min`: a node scraped twice, by two Prometheus jobs, still counts once, conservatively).

`dcgm`, for sites that run dcgm-exporter already:

Instant queries over the HTTP API (`/api/v1/query`), aggregated by the node label in Prometheus so a
large site costs one series per node, not per GPU:

- power:   `sum by (L) (DCGM_FI_DEV_POWER_USAGE)`                          watts (GPUs only)
- GPUs:    `count by (L) (DCGM_FI_DEV_POWER_USAGE)`                        GPUs reporting
- faulty:  GPUs whose last XID (`DCGM_FI_DEV_XID_ERRORS`) is non-zero and not one an application
           causes (13, 31, 43, 45, 68, 109), or whose row remapping failed
           (`DCGM_FI_DEV_ROW_REMAP_FAILURE`)
- HBM:     `sum by (L) (DCGM_FI_DEV_FB_USED)`                              MiB, turned into bytes
- time:    `max by (L) (timestamp(DCGM_FI_DEV_POWER_USAGE))`               when the samples were scraped
- enforced:`max by (L) (max by (L, gpu, UUID) (DCGM_FI_DEV_ENFORCED_POWER_LIMIT))` per-GPU watts, where
           the exporter's counters list that field (it is not among its defaults): otherwise the
           agents keep writing it to their GPUNodes, as without Prometheus
each first reduced to one series per GPU (`max by (L, gpu, UUID)`): with pod mapping and GPU
time-slicing, dcgm-exporter repeats a GPU's series for every pod that shares it. DCGM measures no
peak between scrapes and no power range: those stay the agent's (in its GPUNode's status).

`L` is the node label: dcgm-exporter sets `Hostname` (its own label: dcgm-exporter is trusted to
name its node, as it reads the GPUs directly); with the kubelet's pod-resources it can also carry the
Kubernetes node (`node`, or what relabelling made of it). It is configurable for either source, and
may be a comma-separated list tried in order (`Hostname,node`: the first non-empty label names the
node).

A node is present while its power series is; `healthyGPUs` is the GPUs reporting minus the faulty ones
(a GPU that has fallen off the bus stops reporting, so it is not counted healthy either). A node whose
series disappeared keeps its last reading, with its old `observedAt`, so the operator marks it stale
after its threshold rather than forgetting it (a node with no telemetry at all counts fully healthy).

The answer is one series per node whatever the site's size: the aggregation runs in Prometheus.
Each poll's queries, from the first request to the last answer, are timed (`last_query_s`; the
operator exports it as `stargate_telemetry_query_seconds`).

Note `powerWatts` from DCGM is what DCGM measures: the GPUs. The node agent adds the rest of the node
(`spec.basePowerWatts`); the core's `core.power.with_base_power()` does the same for a reading from
here (overlay.py, the engine's hook, applies it before planning), so that it compares with node
budgets.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from stargate_operator.core.outage import SourceState
from stargate_operator.core.wire import format_time, from_epoch

log = logging.getLogger(__name__)

MIB = 1024 * 1024
APPLICATION_XIDS = (13, 31, 43, 45, 68, 109)

TelemetryByNode = dict[str, dict[str, Any]]
SOURCE_NAME = "Prometheus"  # as the sites' TelemetryAvailable reasons name it


def _now() -> str:
    return format_time(datetime.now(UTC))
K = TypeVar("K")


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with a usable result."""


SERIES = ("agent", "dcgm")  # whose series: the node agents' own, or dcgm-exporter's
DEFAULT_NODE_LABEL = {"agent": "node", "dcgm": "Hostname"}

# The agents' per-node series (agent/exposition.py), by the telemetry field each gives.
AGENT_SERIES = {
    "power": "stargate_agent_node_power_watts",
    "healthy": "stargate_agent_node_healthy_gpus",
    "enforced": "stargate_agent_node_enforced_limit_watts",
    "peak": "stargate_agent_node_peak_power_watts",
    "hbm": "stargate_agent_node_hbm_used_bytes",
    "time": "stargate_agent_node_observed_timestamp_seconds",
}


def agent_queries(labels: list[str]) -> dict[str, str]:
    """One instant query per field over the agents' series, one answer series per node. `max`
    where a node could be scraped twice (two jobs, two replicas of Prometheus behind one URL):
    its readings then count once, and the higher enforced limit keeps a confirmation honest;
    `min` for healthy GPUs for the same reason. Series without the node label (an agent scraped
    without its target's relabelling) are left out: nothing else may say whose they are."""
    by = ", ".join(labels)
    present = ", ".join(f'{label}!=""' for label in labels[:1])
    return {key: f"{'min' if key == 'healthy' else 'max'} by ({by}) ({name}{{{present}}})"
            for key, name in AGENT_SERIES.items()}


def dcgm_queries(labels: list[str]) -> dict[str, str]:
    """The DCGM fields' queries (the module's docstring lists them)."""
    by = ", ".join(labels)
    # One series per GPU first: with pod mapping and time-slicing, dcgm-exporter repeats a GPU's
    # series once per pod sharing it, which a plain sum would count twice.
    gpu = f"{by}, gpu, UUID"
    xid = "DCGM_FI_DEV_XID_ERRORS != 0"
    for x in APPLICATION_XIDS:
        xid = f"({xid}) != {x}"
    faulty = f"({xid}) or (DCGM_FI_DEV_ROW_REMAP_FAILURE > 0)"
    return {
        "power": f"sum by ({by}) (max by ({gpu}) (DCGM_FI_DEV_POWER_USAGE))",
        "gpus": f"count by ({by}) (max by ({gpu}) (DCGM_FI_DEV_POWER_USAGE))",
        "faulty": f"count by ({by}) (count by ({gpu}) ({faulty}))",
        "hbm": f"sum by ({by}) (max by ({gpu}) (DCGM_FI_DEV_FB_USED))",
        "time": f"max by ({by}) (timestamp(DCGM_FI_DEV_POWER_USAGE))",
        "enforced": f"max by ({by}) (max by ({gpu}) (DCGM_FI_DEV_ENFORCED_POWER_LIMIT))",
    }


def _stamp(ts: float | None) -> str:
    return format_time(from_epoch(ts) if ts is not None else datetime.now(UTC), millis=True)


def agent_readings(r: Mapping[str, Mapping[str, float]]) -> TelemetryByNode:
    """The agents' answers (field -> node -> value) as wire-form telemetry by node: every node
    with a power series. `powerWatts` is the whole node's, as the agent reports it."""
    out: TelemetryByNode = {}
    for node, power in r["power"].items():
        reading: dict[str, Any] = {
            "powerWatts": max(0, round(power)),
            "healthyGPUs": max(0, min(16, round(r["healthy"].get(node, 0)))),
            "hbmUsedBytes": max(0, round(r["hbm"].get(node, 0.0))),
            "observedAt": _stamp(r["time"].get(node)),
        }
        if node in r["enforced"]:
            reading["enforcedLimitWatts"] = max(0, round(r["enforced"][node]))
        if node in r["peak"]:
            reading["peakPowerWatts"] = max(reading["powerWatts"], round(r["peak"][node]))
        out[node] = reading
    return out


def dcgm_readings(r: Mapping[str, Mapping[str, float]]) -> TelemetryByNode:
    """DCGM's answers as wire-form telemetry by node (`powerWatts`: the GPUs only)."""
    out: TelemetryByNode = {}
    for node, power in r["power"].items():
        gpus = round(r["gpus"].get(node, 0))
        faulty = round(r["faulty"].get(node, 0))
        reading: dict[str, Any] = {
            "powerWatts": max(0, round(power)),
            "healthyGPUs": max(0, min(16, gpus - faulty)),
            "hbmUsedBytes": max(0, round(r["hbm"].get(node, 0.0) * MIB)),
            "observedAt": _stamp(r["time"].get(node)),
        }
        if node in r["enforced"]:
            reading["enforcedLimitWatts"] = max(0, round(r["enforced"][node]))
        out[node] = reading
    return out


class PrometheusTelemetry:
    """Per-node GPU telemetry from the agents' or DCGM's series in Prometheus; see the module's
    docstring."""

    def __init__(self, url: str, *, interval: float = 15.0, timeout: float = 5.0,
                 node_label: str | None = None, max_backoff: float = 120.0, series: str = "dcgm",
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if series not in SERIES:
            raise ValueError(f"series must be one of {', '.join(SERIES)}, not {series!r}")
        self.series = series
        self.url = url.rstrip("/")
        self.interval = interval
        self.timeout = timeout
        default = DEFAULT_NODE_LABEL[series]
        self.labels = [x.strip() for x in (node_label or default).split(",") if x.strip()] or [default]
        self.max_backoff = max(max_backoff, interval)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self.last: TelemetryByNode = {}  # node -> last reading, kept when its series disappear
        self.polls = 0
        self.failures = 0  # consecutive failed polls
        self.last_error: str | None = None
        self.retry_in: float | None = None  # the current backoff, while failing
        self.last_query_s: float | None = None  # the last good poll's queries, first to last answer

    # -- queries -----------------------------------------------------------------------------------

    def queries(self) -> dict[str, str]:
        if self.series == "agent":
            return agent_queries(self.labels)
        return dcgm_queries(self.labels)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), transport=self._transport)
        return self._http

    async def query(self, promql: str, *, latest: bool = False, at: float | None = None) -> dict[str, float]:
        """An instant query (at `at`, a Unix time, else now), as node -> value (values summed, or the
        max with `latest`, where several series name one node)."""
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        resp = await self._client().get(f"{self.url}/api/v1/query", params=params)
        try:
            body = resp.json()
        except ValueError:
            raise PrometheusError(f"HTTP {resp.status_code}: not JSON: {resp.text[:200]!r}") from None
        if resp.status_code >= 400 or body.get("status") != "success":
            raise PrometheusError(f"HTTP {resp.status_code}: {body.get('errorType')}: {body.get('error')}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise PrometheusError(f"expected a vector, got {data.get('resultType')!r}")
        out: dict[str, float] = {}
        for series in data.get("result") or []:
            metric = series.get("metric") or {}
            node = next((metric[label] for label in self.labels if metric.get(label)), None)
            if node is None:
                continue  # series without a node label cannot be matched to a GPUNode
            value = float(series["value"][1])
            if math.isnan(value) or math.isinf(value):
                continue
            if node not in out:
                out[node] = value
            else:  # two label sets naming one node (`Hostname,node` lists): times take the latest
                out[node] = max(out[node], value) if latest else out[node] + value
        return out

    async def read_meters(self, queries: Mapping[K, str]) -> dict[K, int]:
        """Each meter query's value in watts (the sum of the series it returns), by key. A query
        that fails or returns nothing is left out (and logged): that domain falls back to the sum of
        its nodes rather than to a wrong figure."""
        out: dict[K, int] = {}
        at = time.time()
        for key, promql in queries.items():
            try:
                params = {"query": promql, "time": f"{at:.3f}"}
                resp = await self._client().get(f"{self.url}/api/v1/query", params=params)
                body = resp.json()
                if resp.status_code >= 400 or body.get("status") != "success":
                    raise PrometheusError(f"HTTP {resp.status_code}: {body.get('error')}")
                data = body.get("data") or {}
                values = [float(r["value"][1]) for r in data.get("result") or []] \
                    if data.get("resultType") == "vector" else []
                values = [v for v in values if not (math.isnan(v) or math.isinf(v))]
            except (httpx.HTTPError, PrometheusError, KeyError, ValueError, TypeError) as e:
                log.warning("meter query %r for %s failed: %s", promql, key, e)
                continue
            if values:
                out[key] = max(0, round(sum(values)))
        return out

    async def poll_once(self) -> TelemetryByNode:
        """Query Prometheus once; nodeName -> wire-form telemetry for every node seen so far (nodes
        whose series are gone keep their last reading). Raises on any error (run() backs off)."""
        qs = self.queries()
        names = list(qs)
        at = time.time()  # one evaluation time, so that the answers describe the same moment
        started = time.perf_counter()
        results = await asyncio.gather(*(self.query(qs[n], latest=n == "time", at=at) for n in names))
        self.last_query_s = time.perf_counter() - started
        r = dict(zip(names, results, strict=True))
        self.last.update(agent_readings(r) if self.series == "agent" else dcgm_readings(r))
        self.polls += 1
        return {node: dict(t) for node, t in self.last.items()}

    async def run(self, on_update: Callable[[TelemetryByNode], Awaitable[None] | None],
                  on_state: Callable[[SourceState], None] | None = None) -> None:
        """Poll forever; `on_update` gets every successful poll's result, `on_state` the source's
        state whenever it turns (unavailable at the first failed poll, available again at the
        next good one: the core then holds health at the last readings, core/outage.py). Errors
        (Prometheus down, timeouts, bad answers) are logged and retried with exponential backoff,
        never raised."""
        first_backoff = backoff = min(1.0, self.interval)
        try:
            while True:
                try:
                    readings = await self.poll_once()
                except asyncio.CancelledError:
                    raise
                except (httpx.HTTPError, PrometheusError, KeyError, ValueError, TypeError) as e:
                    self.failures += 1
                    self.last_error = str(e) or type(e).__name__
                    if self.failures == 1 and on_state is not None:
                        on_state(SourceState(SOURCE_NAME, False, _now(), self.last_error[:200]))
                    log.warning("Prometheus telemetry from %s failed (%s, %d in a row); retrying in %.1f s",
                                self.url, self.last_error, self.failures, backoff)
                    self.retry_in = backoff
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                if self.failures:
                    log.info("Prometheus telemetry from %s back after %d failures", self.url, self.failures)
                if (self.failures or self.polls == 1) and on_state is not None:
                    on_state(SourceState(SOURCE_NAME, True, _now()))
                self.failures = 0
                self.last_error = None
                self.retry_in = None
                backoff = first_backoff
                res = on_update(readings)
                if inspect.isawaitable(res):
                    await res
                await asyncio.sleep(self.interval)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
