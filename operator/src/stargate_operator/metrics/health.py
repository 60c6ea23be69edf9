"""The operator's own health metrics, updated by the engine: reconciles, durations, API writes,
last success per namespace, build info.

They are created without a registry and registered by `make_registry` (server.py) into a dedicated
`CollectorRegistry`, never into prometheus_client's global default one: nothing else in the process
(kopf, libraries, tests that build several registries) can then collide with or leak into the
operator's endpoint.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.registry import Collector

from stargate_operator import __version__
from stargate_operator.kinds import GPU_NODE, KINDS

# A coalesced recomputation of one namespace takes from about a millisecond (a small site) to
# about two seconds (a 10,000-node site on a slow core); the buckets cover that range finely
# enough for a p99, with two more for pathological cases.
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
ALLOCATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

RECONCILES = Counter(
    "stargate_reconciles_total",
    "Reconciliations by kind ('namespace' for the coalesced recomputation of one namespace) and "
    "result (success or error).",
    ["kind", "result"],
    registry=None,
)
RECONCILE_SECONDS = Histogram(
    "stargate_reconcile_duration_seconds",
    "Duration of a reconciliation by kind ('namespace': one coalesced recomputation, status "
    "writes included).",
    ["kind"],
    buckets=RECONCILE_BUCKETS,
    registry=None,
)
ALLOCATION_SECONDS = Histogram(
    "stargate_allocation_duration_seconds",
    "Duration of the core's computation (rollups, power allocation, memory binding) of one namespace.",
    buckets=ALLOCATION_BUCKETS,
    registry=None,
)
API_WRITES = Counter(
    "stargate_api_writes_total",
    "Writes to the Kubernetes API by kind of the object written and verb (patch_status, apply, update, "
    "create, patch, delete, create_event).",
    ["kind", "verb"],
    registry=None,
)
LAST_SUCCESS = Gauge(
    "stargate_last_successful_reconcile_timestamp_seconds",
    "Unix time of the last successful recomputation of the namespace.",
    ["namespace"],
    registry=None,
)
DISCOVERY_SKIPPED_NODES = Gauge(
    "stargate_discovery_skipped_nodes",
    "Kubernetes Nodes with GPUs that node discovery (run --discover-nodes) did not turn into a "
    "GPUNode, by reason (MissingSiteLabel, MissingRackLabel, UnknownGPUProduct, ...; the log says "
    "which Node and what to do). Absent without discovery.",
    ["reason"],
    registry=None,
)
# A 10,000-node site's six instant queries answer in tens of milliseconds on a quiet Prometheus.
QUERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUERY_SECONDS = Histogram(
    "stargate_telemetry_query_seconds",
    "Duration of one poll of the Prometheus telemetry source (run --telemetry prometheus): its "
    "instant queries together, from the first request to the last answer, by whose series it reads "
    "(agent or dcgm). Absent without that source.",
    ["series"],
    buckets=QUERY_BUCKETS,
    registry=None,
)
BUILD_INFO = Info(
    "stargate_build",
    "Version of the operator and of the Python running it.",
    registry=None,
)
BUILD_INFO.info({"version": __version__, "python": platform.python_version()})

# Every label combination the engine uses exists from the start, at 0: a rate or increase over
# `result="error"` is then 0 rather than no data before the first error (and alerts and panels
# need no `or vector(0)`).
for _result in ("success", "error"):
    RECONCILES.labels(kind="namespace", result=_result)
RECONCILE_SECONDS.labels(kind="namespace")
for _spec in KINDS:
    API_WRITES.labels(kind=_spec.kind, verb="patch_status")
API_WRITES.labels(kind="Event", verb="create_event")

HEALTH_METRICS: tuple[Collector, ...] = (
    RECONCILES,
    RECONCILE_SECONDS,
    ALLOCATION_SECONDS,
    API_WRITES,
    LAST_SUCCESS,
    DISCOVERY_SKIPPED_NODES,
    QUERY_SECONDS,
    BUILD_INFO,
)


def init_discovery_metrics(skip_reasons: Iterable[str], reconcile_kind: str) -> None:
    """The series of node discovery, at 0, once it is enabled (absent otherwise, so that an
    operator without discovery does not report 0 skipped Nodes as if it looked)."""
    for reason in skip_reasons:
        DISCOVERY_SKIPPED_NODES.labels(reason=reason)
    for result in ("success", "error"):
        RECONCILES.labels(kind=reconcile_kind, result=result)
    RECONCILE_SECONDS.labels(kind=reconcile_kind)
    for verb in ("apply", "delete"):
        API_WRITES.labels(kind=GPU_NODE.kind, verb=verb)


def forget_namespace(namespace: str) -> None:
    """Drop the per-namespace health series of a namespace that holds no stargate object any more."""
    with contextlib.suppress(KeyError):
        LAST_SUCCESS.remove(namespace)


def health_registry() -> CollectorRegistry:
    """The operator's own health metrics alone: cheap to render at any site size."""
    health = CollectorRegistry(auto_describe=False)
    for metric in HEALTH_METRICS:
        health.register(metric)
    return health
