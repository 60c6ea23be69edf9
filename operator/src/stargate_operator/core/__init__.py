"""Pure logic: rollups, power allocation, memory binding, conditions. No kopf, no I/O.

`plan` calls one function, `plan_namespace(objects, now, settings[, cache]) -> Plan`; the engine calls
the same in two steps (`site.allocate_namespace`, through sliceplan.py's `stage_campus`: the limits,
then the statuses) and passes the same `PlanCache` on every call so that unchanged nodes cost little.
"""

from stargate_operator.core.cache import PlanCache
from stargate_operator.core.site import plan_namespace
from stargate_operator.core.types import CoreSettings, Kind, ObjectKey, Plan, PlanEvent

__all__ = ["CoreSettings", "Kind", "ObjectKey", "Plan", "PlanCache", "PlanEvent", "plan_namespace"]
