"""PowerLimitSlice: the per-GPU limits of up to a few hundred nodes, in one object.

The operator writes one slice per group of whole racks; each node agent watches its own slice by
name. A curtailment then costs one write per slice instead of one per node or rack, and each
write is small beside what it costs the API server anyway.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue

from stargate_operator import kinds
from stargate_operator.api.common import (
    AGE_COLUMN,
    MAX_GPU_WATTS,
    KindInfo,
    Model,
    Resource,
    StatusBase,
    Timestamp,
    column,
)

PerGPULimit = Annotated[int, Field(ge=0, le=MAX_GPU_WATTS, description="Per-GPU power limit, in watts.")]
_ATOMIC: dict[str, JsonValue] = {"x-kubernetes-map-type": "atomic"}


class SliceRamp(Model):
    """A move from `from` to `limits` between two instants, which the agents interpolate."""

    from_: dict[str, PerGPULimit] = Field(
        alias="from",
        description="GPUNode name to its per-GPU limit at startAt. A node absent here starts at its "
        "entry in limits. Replaced as a whole (x-kubernetes-map-type atomic).",
        json_schema_extra=_ATOMIC,
    )
    start_at: Timestamp = Field(
        description="When the ramp starts: until then each node holds its from entry."
    )
    end_at: Timestamp = Field(
        description="When the ramp ends: from then on each node holds its limits entry; in between an "
        "agent moves linearly from one to the other."
    )


class PowerLimitSliceSpec(Model):
    limits: dict[str, PerGPULimit] = Field(
        default_factory=dict,
        description="GPUNode name to the per-GPU power limit its agent enforces, in watts. Replaced as "
        "a whole (x-kubernetes-map-type atomic).",
        json_schema_extra=_ATOMIC,
    )
    safe_limits: dict[str, PerGPULimit] | None = Field(
        default=None,
        description="GPUNode name to its safe limit (its limit with no oversubscription anywhere), only "
        "for the nodes whose safe limit is below their limits entry: a node absent here is safe at its "
        "limit. An agent that sees the operator's Lease lapse applies it. Replaced as a whole.",
        json_schema_extra=_ATOMIC,
    )
    ramp: SliceRamp | None = Field(
        default=None, description="A ramp towards limits; absent: limits hold from the moment they are read."
    )
    failsafe_exit_watts_per_second: float | None = Field(
        default=None, gt=0,
        description="Per GPU: how fast an agent leaving the fail-safe raises each GPU from its safe limit "
        "back to its limit, so that the site (and every power domain with rampUpWattsPerSecond) rises "
        "no faster than its up rate when all its agents leave together: the slowest of those rates "
        "divided by the GPUs beneath it, rounded down to two significant digits. Absent: no up rate; "
        "agents leave spread over their --failsafe-spread.",
    )
    revision: int = Field(
        default=0, ge=0, description="Grows with every change of limits, safeLimits or ramp."
    )


class PowerLimitSliceStatus(StatusBase):
    nodes: int = Field(default=0, ge=0, description="GPU nodes in the slice.")
    confirmed: int = Field(
        default=0, ge=0,
        description="Nodes whose agent reports an enforced limit at or below the highest limit assigned "
        "to it within the confirmation grace period.",
    )
    unconfirmed: int = Field(
        default=0, ge=0, description="Nodes not confirmed (still inside the grace period, or past it).",
    )


class PowerLimitSlice(Resource):
    """The per-GPU power limits of a group of whole racks, written only by the operator."""

    kind_info = KindInfo.of(
        kinds.POWER_LIMIT_SLICE,
        [
            column("Nodes", ".status.nodes", "integer", "GPU nodes in the slice."),
            column("Revision", ".spec.revision", "integer", "Grows with every change of its limits."),
            column("Confirmed", ".status.confirmed", "integer", "Nodes whose agent confirmed its limit."),
            AGE_COLUMN,
        ],
    )

    kind: Literal["PowerLimitSlice"] = Field(default="PowerLimitSlice", description="Kind of the object.")
    spec: PowerLimitSliceSpec = Field(description="The limits, as the operator assigns them.")
    status: PowerLimitSliceStatus | None = Field(default=None, description="How many of them are confirmed.")
