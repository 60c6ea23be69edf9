"""MemoryPool and MemoryClaim: pools of HBM, DRAM or CXL memory and the claims bound to them."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from stargate_operator import kinds
from stargate_operator.api.common import (
    AGE_COLUMN,
    MAX_POOL_BYTES,
    MAX_PRIORITY_MAGNITUDE,
    READY_COLUMN,
    ClusterRef,
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

_CXL_NEEDS_CAPACITY = "a CXL pool needs capacityBytes (the appliance's size)"
_SHARE_WITH_CAPACITY = (
    "sharePercent applies only to a pool sized from its nodes; leave it unset (100) when capacityBytes is set"
)


class MemoryPoolSpec(Model):
    model_config = with_cel(
        cel_rule(
            "self.tier != 'CXL' || has(self.capacityBytes)",
            _CXL_NEEDS_CAPACITY,
            ".capacityBytes",
            "FieldValueRequired",
        ),
        cel_rule(
            "!has(self.capacityBytes) || !has(self.sharePercent) || self.sharePercent == 100",
            _SHARE_WITH_CAPACITY,
            ".sharePercent",
        ),
    )

    cluster_ref: ClusterRef
    tier: Literal["HBM", "DRAM", "CXL"] = Field(
        description="Memory tier: HBM (GPU memory), DRAM (host memory) or CXL (a memory appliance)."
    )
    rack_ref: ObjectName | None = Field(
        default=None, description="Only this rack's nodes are members; all the site's nodes when unset."
    )
    capacity_bytes: int | None = Field(
        default=None,
        gt=0,
        le=MAX_POOL_BYTES,
        description="Fixed size in bytes (required for CXL); derived from the member nodes when unset.",
    )
    share_percent: int = Field(
        default=kinds.DEFAULT_SHARE_PERCENT,
        ge=1,
        le=100,
        description="1 to 100: share of the member nodes' memory of the tier that the pool holds.",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        if self.tier == "CXL" and self.capacity_bytes is None:
            raise cross_field("capacityBytes", _CXL_NEEDS_CAPACITY)
        if self.capacity_bytes is not None and self.share_percent != 100:
            raise cross_field("sharePercent", _SHARE_WITH_CAPACITY)
        return self


class ClaimCounts(Model):
    bound: int = Field(default=0, ge=0, description="Claims bound to the pool.")
    pending: int = Field(default=0, ge=0, description="Claims waiting for room.")


class MemoryPoolStatus(StatusBase):
    capacity_bytes: int = Field(default=0, ge=0, description="Capacity of the pool, in bytes.")
    allocated_bytes: int = Field(default=0, ge=0, description="Bytes bound to claims.")
    available_bytes: int = Field(default=0, ge=0, description="Capacity minus allocated.")
    claims: ClaimCounts = Field(default_factory=ClaimCounts, description="Claims by phase.")


class MemoryPool(Resource):
    """A pool of HBM, DRAM or CXL memory that MemoryClaims bind to."""

    kind_info = KindInfo.of(
        kinds.MEMORY_POOL,
        [
            column("Cluster", ".spec.clusterRef", description="The site."),
            column("Tier", ".spec.tier", description="HBM, DRAM or CXL."),
            column("Rack", ".spec.rackRef", description="Only this rack's nodes, if set.", priority=1),
            column("Capacity", ".status.capacityBytes", "integer", "Capacity in bytes."),
            column("Allocated", ".status.allocatedBytes", "integer", "Bytes bound to claims."),
            column("Available", ".status.availableBytes", "integer", "Capacity minus allocated."),
            column("Bound", ".status.claims.bound", "integer", "Claims bound."),
            column("Pending", ".status.claims.pending", "integer", "Claims waiting for room."),
            condition_column("Exhausted", "Exhausted", "Nothing pending fits.", priority=1),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["MemoryPool"] = Field(default="MemoryPool", description="Kind of the object.")
    spec: MemoryPoolSpec = Field(description="Desired state of the pool.")
    status: MemoryPoolStatus | None = Field(default=None, description="Observed state of the pool.")


class MemoryClaimSpec(Model):
    pool_ref: ObjectName = Field(description="Name of the MemoryPool in this namespace.")
    size_bytes: int = Field(gt=0, le=MAX_POOL_BYTES, description="Bytes wanted (more than 0).")
    priority: int = Field(
        default=kinds.DEFAULT_CLAIM_PRIORITY,
        ge=-MAX_PRIORITY_MAGNITUDE,
        le=MAX_PRIORITY_MAGNITUDE,
        description="Higher priority claims bind first and are evicted last; then older first.",
    )


class MemoryClaimStatus(StatusBase):
    phase: Literal["Pending", "Bound"] | None = Field(default=None, description="Pending or Bound.")
    allocated_bytes: int | None = Field(default=None, ge=0, description="Bytes bound to this claim.")
    bound_at: Timestamp | None = Field(default=None, description="When the claim was bound (RFC 3339).")


class MemoryClaim(Resource):
    """A request for bytes from a MemoryPool, bound by priority and age."""

    kind_info = KindInfo.of(
        kinds.MEMORY_CLAIM,
        [
            column("Pool", ".spec.poolRef", description="The pool."),
            column("Size", ".spec.sizeBytes", "integer", "Bytes wanted."),
            column("Priority", ".spec.priority", "integer", "Higher binds first, is evicted last."),
            column("Phase", ".status.phase", description="Pending or Bound."),
            column("Allocated", ".status.allocatedBytes", "integer", "Bytes bound.", priority=1),
            column("Bound-At", ".status.boundAt", "date", "When it was bound.", priority=1),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["MemoryClaim"] = Field(default="MemoryClaim", description="Kind of the object.")
    spec: MemoryClaimSpec = Field(description="Desired state of the claim.")
    status: MemoryClaimStatus | None = Field(default=None, description="Observed state of the claim.")
