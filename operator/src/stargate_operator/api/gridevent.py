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
_BASIS_NEEDS_PERCENT = "basis applies to reducePercent only"


class GridEventSpec(Model):
    model_config = with_cel(
        *exactly_one_rules(*_TARGET),
        # date-time strings are timestamps in the API server's CEL: compared as instants
        cel_rule("!has(self.end) || self.end > self.start", _END_AFTER_START, ".end"),
        cel_rule("!has(self.basis) || has(self.reducePercent)", _BASIS_NEEDS_PERCENT, ".basis"),
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
    basis: Literal["Capacity", "Baseline"] | None = Field(
        default=None,
        description="What reducePercent is a share of: Capacity (when unset: the constraint's capacity) or "
        "Baseline (the mean measured power beneath it over the 10 minutes before the descent).",
    )
    urgency: Literal["Normal", "Emergency"] | None = Field(
        default=None,
        description="Emergency: the cap applies at start at once, skipping the down ramp; Normal when unset "
        "(with a ramp rate, the power descends so that the target holds at start).",
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
        if self.basis is not None and self.reduce_percent is None:
            raise cross_field("basis", _BASIS_NEEDS_PERCENT)
        if self.end is not None and not self.end > self.start:
            raise cross_field("end", f"{_END_AFTER_START} ({self.end.isoformat()} is not after "
                                     f"{self.start.isoformat()})")
        return self


class Facility(Model):
    """The settlement figures at the site's design PUE: what the facility meter sees."""

    target_watts: int | None = Field(default=None, ge=0, description="targetWatts x design PUE.")
    baseline_watts: int | None = Field(default=None, ge=0, description="baselineWatts x design PUE.")
    measured_watts: int | None = Field(default=None, ge=0, description="measuredWatts x design PUE.")
    shed_watts: int | None = Field(default=None, description="shedWatts x design PUE.")
    shed_watt_hours: float | None = Field(default=None, description="shedWattHours x design PUE.")


class Ledger(Model):
    """The operator's running sums, kept in status so that a restarted operator neither loses the
    baseline nor the energy shed: the power it last saw, and when."""

    at: Timestamp = Field(description="When the operator last added to the sums.")
    watts: int = Field(ge=0, description="Measured power beneath the constraint at that time.")
    baseline_watt_seconds: int = Field(
        default=0, ge=0, description="Measured power integrated over the baseline window so far.")
    baseline_seconds: float = Field(
        default=0, ge=0,
        description="Seconds of the baseline window counted (time under other events left out).")
    shed_watt_seconds: int = Field(default=0, description="(baseline - measured) integrated while active.")


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
    baseline_watts: int | None = Field(
        default=None, ge=0,
        description="Mean measured power beneath the constraint over the 10 minutes before the descent, "
        "leaving out time under other events (the allocation where nothing is measured); fixed once the "
        "descent starts.",
    )
    shed_watts: int | None = Field(
        default=None, description="baselineWatts - measuredWatts while active (as it ended, once completed).")
    shed_watt_hours: float | None = Field(
        default=None,
        description="shedWatts integrated over the active time; frozen when the event completes.")
    ramp_started_at: Timestamp | None = Field(
        default=None,
        description="When the capacity began to descend toward the target (start with no ramp).")
    target_reached_at: Timestamp | None = Field(
        default=None, description="When the capacity reached the target.")
    measured_met_at: Timestamp | None = Field(
        default=None, description="When the measured power beneath was first within the target while active.")
    facility: Facility | None = Field(
        default=None, description="The same figures as facility power, at the site's design PUE.")
    ledger: Ledger | None = Field(
        default=None, description="The operator's running sums for baselineWatts and shedWattHours.")
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
            column("Baseline-W", ".status.baselineWatts", "integer",
                   "Mean measured power before the descent."),
            column("Shed-Wh", ".status.shedWattHours", "number", "Energy shed against the baseline."),
            condition_column("Met", "Met", "Allocation and measured power within the target."),
            READY_COLUMN,
            column("Reduce-%", ".spec.reducePercent", "integer", "Share of capacity to shed.", priority=1),
            column("Limit-W", ".spec.limitWatts", "integer", "Absolute cap.", priority=1),
            column("Allocated-W", ".status.allocatedWatts", "integer", "Budgets beneath it.", priority=1),
            column("Source", ".spec.source", description="Who asked, and their id.", priority=1),
            column("Ramp-Started", ".status.rampStartedAt", description="Descent began.", priority=1),
            column("Target-Reached", ".status.targetReachedAt", description="Capacity at target.",
                   priority=1),
            AGE_COLUMN,
        ],
    )

    kind: Literal["GridEvent"] = Field(default="GridEvent", description="Kind of the object.")
    spec: GridEventSpec = Field(description="What the grid asks, and when.")
    status: GridEventStatus | None = Field(default=None, description="Observed state of the event.")
