"""Metered PowerDomains: a PDU's or busway's own meter as the domain's measured power.

A PowerDomain may name `spec.meter.query`, a PromQL expression for its power in watts. The
telemetry poll reads every such query (PrometheusTelemetry.read_meters) and this overlay lays each
answer over its domain as `status.meter.watts` in what the planner sees (nothing is written back);
the core then takes it as the domain's measuredWatts for capping, grid events and settlement. A
domain whose query failed or returned nothing has no reading: its nodes' sum counts again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from stargate_operator import kinds

MeterKey = tuple[str, str]  # (namespace, PowerDomain name)


def meter_queries(objects: Iterable[Mapping[str, Any]]) -> dict[MeterKey, str]:
    """Every PowerDomain's spec.meter.query, by (namespace, name)."""
    out: dict[MeterKey, str] = {}
    for obj in objects:
        if obj.get("kind") == kinds.POWER_DOMAIN.kind:
            query = ((obj.get("spec") or {}).get("meter") or {}).get("query")
            if isinstance(query, str) and query:
                meta = obj["metadata"]
                out[meta.get("namespace") or "", meta["name"]] = query
    return out


class MeterOverlay:
    """`update(readings)` replaces the last readings and, when they changed, calls `on_change`;
    calling the overlay on a list of objects returns them with the readings laid over."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self.readings: dict[MeterKey, int] = {}
        self.on_change = on_change

    def update(self, readings: Mapping[MeterKey, int]) -> None:
        if dict(readings) == self.readings:
            return  # a steady meter costs no plan
        self.readings = dict(readings)
        self.on_change()

    def __call__(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.readings:
            return objects
        out = []
        for obj in objects:
            if obj.get("kind") == kinds.POWER_DOMAIN.kind:
                meta = obj["metadata"]
                watts = self.readings.get((meta.get("namespace") or "", meta["name"]))
                if watts is not None:
                    obj = {**obj, "status": {**(obj.get("status") or {}), "meter": {"watts": watts}}}
            out.append(obj)
        return out
