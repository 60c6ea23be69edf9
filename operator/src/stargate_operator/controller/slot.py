"""The controller slot: a controller is a registration, what it watches and the pure planner that
decides, and the engine (engine.py) does the rest (informers, cache, coalescing, writes).

A registration names
- `resources`: what it watches (any group: stargate kinds via `ApiResource.of(kind_spec)`, core
  resources such as Nodes as `ApiResource("", "v1", "nodes", "Node", namespaced=False)`);
- `planner(objects, now, settings, cache) -> Plan`: pure, over the objects of its resources in one
  unit of work (one namespace, or the whole cluster with `per_namespace=False`), the same
  `settings` and one `cache` per unit (made by `new_cache`) on every call;
- `field_manager`: whose name its server-side applies carry;
- `replace_kinds`: kinds only this controller writes, changed by a PUT of the whole object onto the
  version it holds instead of an apply;
- `write_first`: kinds whose writes (applies and status patches) go out, all of them, before any
  other write of the same plan (the power controller's PowerLimitSlices: they are how a new limit
  reaches the node agents with one write per slice of up to a few hundred nodes);
- `stager` (optional): the planner in two steps (core.types.Staged), whose first step yields the
  `write_first` kinds' applies before the rest of the plan (the statuses) is built: the engine
  sends them, then finishes the plan. `planner` stays the two steps at once.

Several controllers may share one engine (one cache, one watch per resource, one set of writers,
one leader-election gate): `Engine(client, settings, controllers=(power_controller(...), other))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from stargate_operator import kinds
from stargate_operator.client import ApiResource
from stargate_operator.core.sliceplan import (
    CampusCache,
    CampusSettings,
    SliceSettings,
    plan_campus,
    stage_campus,
)
from stargate_operator.core.types import CoreSettings, Plan, Planned, Staged

S = TypeVar("S")
C = TypeVar("C")

FIELD_MANAGER = "stargate-operator"


@dataclass(frozen=True)
class Controller(Generic[S, C]):
    name: str
    resources: tuple[ApiResource, ...]
    planner: Callable[[list[dict[str, Any]], datetime, S, C], Plan]
    settings: S
    new_cache: Callable[[], C]
    # True: one planner call per namespace, over that namespace's objects (a site is a namespace).
    # False: one call over every object of its resources (work that spans namespaces).
    per_namespace: bool = True
    field_manager: str = FIELD_MANAGER
    # The `kind` label of its reconcile metrics: what one unit of its work is.
    reconcile_kind: str = "namespace"
    # Kinds whose applies and status patches are written (and answered) before the plan's other writes.
    write_first: tuple[str, ...] = ()
    # Kinds that only this controller writes: one the store holds is written by a PUT of the whole
    # object carrying the held resourceVersion (no merge with what the API server holds: a fifth
    # less of its CPU than an apply of a PowerLimitSlice), one it does not hold is created by an apply.
    replace_kinds: tuple[str, ...] = ()
    # The planner in two steps, so that the applies of `write_first` go out before the rest is built.
    stager: Callable[[list[dict[str, Any]], datetime, S, C], Staged] | None = None

    def stage(self, objects: list[dict[str, Any]], now: datetime, cache: C) -> Staged:
        """The plan of one unit in two steps: the stager's, or the planner's computed at once."""
        if self.stager is not None:
            return self.stager(objects, now, self.settings, cache)
        return Planned(self.planner(objects, now, self.settings, cache))

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(r.kind for r in self.resources)


def stargate_resources() -> tuple[ApiResource, ...]:
    """Every kind of the registry (kinds.KINDS): a kind registered there is watched."""
    return tuple(ApiResource.of(k) for k in kinds.KINDS)


def power_controller(stale_after_seconds: float = kinds.DEFAULT_STALE_AFTER_SECONDS,
                     slices: SliceSettings | None = None) -> Controller[CampusSettings, CampusCache]:
    """Capacity, power and memory: the core's plan of every namespace (a site), its limits in
    PowerLimitSlices."""
    return Controller(
        name="power",
        resources=stargate_resources(),
        planner=plan_campus,
        stager=stage_campus,
        settings=CampusSettings(CoreSettings(stale_after_seconds), slices or SliceSettings()),
        new_cache=CampusCache,
        # Limits travel in slices: every slice first, then the GPUNodes' and racks' statuses.
        write_first=(kinds.POWER_LIMIT_SLICE.kind,),
        replace_kinds=(kinds.POWER_LIMIT_SLICE.kind,),
    )
