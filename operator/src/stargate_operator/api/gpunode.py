"""GPUNode: one server with its GPUs, as the power allocator sees it."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from stargate_operator import kinds
from stargate_operator.api.common import (
    AGE_COLUMN,
    MAX_GPU_MEMORY_BYTES,
    MAX_GPU_WATTS,
    MAX_HOST_MEMORY_BYTES,
    MAX_NODE_BASE_WATTS,
    NAME_PATTERN,
    READY_COLUMN,
    KindInfo,
    Model,
    ObjectName,
    Resource,
    StatusBase,
    Timestamp,
    cel_rule,
    column,
    condition_column,
    cross_field,
    with_cel,
)

_MIN_NOT_ABOVE_MAX = "minPowerWatts must not exceed maxPowerWatts"


class GPUSpec(Model):
    model_config = with_cel(
        cel_rule("self.minPowerWatts <= self.maxPowerWatts", _MIN_NOT_ABOVE_MAX, ".minPowerWatts"),
    )

    model: str = Field(
        min_length=1, max_length=63, description="GPU model, e.g. H100-SXM, H200-SXM, B200, GB200."
    )
    count: int = Field(ge=1, le=16, description="GPUs in the node (1 to 16).")
    memory_bytes: int = Field(
        gt=0, le=MAX_GPU_MEMORY_BYTES, description="HBM per GPU, in bytes (e.g. 80 GB on an H100)."
    )
    min_power_watts: int = Field(
        gt=0, le=MAX_GPU_WATTS, description="Lowest settable power limit per GPU, in watts."
    )
    max_power_watts: int = Field(
        gt=0, le=MAX_GPU_WATTS, description="Highest settable power limit per GPU (its TDP), in watts."
    )
    requested_power_watts: int | None = Field(
        default=None,
        gt=0,
        le=MAX_GPU_WATTS,
        description=(
            "Power limit wanted per GPU, in watts; maxPowerWatts when unset. "
            "Clamped to minPowerWatts..maxPowerWatts, not refused."
        ),
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Self:
        if self.min_power_watts > self.max_power_watts:
            raise cross_field(
                "minPowerWatts", f"{_MIN_NOT_ABOVE_MAX} ({self.min_power_watts} > {self.max_power_watts})"
            )
        return self


class GPUNodeSpec(Model):
    rack_ref: ObjectName = Field(description="Name of the Rack in this namespace.")
    node_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="The Kubernetes Node this server is, if any (the node agent finds its GPUNode by it).",
    )
    gpu: GPUSpec = Field(description="The node's GPUs.")
    base_power_watts: int = Field(
        default=kinds.DEFAULT_BASE_POWER_WATTS,
        ge=0,
        le=MAX_NODE_BASE_WATTS,
        description="Power of everything on the node but the GPUs (CPUs, NICs, fans), in watts.",
    )
    host_memory_bytes: int = Field(
        default=kinds.DEFAULT_HOST_MEMORY_BYTES, ge=0, le=MAX_HOST_MEMORY_BYTES,
        description="Host DRAM of the node, in bytes.",
    )
    maintenance: bool = Field(
        default=False, description="In maintenance: no healthy GPUs, demand equals floor."
    )
    # Node discovery's own fields (core/discovery.py), so that it never takes spec.maintenance,
    # which stays the user's: unset on hand-written GPUNodes, and then they mean nothing.
    cordoned: bool | None = Field(
        default=None,
        description=(
            "The Kubernetes Node is cordoned (its spec.unschedulable), as node discovery saw it: "
            "counts as maintenance. Set by discovery, separate from maintenance, which stays yours."
        ),
    )
    node_ready: bool | None = Field(
        default=None,
        description=(
            "The Kubernetes Node's Ready condition, as node discovery saw it: false (NotReady or "
            "Unknown) counts 0 healthy GPUs. Unset: ready."
        ),
    )


class Telemetry(Model):
    power_watts: int | None = Field(default=None, ge=0, description="Measured node power, in watts.")
    healthy_gpus: int | None = Field(
        default=None,
        ge=0,
        alias="healthyGPUs",
        description=(
            "GPUs the agent sees healthy. Deliberately not checked against spec.gpu.count: "
            "the operator tolerates (and clamps) nonsense telemetry rather than losing it."
        ),
    )
    hbm_used_bytes: int | None = Field(default=None, ge=0, description="HBM in use on the node, in bytes.")
    peak_power_watts: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Highest node power sample over the agent's report window, in watts (NVML sampled at 1 Hz or "
            "faster, base power added as in powerWatts); reactive capping judges it."
        ),
    )
    observed_at: Timestamp | None = Field(
        default=None, description="When the agent took the reading (RFC 3339)."
    )
    # The power range NVML reports (nvmlDeviceGetPowerManagementLimitConstraints and ...DefaultLimit),
    # per GPU, as every GPU of the node accepts it; node discovery takes it over the product table.
    min_power_watts: int | None = Field(
        default=None,
        gt=0,
        le=MAX_GPU_WATTS,
        description="Lowest power limit every GPU of the node accepts (the highest of their minimums), W.",
    )
    max_power_watts: int | None = Field(
        default=None,
        gt=0,
        le=MAX_GPU_WATTS,
        description="Highest power limit every GPU of the node accepts (the lowest of their maximums), W.",
    )
    default_power_watts: int | None = Field(
        default=None,
        gt=0,
        le=MAX_GPU_WATTS,
        description="The GPUs' default power limit (the lowest across the node's GPUs), in watts.",
    )
    # Proof of enforcement: what the GPUs enforce, after the agent applied its limit.
    enforced_limit_watts: int | None = Field(
        default=None,
        ge=0,
        le=MAX_GPU_WATTS,
        description=(
            "The per-GPU power limit the GPUs enforce, in watts: NVML's enforced power limit "
            "(nvmlDeviceGetEnforcedPowerLimit), the highest of the node's GPUs (the limit holds only where "
            "it holds on every GPU); a simulated node reports "
            "what it applied. The operator compares it with powerLimitWatts (condition PowerLimitApplied)."
        ),
    )


    shadow_limit_watts: int | None = Field(
        default=None,
        ge=0,
        le=MAX_GPU_WATTS,
        description=(
            "In shadow mode (its site's spec.power.enforcement Observe): the per-GPU limit the agent "
            "would apply, fail-safe included, in watts; it applies none."
        ),
    )


class GPUNodeStatus(StatusBase):
    power_limit_watts: int | None = Field(
        default=None, ge=0, description="Per-GPU power limit the node agent must enforce, in watts."
    )
    allocated_watts: int | None = Field(
        default=None,
        ge=0,
        description="Power allocated to the node: base + count x powerLimitWatts, in watts.",
    )
    floor_watts: int | None = Field(
        default=None, ge=0, description="Node floor: basePowerWatts + count x minPowerWatts, in watts."
    )
    demand_watts: int | None = Field(
        default=None,
        ge=0,
        description="Node demand: basePowerWatts + count x requested (clamped); the floor in maintenance.",
    )
    healthy_gpus: int | None = Field(
        default=None,
        ge=0,
        alias="healthyGPUs",
        description=(
            "GPUs counted healthy: 0 in maintenance or with stale telemetry, telemetry.healthyGPUs "
            "(at most count) when fresh, all of them when there is no telemetry."
        ),
    )
    power_enforcement: Literal["Enforce", "Observe"] | None = Field(
        default=None,
        description=(
            "Observe while its site is in shadow mode: its agent reports the limit it would apply "
            "and applies none. Absent while limits are enforced."
        ),
    )
    safe_limit_watts: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Per-GPU limit under the same tree with no oversubscription (at most powerLimitWatts): what "
            "holds even if every GPU draws its limit. An agent that loses the operator's Lease applies it."
        ),
    )
    power_limit_slice: str | None = Field(
        default=None,
        max_length=253,
        description="The PowerLimitSlice (same namespace) that carries this node's limit: its agent watches "
        "it by name.",
    )
    telemetry: Telemetry | None = Field(
        default=None, description="Written by the node agent, never by the operator."
    )


class GPUNode(Resource):
    """A GPU server: its GPUs, power range and memory; status carries its power limit."""

    kind_info = KindInfo.of(
        kinds.GPU_NODE,
        [
            column("Rack", ".spec.rackRef", description="The rack."),
            column("Model", ".spec.gpu.model", description="GPU model."),
            column("Healthy", ".status.healthyGPUs", "integer", "GPUs counted healthy."),
            column("GPUs", ".spec.gpu.count", "integer", "GPUs in the node."),
            column("Limit-W", ".status.powerLimitWatts", "integer", "Per-GPU power limit to enforce."),
            column("Enforced-W", ".status.telemetry.enforcedLimitWatts", "integer",
                   "Per-GPU limit the GPUs enforce, as the agent reports it.", priority=1),
            column("Allocated-W", ".status.allocatedWatts", "integer", "Power allocated to the node."),
            column("Demand-W", ".status.demandWatts", "integer", "What the node asks for.", priority=1),
            column(
                "Measured-W", ".status.telemetry.powerWatts", "integer", "Measured by the agent.", priority=1
            ),
            column("Maintenance", ".spec.maintenance", "boolean", "In maintenance.", priority=1),
            column("Cordoned", ".spec.cordoned", "boolean", "Its Node is cordoned (discovery).", priority=1),
            condition_column("Stale", "TelemetryStale", "Telemetry older than the threshold.", priority=1),
            condition_column("Applied", "PowerLimitApplied", "The agent reports the limit enforced.",
                             priority=1),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["GPUNode"] = Field(default="GPUNode", description="Kind of the object.")
    spec: GPUNodeSpec = Field(description="Desired state of the node.")
    status: GPUNodeStatus | None = Field(default=None, description="Observed state of the node.")
