"""GridEvent: what a utility or aggregator asks of a site, on a schedule.

An OpenADR 3 event or a demand-response dispatch as one object: the site (`clusterRef`), the
Electrical PowerDomain it targets (one utility feed; the whole site when unset), when it applies
(`start`, `end`), and what it asks: either `reducePercent` of the constraint's capacity or an
absolute `limitWatts`. The operator reports whether the site met it (condition Met).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from stargate_operator import kinds
from stargate_operator.api.common import (
    AGE_COLUMN,
    MAX_SITE_WATTS,
    READY_COLUMN,
    ClusterRef,
    KindInfo,
    Model,
    ObjectName,
    Resource,
    StatusBase,
    Timestamp,
    cel_rule,
    check_exactly_one,
    column,
    condition_column,
    cross_field,
    exactly_one_rules,
    with_cel,
)

_TARGET = ("reducePercent", "limitWatts")  # exactly one of them
_END_AFTER_START = "end must be after start"

Phase = Literal["Scheduled", "Active", "Completed"]


class GridEventSpec(Model):
    model_config = with_cel(
        *exactly_one_rules(*_TARGET),
        # date-time strings are timestamps in the API server's CEL: compared as instants
        cel_rule("!has(self.end) || self.end > self.start", _END_AFTER_START, ".end"),
    )

    cluster_ref: ClusterRef
    power_domain_ref: ObjectName | None = Field(
        default=None,
        description="The Electrical PowerDomain the event targets (e.g. one utility feed); the whole "
        "site when unset.",
    )
    start: Timestamp = Field(description="RFC 3339 time from which the event applies.")
    end: Timestamp | None = Field(
        default=None,
        description="RFC 3339 time, after start, at which it stops applying; open-ended when unset.",
    )
    reduce_percent: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="1 to 100: share of the constraint's capacity to shed while active (the site's "
        "budget as a curtailment, or the domain's usableWatts); or give limitWatts.",
    )
    limit_watts: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SITE_WATTS,
        description="At most this many watts beneath the constraint while active; or give reducePercent.",
    )
    reason: str | None = Field(
        default=None, max_length=1024, description="Why, for people: the programme, the grid condition."
    )
    source: str | None = Field(
        default=None,
        max_length=1024,
        description="Who asked and their id for it, e.g. the OpenADR VTN and event id, or the "
        "aggregator's dispatch id.",
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        check_exactly_one(self, *_TARGET)
        if self.end is not None and not self.end > self.start:
            raise cross_field("end", f"{_END_AFTER_START} ({self.end.isoformat()} is not after "
                                     f"{self.start.isoformat()})")
        return self


class GridEventStatus(StatusBase):
    phase: Phase | None = Field(
        default=None, description="Scheduled (before start), Active (start <= now < end) or Completed."
    )
    target_watts: int | None = Field(
        default=None,
        ge=0,
        description="The capacity this event sets on its constraint while active, in watts.",
    )
    allocated_watts: int | None = Field(
        default=None, ge=0,
        description="Sum of the rack budgets beneath its constraint while active (as it ended, once "
        "completed).",
    )
    measured_watts: int | None = Field(
        default=None, ge=0,
        description="Measured power beneath its constraint while active (as it ended once completed).",
    )
    applied_at: Timestamp | None = Field(
        default=None,
        description="When the operator put the event's cap in place (at its start, or when it was created "
        "or became valid), to the millisecond.",
    )
    lifted_at: Timestamp | None = Field(
        default=None, description="When the operator lifted the event's cap (at its end, or when it was "
        "rescheduled or broken), to the millisecond.",
    )


class GridEvent(Resource):
    """A demand-response event from the grid: a cap on the site or one feed, from start to end."""

    kind_info = KindInfo.of(
        kinds.GRID_EVENT,
        [
            column("Cluster", ".spec.clusterRef", description="The site."),
            column("Domain", ".spec.powerDomainRef",
                   description="The targeted PowerDomain; empty: the site."),
            column("Start", ".spec.start", description="When it starts to apply."),
            column("End", ".spec.end", description="When it stops applying; empty: open-ended."),
            column("Phase", ".status.phase", description="Scheduled, Active or Completed."),
            column("Target-W", ".status.targetWatts", "integer", "The capacity it sets while active."),
            column("Measured-W", ".status.measuredWatts", "integer", "Measured power beneath it."),
            condition_column("Met", "Met", "Allocation and measured power within the target."),
            READY_COLUMN,
            column("Reduce-%", ".spec.reducePercent", "integer", "Share of capacity to shed.", priority=1),
            column("Limit-W", ".spec.limitWatts", "integer", "Absolute cap.", priority=1),
            column("Allocated-W", ".status.allocatedWatts", "integer", "Budgets beneath it.", priority=1),
            column("Source", ".spec.source", description="Who asked, and their id.", priority=1),
            AGE_COLUMN,
        ],
    )

    kind: Literal["GridEvent"] = Field(default="GridEvent", description="Kind of the object.")
    spec: GridEventSpec = Field(description="What the grid asks, and when.")
    status: GridEventStatus | None = Field(default=None, description="Observed state of the event.")
