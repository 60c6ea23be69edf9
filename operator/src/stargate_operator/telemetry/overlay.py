"""External GPU telemetry laid over the GPUNodes the engine plans: the engine's objects hook.

A reading from outside the cluster's objects (Prometheus: the agents' or DCGM's series, by node
name) is laid over a GPUNode's `status.telemetry` in what the planner sees, field by field;
nothing is written back. The engine knows
only the hook (a function over the objects of one unit of work); this module knows the readings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stargate_operator import kinds
from stargate_operator.core.outage import SourceState, source_record
from stargate_operator.core.power import with_base_power

__all__ = ["TelemetryOverlay"]


class TelemetryOverlay:
    """`update(readings)` replaces the last readings and calls `on_change` (the engine then plans
    the GPUNodes again); calling the overlay on a list of objects returns them with the readings
    laid over."""

    def __init__(self, on_change: Callable[[], None] = lambda: None, *, gpus_only: bool = True) -> None:
        # DCGM measures the GPUs only; the agents' series are the whole node's already.
        self.gpus_only = gpus_only
        self._readings: dict[str, dict[str, Any]] = {}
        self._source: dict[str, Any] | None = None  # how the source fares (core/outage.py)
        self.on_change = on_change

    def set_source(self, state: SourceState) -> None:
        """How the source fares: while it is unavailable the core holds every site's health at the
        last readings instead of ageing them to stale (core/outage.py). Told to the planner as a
        record among the objects of every unit that holds a site."""
        self._source = source_record(state)
        self.on_change()

    def update(self, readings: Mapping[str, dict[str, Any]]) -> None:
        self._readings = dict(readings)
        self.on_change()

    def __call__(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        source = self._source
        if source is not None and any(o.get("kind") == kinds.STARGATE_CLUSTER.kind for o in objects):
            objects = [*objects, source]
        if not self._readings:
            return objects
        out = []
        for obj in objects:
            if obj.get("kind") == kinds.GPU_NODE.kind:
                node = (obj.get("spec") or {}).get("nodeName") or obj["metadata"]["name"]
                reading = self._readings.get(node)
                if reading is not None:
                    if self.gpus_only:
                        # DCGM measures the GPUs only; node telemetry counts the whole node, as an
                        # agent reports it, so that it compares with node and rack budgets.
                        reading = with_base_power(reading, obj.get("spec") or {})
                    status = obj.get("status") or {}
                    # Laid over what the agent wrote: the fields Prometheus does not carry (the
                    # power range discovery reads, a shadow limit; with DCGM the enforced limit
                    # and the peak unless its series give them) stay the agent's.
                    written = status.get("telemetry") or {}
                    obj = {**obj, "status": {**status, "telemetry": {**written, **reading}}}
            out.append(obj)
        return out
