"""Prometheus metrics: every status figure of every site, rack and pool, and the operator's health.

- `health`: the operator's own metrics, which the engine updates (`RECONCILES`,
  `RECONCILE_SECONDS`, `ALLOCATION_SECONDS`, `API_WRITES`, `LAST_SUCCESS`, `BUILD_INFO`; node discovery's
  `DISCOVERY_SKIPPED_NODES`);
- `collector`: the custom collector that computes the sites' families from a status source at
  scrape time, counts included as the core decided them;
- `server`: the dedicated registry (`make_registry`), the fast text rendering and `serve`.

`from stargate_operator import metrics; metrics.X` reaches everything other modules use.
"""

from __future__ import annotations

from stargate_operator.metrics.collector import (
    SnapshotSource,
    StargateCollector,
    StaticSource,
    StatusSource,
)
from stargate_operator.metrics.health import (
    ALLOCATION_BUCKETS,
    ALLOCATION_SECONDS,
    API_WRITES,
    BUILD_INFO,
    DISCOVERY_SKIPPED_NODES,
    HEALTH_METRICS,
    LAST_SUCCESS,
    RECONCILE_BUCKETS,
    RECONCILE_SECONDS,
    RECONCILES,
    forget_namespace,
    init_discovery_metrics,
)
from stargate_operator.metrics.server import (
    TEXT_CONTENT_TYPE,
    StargateRegistry,
    make_registry,
    render_text,
    serve,
)

__all__ = [
    "ALLOCATION_BUCKETS",
    "ALLOCATION_SECONDS",
    "API_WRITES",
    "BUILD_INFO",
    "DISCOVERY_SKIPPED_NODES",
    "HEALTH_METRICS",
    "LAST_SUCCESS",
    "RECONCILES",
    "RECONCILE_BUCKETS",
    "RECONCILE_SECONDS",
    "TEXT_CONTENT_TYPE",
    "SnapshotSource",
    "StargateCollector",
    "StargateRegistry",
    "StaticSource",
    "StatusSource",
    "forget_namespace",
    "init_discovery_metrics",
    "make_registry",
    "render_text",
    "serve",
]
