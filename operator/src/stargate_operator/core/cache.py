"""What one recomputation can hand the next, so that a site where little changed is cheap.

The engine recomputes a whole namespace on every coalesced change; on a 100,000-node site almost
every node is the same object (same uid, same resourceVersion) as last time. A PlanCache passed to
every call of `plan_namespace` for the same objects keeps, per GPU node:
- the parsed record (skips reading the wire form again),
- its health verdict and the window of time in which that verdict holds (skips telemetry parsing),
- its last status and what that status was built from, kept only when no condition changed in it
  (then `now` played no part in it), so an unchanged node is not built again;
and per rack, when all its nodes were such unchanged records: the rack's sums, and when its
budget did not change either, its nodes' statuses as one dict, so that an unchanged rack costs
little more than reading its nodes' resourceVersions.
A record is reused only for the same uid, resourceVersion, stale threshold and telemetry (which
an engine may lay over the object without a new resourceVersion). Results are identical with and
without a cache; the cache only saves work. Entries of objects that
did not come back in the last call are dropped. Not thread-safe: one cache per engine worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stargate_operator.core.objects import NodeIn, RackIn
from stargate_operator.core.types import ObjectKey

RackKey = tuple[str, str]  # (namespace, name)


@dataclass(slots=True, eq=False)
class RackMemo:
    """A rack as the last call left it, valid while its node records are the very same."""

    nodes: list[NodeIn]
    max_power_w: int
    cluster_ref: str
    sums: tuple[int, int, int, int, int, int, int, int]
    budget_w: int
    safe_budget_w: int
    powered: bool
    facility_it_w: int
    statuses: dict[ObjectKey, dict[str, Any]]  # its nodes' statuses
    counts: dict[str, int]  # its Plan.counts, which those statuses decide
    power_limits: dict[str, int]  # its status.powerLimits, which they decide too
    safe_limits: dict[str, int]  # its status.safeLimits, likewise

    @classmethod
    def of(
        cls, rack: RackIn, statuses: dict[ObjectKey, dict[str, Any]], counts: dict[str, int]
    ) -> RackMemo:
        return cls(
            nodes=rack.nodes,
            max_power_w=rack.max_power_w,
            cluster_ref=rack.cluster_ref,
            sums=(rack.floor_w, rack.demand_sum_w, rack.demand_w, rack.measured_w, rack.gpus_total,
                  rack.gpus_healthy, rack.hbm_bytes, rack.host_bytes),
            budget_w=rack.budget_w,
            safe_budget_w=rack.safe_budget_w,
            powered=rack.powered,
            facility_it_w=rack.facility_it_w,
            statuses=statuses,
            counts=counts,
            power_limits=rack.power_limits,
            safe_limits=rack.safe_limits,
        )

    def restore_sums(self, rack: RackIn) -> None:
        (rack.floor_w, rack.demand_sum_w, rack.demand_w, rack.measured_w, rack.gpus_total,
         rack.gpus_healthy, rack.hbm_bytes, rack.host_bytes) = self.sums


@dataclass(slots=True)
class PlanCache:
    nodes: dict[str, NodeIn] = field(default_factory=dict)  # by metadata.uid
    racks: dict[RackKey, RackMemo] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.nodes)
