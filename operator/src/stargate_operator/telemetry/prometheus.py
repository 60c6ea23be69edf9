"""GPU telemetry from NVIDIA's DCGM exporter, read back from Prometheus (for sites that run it already).

Instant queries over the HTTP API (`/api/v1/query`), aggregated by the node label in Prometheus so a
large site costs one series per node, not per GPU:

- power:   `sum by (L) (DCGM_FI_DEV_POWER_USAGE)`                          watts (GPUs only)
- GPUs:    `count by (L) (DCGM_FI_DEV_POWER_USAGE)`                        GPUs reporting
- faulty:  GPUs whose last XID (`DCGM_FI_DEV_XID_ERRORS`) is non-zero and not one an application
           causes (13, 31, 43, 45, 68, 109), or whose row remapping failed
           (`DCGM_FI_DEV_ROW_REMAP_FAILURE`)
- HBM:     `sum by (L) (DCGM_FI_DEV_FB_USED)`                              MiB, turned into bytes
- time:    `max by (L) (timestamp(DCGM_FI_DEV_POWER_USAGE))`               when the samples were scraped
each first reduced to one series per GPU (`max by (L, gpu, UUID)`): with pod mapping and GPU
time-slicing, dcgm-exporter repeats a GPU's series for every pod that shares it.

`L` is the node label: dcgm-exporter sets `Hostname`; with the kubelet's pod-resources it can also
carry the Kubernetes node (`node`, or what relabelling made of it). It is configurable, and may be a
comma-separated list tried in order (`Hostname,node`: the first non-empty label names the node).

A node is present while its power series is; `healthyGPUs` is the GPUs reporting minus the faulty ones
(a GPU that has fallen off the bus stops reporting, so it is not counted healthy either). A node whose
series disappeared keeps its last reading, with its old `observedAt`, so the operator marks it stale
after its threshold rather than forgetting it (a node with no telemetry at all counts fully healthy).

Note `powerWatts` here is what DCGM measures: the GPUs. The node agent adds the rest of the node
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

from stargate_operator.core.wire import format_time, from_epoch

log = logging.getLogger(__name__)

MIB = 1024 * 1024
APPLICATION_XIDS = (13, 31, 43, 45, 68, 109)

TelemetryByNode = dict[str, dict[str, Any]]
K = TypeVar("K")


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with a usable result."""


class PrometheusTelemetry:
    """Per-node GPU telemetry from DCGM series in Prometheus; see the module's docstring."""

    def __init__(self, url: str, *, interval: float = 15.0, timeout: float = 5.0,
                 node_label: str = "Hostname", max_backoff: float = 120.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.interval = interval
        self.timeout = timeout
        self.labels = [x.strip() for x in node_label.split(",") if x.strip()] or ["Hostname"]
        self.max_backoff = max(max_backoff, interval)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self.last: TelemetryByNode = {}  # node -> last reading, kept when its series disappear
        self.polls = 0
        self.failures = 0  # consecutive failed polls
        self.last_error: str | None = None
        self.retry_in: float | None = None  # the current backoff, while failing

    # -- queries -----------------------------------------------------------------------------------

    @property
    def _by(self) -> str:
        return ", ".join(self.labels)

    def queries(self) -> dict[str, str]:
        by = self._by
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
        }

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
        at = time.time()  # one evaluation time, so that the five answers describe the same moment
        results = await asyncio.gather(*(self.query(qs[n], latest=n == "time", at=at) for n in names))
        r = dict(zip(names, results, strict=True))
        for node, power in r["power"].items():
            gpus = round(r["gpus"].get(node, 0))
            faulty = round(r["faulty"].get(node, 0))
            ts = r["time"].get(node)
            self.last[node] = {
                "powerWatts": max(0, round(power)),
                "healthyGPUs": max(0, min(16, gpus - faulty)),
                "hbmUsedBytes": max(0, round(r["hbm"].get(node, 0.0) * MIB)),
                "observedAt": format_time(from_epoch(ts) if ts is not None else datetime.now(UTC),
                                          millis=True),
            }
        self.polls += 1
        return {node: dict(t) for node, t in self.last.items()}

    async def run(self, on_update: Callable[[TelemetryByNode], Awaitable[None] | None]) -> None:
        """Poll forever; `on_update` gets every successful poll's result. Errors (Prometheus down,
        timeouts, bad answers) are logged and retried with exponential backoff, never raised."""
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
                    log.warning("Prometheus telemetry from %s failed (%s, %d in a row); retrying in %.1f s",
                                self.url, self.last_error, self.failures, backoff)
                    self.retry_in = backoff
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                if self.failures:
                    log.info("Prometheus telemetry from %s back after %d failures", self.url, self.failures)
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
