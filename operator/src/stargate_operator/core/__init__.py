"""Pure logic: rollups, power allocation, memory binding, conditions. No kopf, no I/O.

The engine and `plan` call one function, `plan_namespace(objects, now, settings) -> Plan`.
"""

from stargate_operator.core.site import plan_namespace
from stargate_operator.core.types import CoreSettings, Kind, ObjectKey, Plan, PlanEvent

__all__ = ["CoreSettings", "Kind", "ObjectKey", "Plan", "PlanEvent", "plan_namespace"]
