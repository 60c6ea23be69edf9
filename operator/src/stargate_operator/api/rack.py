"""Rack: a power feed and cooling loop holding GPU nodes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stargate_operator import kinds
from stargate_operator.api.cluster import GPUCount
from stargate_operator.api.common import (
    AGE_COLUMN,
    CONFIRMED_COLUMN,
    MAX_RACK_WATTS,
    READY_COLUMN,
    ClusterRef,
    KindInfo,
    MeasuredNodesWatts,
    Model,
    ObjectName,
    Resource,
    StatusBase,
    column,
    condition_column,
    limits_confirmed_field,
)


class Location(Model):
    hall: str | None = Field(default=None, max_length=63, description="Data hall or building.")
    row: str | None = Field(default=None, max_length=63, description="Row in the hall.")
    position: str | None = Field(default=None, max_length=63, description="Position in the row.")


class RackSpec(Model):
    cluster_ref: ClusterRef
    location: Location | None = Field(default=None, description="Where the rack stands.")
    max_power_watts: int = Field(
        gt=0,
        le=MAX_RACK_WATTS,
        description="Feed and cooling rating of the rack, in watts: it is never given more.",
    )
    priority: int = Field(
        default=kinds.DEFAULT_RACK_PRIORITY,
        ge=0,
        le=1000,
        description="0 to 1000: higher priority racks get their share of the site's power first.",
    )
    power_domain_ref: ObjectName | None = Field(
        default=None,
        description="The Electrical PowerDomain that feeds the rack (its RPP or PDU); only the site's "
        "budget limits it when unset.",
    )
    cooling_domain_ref: ObjectName | None = Field(
        default=None,
        description="The Cooling PowerDomain that takes its heat (its CDU or loop); none when unset.",
    )


class RackPowerStatus(Model):
    budget_watts: int = Field(default=0, ge=0, description="Power allocated to the rack, in watts.")
    floor_watts: int = Field(default=0, ge=0, description="Sum of node floors, in watts.")
    demand_watts: int = Field(
        default=0, ge=0, description="Sum of node demands, capped at maxPowerWatts, in watts."
    )
    measured_watts: MeasuredNodesWatts = 0
    limited_by: str | None = Field(
        default=None,
        max_length=253,
        description="When the budget is below demand: the site or PowerDomain that limited it first.",
    )
    limits_confirmed: int = limits_confirmed_field("rack")


class RackStatus(StatusBase):
    nodes: int = Field(default=0, ge=0, description="GPU nodes in the rack.")
    gpus: GPUCount = Field(default_factory=GPUCount, description="GPU counts.")
    power: RackPowerStatus = Field(default_factory=RackPowerStatus, description="Power figures.")


class Rack(Resource):
    """A rack: power feed and cooling rating and priority; holds GPU nodes."""

    kind_info = KindInfo.of(
        kinds.RACK,
        [
            column("Cluster", ".spec.clusterRef", description="The site."),
            column("Priority", ".spec.priority", "integer", "Higher gets power first."),
            column("Nodes", ".status.nodes", "integer", "GPU nodes in the rack.", priority=1),
            column("Healthy", ".status.gpus.healthy", "integer", "GPUs counted healthy."),
            column("GPUs", ".status.gpus.total", "integer", "GPUs in total."),
            column("Budget-W", ".status.power.budgetWatts", "integer", "Power allocated to the rack."),
            column("Demand-W", ".status.power.demandWatts", "integer", "What its nodes ask for, capped."),
            column(
                "Floor-W", ".status.power.floorWatts", "integer", "Least its nodes can run at.", priority=1
            ),
            column("Measured-W", ".status.power.measuredWatts", "integer", "Measured power.", priority=1),
            column("Max-W", ".spec.maxPowerWatts", "integer", "Feed and cooling rating.", priority=1),
            column("Power-Domain", ".spec.powerDomainRef", description="Electrical domain feeding it.",
                   priority=1),
            column("Cooling-Domain", ".spec.coolingDomainRef", description="Cooling domain taking its heat.",
                   priority=1),
            column("Limited-By", ".status.power.limitedBy", description="What limits its budget.",
                   priority=1),
            CONFIRMED_COLUMN,
            condition_column("Capped", "PowerCapped", "Budget below demand.", priority=1),
            condition_column("Over-Budget", "OverBudget", "Measured above budget.", priority=1),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["Rack"] = Field(default="Rack", description="Kind of the object.")
    spec: RackSpec = Field(description="Desired state of the rack.")
    status: RackStatus | None = Field(default=None, description="Observed state of the rack.")
