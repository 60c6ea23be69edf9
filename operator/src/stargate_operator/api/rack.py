"""Rack: a power feed and cooling loop holding GPU nodes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stargate_operator.api.common import (
    AGE_COLUMN,
    READY_COLUMN,
    KindInfo,
    Model,
    ObjectName,
    Resource,
    StatusBase,
    column,
)
from stargate_operator.api.cluster import GPUCount


class Location(Model):
    hall: str | None = Field(default=None, max_length=63, description="Data hall or building.")
    row: str | None = Field(default=None, max_length=63, description="Row in the hall.")
    position: str | None = Field(default=None, max_length=63, description="Position in the row.")


class RackSpec(Model):
    cluster_ref: ObjectName = Field(description="Name of the StargateCluster in this namespace.")
    location: Location | None = Field(default=None, description="Where the rack stands.")
    max_power_watts: int = Field(gt=0, description="Feed and cooling rating of the rack, in watts.")
    priority: int = Field(
        default=500, ge=0, le=1000, description="Higher priority racks get their power first."
    )


class RackPowerStatus(Model):
    budget_watts: int = Field(default=0, ge=0, description="Power allocated to the rack.")
    floor_watts: int = Field(default=0, ge=0, description="Sum of node floors.")
    demand_watts: int = Field(default=0, ge=0, description="Sum of node demands, capped at the rating.")
    measured_watts: int = Field(default=0, ge=0, description="Sum of measured node power.")


class RackStatus(StatusBase):
    nodes: int = Field(default=0, ge=0, description="GPU nodes in the rack.")
    gpus: GPUCount = Field(default_factory=GPUCount, description="GPU counts.")
    power: RackPowerStatus = Field(default_factory=RackPowerStatus, description="Power figures.")


class Rack(Resource):
    """A rack: power feed and cooling rating and priority; holds GPU nodes."""

    kind_info = KindInfo(
        kind="Rack",
        plural="racks",
        singular="rack",
        short_names=["rk"],
        printer_columns=[
            column("Cluster", ".spec.clusterRef"),
            column("Priority", ".spec.priority", "integer"),
            column("Healthy", ".status.gpus.healthy", "integer"),
            column("GPUs", ".status.gpus.total", "integer"),
            column("Budget-W", ".status.power.budgetWatts", "integer"),
            column("Demand-W", ".status.power.demandWatts", "integer"),
            column("Measured-W", ".status.power.measuredWatts", "integer", priority=1),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["Rack"] = Field(default="Rack", description="Kind of the object.")
    spec: RackSpec = Field(description="Desired state of the rack.")
    status: RackStatus | None = Field(default=None, description="Observed state of the rack.")
