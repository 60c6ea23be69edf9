"""Pydantic models of every kind: the single source of the CRD schemas.

`KINDS` is the registry's list (kinds.KINDS) in its order, each kind's model: a kind registered
without a model, or a model of no registered kind, fails here, at import.
"""

from stargate_operator import kinds as _registry
from stargate_operator.api.cluster import StargateCluster
from stargate_operator.api.common import API_VERSION, CATEGORY, GROUP, VERSION, Resource
from stargate_operator.api.gpunode import GPUNode
from stargate_operator.api.gridevent import GridEvent
from stargate_operator.api.memory import MemoryClaim, MemoryPool
from stargate_operator.api.powerdomain import PowerDomain
from stargate_operator.api.powerlimitslice import PowerLimitSlice
from stargate_operator.api.rack import Rack


def _models() -> dict[str, type[Resource]]:
    """Every model (a direct subclass of Resource) by its kind, checked against the registry."""
    found = {model.kind_info.kind: model for model in Resource.__subclasses__()}
    registered = {spec.kind for spec in _registry.KINDS}
    if found.keys() != registered:
        raise ImportError(
            f"the models of stargate_operator.api ({', '.join(sorted(found))}) differ from the kinds "
            f"registered in stargate_operator/kinds.py ({', '.join(sorted(registered))}): "
            "every kind needs a KindSpec there and a model imported here")
    return found


BY_KIND: dict[str, type[Resource]] = _models()
KINDS: tuple[type[Resource], ...] = tuple(BY_KIND[spec.kind] for spec in _registry.KINDS)

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
