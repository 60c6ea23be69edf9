"""External GPU telemetry laid over the GPUNodes the engine plans: the engine's objects hook.

A reading from outside the cluster's objects (Prometheus/DCGM, by node name) takes the place of a
GPUNode's `status.telemetry` in what the planner sees; nothing is written back. The engine knows
only the hook (a function over the objects of one unit of work); this module knows the readings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stargate_operator import kinds
from stargate_operator.core.power import with_base_power

__all__ = ["TelemetryOverlay"]


class TelemetryOverlay:
    """`update(readings)` replaces the last readings and calls `on_change` (the engine then plans
    the GPUNodes again); calling the overlay on a list of objects returns them with the readings
    laid over."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self._readings: dict[str, dict[str, Any]] = {}
        self.on_change = on_change

    def update(self, readings: Mapping[str, dict[str, Any]]) -> None:
        self._readings = dict(readings)
        self.on_change()

    def __call__(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self._readings:
            return objects
        out = []
        for obj in objects:
            if obj.get("kind") == kinds.GPU_NODE.kind:
                node = (obj.get("spec") or {}).get("nodeName") or obj["metadata"]["name"]
                reading = self._readings.get(node)
                if reading is not None:
                    # DCGM measures the GPUs only; node telemetry counts the whole node, as an
                    # agent reports it, so that it compares with node and rack budgets.
                    reading = with_base_power(reading, obj.get("spec") or {})
                    obj = {**obj, "status": {**(obj.get("status") or {}), "telemetry": reading}}
            out.append(obj)
        return out
