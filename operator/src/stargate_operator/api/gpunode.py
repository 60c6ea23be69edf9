"""GPUNode: one server with its GPUs, as the power allocator sees it."""

from __future__ import annotations

from datetime import datetime
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


class GPUSpec(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.minPowerWatts <= self.maxPowerWatts",
                    "message": "minPowerWatts must not exceed maxPowerWatts",
                    "fieldPath": ".minPowerWatts",
                    "reason": "FieldValueInvalid",
                },
            ]
        }
    }

    model: str = Field(min_length=1, max_length=63, description="GPU model, e.g. H100-SXM, H200, GB200.")
    count: int = Field(ge=1, le=16, description="GPUs in the node.")
    memory_bytes: int = Field(gt=0, description="HBM per GPU, in bytes.")
    min_power_watts: int = Field(gt=0, description="Lowest settable power limit per GPU, in watts.")
    max_power_watts: int = Field(gt=0, description="Highest settable power limit per GPU, in watts.")
    requested_power_watts: int | None = Field(
        default=None, gt=0, description="Power limit wanted per GPU; defaults to maxPowerWatts."
    )


class GPUNodeSpec(Model):
    rack_ref: ObjectName = Field(description="Name of the Rack in this namespace.")
    node_name: str | None = Field(
        default=None, min_length=1, max_length=253, description="The Kubernetes Node this describes."
    )
    gpu: GPUSpec = Field(description="The node's GPUs.")
    base_power_watts: int = Field(
        default=0, ge=0, description="Power of everything on the node but the GPUs, in watts."
    )
    host_memory_bytes: int = Field(default=0, ge=0, description="Host DRAM, in bytes.")
    maintenance: bool = Field(
        default=False, description="In maintenance: no healthy GPUs, demand equals floor."
    )


class Telemetry(Model):
    power_watts: int | None = Field(default=None, ge=0, description="Measured node power, in watts.")
    healthy_gpus: int | None = Field(default=None, ge=0, le=16, alias="healthyGPUs", description="GPUs the agent sees healthy.")
    hbm_used_bytes: int | None = Field(default=None, ge=0, description="HBM in use, in bytes.")
    observed_at: datetime | None = Field(default=None, description="When the agent took the reading.")


class GPUNodeStatus(StatusBase):
    power_limit_watts: int | None = Field(
        default=None, ge=0, description="Per-GPU power limit the node agent must enforce."
    )
    allocated_watts: int | None = Field(default=None, ge=0, description="Power allocated to the node.")
    floor_watts: int | None = Field(default=None, ge=0, description="Node floor: base + count x min.")
    demand_watts: int | None = Field(default=None, ge=0, description="Node demand: base + count x requested.")
    healthy_gpus: int | None = Field(
        default=None, ge=0, alias="healthyGPUs", description="GPUs counted healthy."
    )
    telemetry: Telemetry | None = Field(
        default=None, description="Written by the node agent, never by the operator."
    )


class GPUNode(Resource):
    """A GPU server: its GPUs, power range and memory; status carries its power limit."""

    kind_info = KindInfo(
        kind="GPUNode",
        plural="gpunodes",
        singular="gpunode",
        short_names=["gpun"],
        printer_columns=[
            column("Rack", ".spec.rackRef"),
            column("Model", ".spec.gpu.model"),
            column("GPUs", ".spec.gpu.count", "integer"),
            column("Healthy", ".status.healthyGPUs", "integer"),
            column("Limit-W", ".status.powerLimitWatts", "integer"),
            column("Allocated-W", ".status.allocatedWatts", "integer"),
            column("Measured-W", ".status.telemetry.powerWatts", "integer", priority=1),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["GPUNode"] = Field(default="GPUNode", description="Kind of the object.")
    spec: GPUNodeSpec = Field(description="Desired state of the node.")
    status: GPUNodeStatus | None = Field(default=None, description="Observed state of the node.")
