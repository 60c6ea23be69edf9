"""Wiring on kopf: lifecycle, signals, liveness probes; the engine and leader election run as tasks.

kopf serves what it is good at here: the process lifecycle (startup and cleanup activities,
SIGTERM/SIGINT handling and graceful shutdown), logging, and the liveness endpoint with probes.
The hot path (watching tens of thousands of objects, coalescing, writing status) is the engine's,
for the reasons in engine.py and informer.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import kopf

from stargate_operator import kinds, metrics
from stargate_operator.client import KubeClient
from stargate_operator.controller.discovery import discovery_controller
from stargate_operator.controller.engine import Engine, EngineSettings, connections_needed
from stargate_operator.controller.leader import ElectionConfig, LeaderElector
from stargate_operator.controller.lease import LEASE_CONCURRENCY, LeaseKeeper, site_namespaces
from stargate_operator.controller.slot import Controller, power_controller
from stargate_operator.core.discovery import DiscoverySettings

logger = logging.getLogger("stargate.operator")


@dataclass(frozen=True)
class RunSettings:
    engine: EngineSettings
    kubeconfig: str | None = None
    metrics_port: int = 8080
    metrics_addr: str = "0.0.0.0"
    health_port: int = 8081
    per_node_metrics: bool = False
    election: ElectionConfig | None = None  # leader election on a Lease; None: standalone
    telemetry: str = "none"  # none | prometheus
    prometheus_url: str | None = None
    prometheus_node_label: str | None = None  # None: the series' own (node, or Hostname for dcgm)
    prometheus_series: str = "agent"  # agent | dcgm: whose series the prometheus source reads
    prometheus_timeout: float = 5.0  # seconds one request to Prometheus may take
    telemetry_interval: float = 15.0
    # Node discovery (`--discover-nodes`): its label keys; None: off. Its namespaces are the
    # engine's (a shard discovers only its own sites).
    discovery: DiscoverySettings | None = None
    # The fail-safe Lease of each site namespace, renewed while active; its
    # duration in seconds (renewed every third of it). 0: no Lease (agents then fall back to safe
    # limits after their --failsafe-after).
    lease_duration: int = kinds.DEFAULT_LEASE_DURATION_SECONDS


def controllers(cfg: RunSettings) -> list[Controller[Any, Any]]:
    """The controllers this process runs, in one engine: a new controller registers here."""
    out: list[Controller[Any, Any]] = [power_controller(cfg.engine.stale_after_seconds,
                                                               cfg.engine.slices)]
    if cfg.discovery is not None:
        out.append(discovery_controller(cfg.discovery, cfg.engine.namespaces))
    return out


def build_registry(cfg: RunSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A registry of our own does not carry kopf's default login handlers.
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
        # kopf serves no resource here, so it need not follow CRDs and namespaces: that spares
        # the ClusterRole for them when the operator is restricted to some namespaces.
        settings.scanning.disabled = True
        settings.posting.enabled = False  # our Events are the engine's, not kopf's log lines
        slots = controllers(cfg)
        client = KubeClient.from_kubeconfig(cfg.kubeconfig,
                                            max_connections=connections_needed(cfg.engine, slots))
        engine = Engine(client, cfg.engine, controllers=slots)
        memo["client"] = client
        memo["engine"] = engine
        # The two heartbeats (the election's Lease, the fail-safe Leases) on connections of their
        # own, as kube-controller-manager gives leader election its own client: on a slow API server
        # a renewal must not wait for a free connection behind the engine's writes, nor open a new
        # one (a TLS handshake costs round trips of its own).
        beat = KubeClient.from_kubeconfig(cfg.kubeconfig, max_connections=1 + LEASE_CONCURRENCY)
        memo["heartbeat_client"] = beat
        tasks: list[asyncio.Task[None]] = []
        if cfg.election is not None:
            elector = LeaderElector(beat, cfg.election, engine.active)
            memo["elector"] = elector
            tasks.append(asyncio.create_task(elector.run(), name="leader-election"))
        else:
            engine.active.set()
        if cfg.telemetry == "prometheus":
            from stargate_operator.telemetry.meters import MeterOverlay, meter_queries
            from stargate_operator.telemetry.overlay import TelemetryOverlay
            from stargate_operator.telemetry.prometheus import PrometheusTelemetry

            if not cfg.prometheus_url:
                raise kopf.PermanentError("--telemetry prometheus needs --prometheus-url")
            source = PrometheusTelemetry(cfg.prometheus_url, interval=cfg.telemetry_interval,
                                         node_label=cfg.prometheus_node_label,
                                         series=cfg.prometheus_series,
                                         timeout=cfg.prometheus_timeout)
            overlay = TelemetryOverlay(on_change=lambda: engine.refresh(kinds.GPU_NODE.kind),
                                       gpus_only=cfg.prometheus_series == "dcgm")
            engine.add_hook(overlay)
            meters = MeterOverlay(on_change=lambda: engine.refresh(kinds.POWER_DOMAIN.kind))
            engine.add_hook(meters)

            async def on_update(readings: dict[str, dict[str, Any]], source: Any = source) -> None:
                if source.last_query_s is not None:
                    metrics.health.QUERY_SECONDS.labels(series=source.series).observe(source.last_query_s)
                overlay.update(readings)
                queries = meter_queries(engine.store)  # metered PowerDomains: the same poll, same period
                if queries or meters.readings:
                    meters.update(await source.read_meters(queries))

            tasks.append(asyncio.create_task(source.run(on_update, overlay.set_source), name="telemetry"))
        tasks.append(asyncio.create_task(engine.run(), name="engine"))
        if cfg.lease_duration > 0:
            keeper = LeaseKeeper(beat, site_namespaces(engine.store.namespaces, engine.store.objects),
                                 engine.active, lambda: engine.synced, duration_s=cfg.lease_duration)
            memo["lease"] = keeper
            tasks.append(asyncio.create_task(keeper.run(), name="failsafe-lease"))
        memo["tasks"] = tasks
        server = metrics.serve(metrics.make_registry(engine, per_node=cfg.per_node_metrics),
                               cfg.metrics_port, cfg.metrics_addr)
        memo["metrics_server"] = server
        logger.info("metrics on %s:%d, namespaces: %s", cfg.metrics_addr, server.server_port,
                    ", ".join(cfg.engine.namespaces) or "all")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        for task in reversed(memo.get("tasks", [])):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        server = memo.get("metrics_server")
        if server is not None:
            server.shutdown()
            server.server_close()
        for name in ("client", "heartbeat_client"):
            client = memo.get(name)
            if client is not None:
                await client.aclose()

    @kopf.on.probe(id="engine", registry=registry)
    def probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
        engine: Engine | None = memo.get("engine")
        if engine is None:
            return {"starting": True}
        for task in memo.get("tasks", []):
            if task.done() and not task.cancelled() and task.exception() is not None:
                # A dead engine must fail liveness so that the kubelet restarts us.
                raise RuntimeError(f"task {task.get_name()} died: {task.exception()}")
        return engine.health()

    return registry


def run(settings: RunSettings) -> int:
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig  # kopf's own login reads it too
    registry = build_registry(settings)
    kopf.run(
        registry=registry,
        standalone=True,  # no kopf peering: leader election is ours (controller/leader.py), on a Lease
        clusterwide=not settings.engine.namespaces,
        namespaces=list(settings.engine.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=kopf.Memo(),
    )
    return 0
