"""Pydantic models of every kind: the single source of the CRD schemas."""

from stargate_operator.api.cluster import StargateCluster
from stargate_operator.api.common import API_VERSION, CATEGORY, GROUP, VERSION, Resource
from stargate_operator.api.gpunode import GPUNode
from stargate_operator.api.gridevent import GridEvent
from stargate_operator.api.memory import MemoryClaim, MemoryPool
from stargate_operator.api.powerdomain import PowerDomain
from stargate_operator.api.powerlimitslice import PowerLimitSlice
from stargate_operator.api.rack import Rack

KINDS: tuple[type[Resource], ...] = (
    StargateCluster, Rack, PowerDomain, GPUNode, MemoryPool, MemoryClaim, GridEvent,
    PowerLimitSlice,
)
BY_KIND: dict[str, type[Resource]] = {k.kind_info.kind: k for k in KINDS}

__all__ = [
    "API_VERSION",
    "BY_KIND",
    "CATEGORY",
    "GROUP",
    "KINDS",
    "VERSION",
    "GPUNode",
    "GridEvent",
    "MemoryClaim",
    "MemoryPool",
    "PowerDomain",
    "PowerLimitSlice",
    "Rack",
    "Resource",
    "StargateCluster",
]
