"""MemoryPool and MemoryClaim: pools of HBM, DRAM or CXL memory and the claims bound to them."""

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


class MemoryPoolSpec(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.tier != 'CXL' || has(self.capacityBytes)",
                    "message": "a CXL pool needs capacityBytes (the appliance's size)",
                    "fieldPath": ".capacityBytes",
                    "reason": "FieldValueRequired",
                },
            ]
        }
    }

    cluster_ref: ObjectName = Field(description="Name of the StargateCluster in this namespace.")
    tier: Literal["HBM", "DRAM", "CXL"] = Field(description="Memory tier of the pool.")
    rack_ref: ObjectName | None = Field(
        default=None, description="Only this rack's nodes are members; all the site's when unset."
    )
    capacity_bytes: int | None = Field(
        default=None, gt=0, description="Fixed size in bytes; derived from member nodes when unset."
    )
    share_percent: int = Field(
        default=100, ge=1, le=100, description="Share of the member nodes' memory that the pool holds."
    )


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

    kind_info = KindInfo(
        kind="MemoryPool",
        plural="memorypools",
        singular="memorypool",
        short_names=["mpool"],
        printer_columns=[
            column("Cluster", ".spec.clusterRef"),
            column("Tier", ".spec.tier"),
            column("Capacity", ".status.capacityBytes", "integer"),
            column("Allocated", ".status.allocatedBytes", "integer"),
            column("Available", ".status.availableBytes", "integer"),
            column("Bound", ".status.claims.bound", "integer"),
            column("Pending", ".status.claims.pending", "integer"),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["MemoryPool"] = Field(default="MemoryPool", description="Kind of the object.")
    spec: MemoryPoolSpec = Field(description="Desired state of the pool.")
    status: MemoryPoolStatus | None = Field(default=None, description="Observed state of the pool.")


class MemoryClaimSpec(Model):
    pool_ref: ObjectName = Field(description="Name of the MemoryPool in this namespace.")
    size_bytes: int = Field(gt=0, description="Bytes wanted.")
    priority: int = Field(default=0, description="Higher priority claims bind first and are evicted last.")


class MemoryClaimStatus(StatusBase):
    phase: Literal["Pending", "Bound"] | None = Field(default=None, description="Pending or Bound.")
    allocated_bytes: int | None = Field(default=None, ge=0, description="Bytes bound to this claim.")
    bound_at: datetime | None = Field(default=None, description="When the claim was bound.")


class MemoryClaim(Resource):
    """A request for bytes from a MemoryPool, bound by priority and age."""

    kind_info = KindInfo(
        kind="MemoryClaim",
        plural="memoryclaims",
        singular="memoryclaim",
        short_names=["mclaim"],
        printer_columns=[
            column("Pool", ".spec.poolRef"),
            column("Size", ".spec.sizeBytes", "integer"),
            column("Priority", ".spec.priority", "integer"),
            column("Phase", ".status.phase"),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["MemoryClaim"] = Field(default="MemoryClaim", description="Kind of the object.")
    spec: MemoryClaimSpec = Field(description="Desired state of the claim.")
    status: MemoryClaimStatus | None = Field(default=None, description="Observed state of the claim.")
