"""PowerDomain: one node of a site's power or cooling tree.

A utility feed, substation, switchboard, UPS, floor PDU, RPP, busway, or a cooling loop / CDU. Its
rating is given either in watts or, for an electrical feed, by voltage, amperage, phases and power
factor (NetBox's formula); `deratePercent` is the continuous-load limit (NEC's 80 % rule).
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
    cel_rule,
    check_exactly_one,
    column,
    condition_column,
    cross_field,
    exactly_one_rules,
    with_cel,
)
from stargate_operator.api.oversubscription import CappingStatus, Oversubscription
from stargate_operator.api.ramp import DOWN, UP, ramp_field

# No real feed reaches these: 1 MV is above the highest transmission voltage (765 kV) and 100 kA
# above the largest low-voltage bus, so a typo is refused and V x A x sqrt(3) stays far below int64.
MAX_VOLTAGE = 1_000_000
MAX_AMPERAGE = 100_000
# A path is at most this deep: a real single-line diagram has six or seven levels.
MAX_PATH = 64

_PHASES_RULE = "self.phases == 1 || self.phases == 3"
_PHASES_MESSAGE = "phases must be 1 or 3"
_PF_RULE = "self.powerFactor > 0.0 && self.powerFactor <= 1.0"
_PF_MESSAGE = "powerFactor must be more than 0 and at most 1"
_RATING = ("ratingWatts", "electrical")  # exactly one of them
_OWN_PARENT = "a domain cannot be its own parent"


class Electrical(Model):
    """A feed described as NetBox describes one: rating = V x A (x sqrt 3 for three phases) x PF."""

    model_config = with_cel(
        cel_rule(_PHASES_RULE, _PHASES_MESSAGE, ".phases", "FieldValueInvalid"),
        cel_rule(_PF_RULE, _PF_MESSAGE, ".powerFactor"),
    )

    voltage: int = Field(
        gt=0, le=MAX_VOLTAGE, description="Voltage in volts (line to line for three phases), e.g. 13800."
    )
    amperage: int = Field(gt=0, le=MAX_AMPERAGE, description="Current rating in amperes, e.g. 40.")
    phases: int = Field(
        default=kinds.DEFAULT_PHASES, ge=1, le=3, description="1 or 3 (default): single or three phase."
    )
    power_factor: float = Field(
        default=kinds.DEFAULT_POWER_FACTOR,
        description="More than 0, at most 1 (default): real power over apparent power.",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        if self.phases not in (1, 3):
            raise cross_field("phases", f"{_PHASES_MESSAGE} (got {self.phases})")
        if not 0 < self.power_factor <= 1:
            raise cross_field("powerFactor", f"{_PF_MESSAGE} (got {self.power_factor})")
        return self


class Meter(Model):
    """Where the domain's measured power comes from when a meter reads it."""

    query: str = Field(
        min_length=1,
        max_length=4096,
        description="A PromQL expression whose value is the domain's power in watts, e.g. "
        'sum(pdu_active_power_watts{pdu="pdu-3"}); one series, or the sum of those it returns.',
    )


class PowerDomainSpec(Model):
    model_config = with_cel(*exactly_one_rules(*_RATING))

    cluster_ref: ClusterRef
    parent_ref: ObjectName | None = Field(
        default=None,
        description=(
            "The domain directly above, same site and same type; directly under the site when unset."
        ),
    )
    type: kinds.DomainType = Field(
        default=kinds.DEFAULT_DOMAIN_TYPE,
        description="Electrical (default), or Cooling: a cooling domain's watts are IT heat it can reject.",
    )
    role: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="What it is, for columns and metric labels only: Utility, Switchboard, UPS, FloorPDU, "
        "RPP, Busway, CDU ...",
    )
    rating_watts: int | None = Field(
        default=None, gt=0, le=MAX_SITE_WATTS, description="Rating in watts; or give electrical instead."
    )
    electrical: Electrical | None = Field(
        default=None, description="Rating from voltage, amperage, phases and power factor; or ratingWatts."
    )
    derate_percent: int = Field(
        default=kinds.DEFAULT_DERATE_PERCENT,
        ge=1,
        le=100,
        description="1 to 100 (default 80, NEC's continuous-load rule; 100 for an assembly listed for "
        "continuous duty): usableWatts = rating x deratePercent / 100.",
    )
    oversubscription: Oversubscription | None = Field(
        default=None,
        description="Allocate above usableWatts on measured draw, capping reactively once the draw nears "
        "usableWatts; "
        "none when unset.",
    )
    ramp_down_watts_per_second: int | None = ramp_field(*DOWN)
    ramp_up_watts_per_second: int | None = ramp_field(*UP)
    meter: Meter | None = Field(
        default=None,
        description="A meter of this domain's power (a PDU or busway meter scraped by Prometheus); where "
        "given, its reading is the domain's measuredWatts instead of the sum of its nodes.",
    )

    @model_validator(mode="after")
    def _one_rating(self) -> Self:
        check_exactly_one(self, *_RATING)
        return self


class PowerDomainStatus(StatusBase):
    rating_watts: int | None = Field(default=None, ge=0, description="Rating, in watts.")
    usable_watts: int | None = Field(
        default=None, ge=0, description="Rating x deratePercent / 100: what may be allocated beneath."
    )
    racks: int | None = Field(default=None, ge=0, description="Racks beneath it, at any depth.")
    floor_watts: int | None = Field(default=None, ge=0, description="Sum of the floors of the racks beneath.")
    demand_watts: int | None = Field(
        default=None, ge=0, description="Sum of the demands of the racks beneath, in watts."
    )
    allocated_watts: int | None = Field(
        default=None, ge=0, description="Sum of the budgets of the racks beneath, in watts."
    )
    measured_watts: int | None = Field(
        default=None, ge=0, description="Sum of measured power of the racks beneath, in watts."
    )
    headroom_watts: int | None = Field(
        default=None, description="usableWatts - allocatedWatts; negative when overcommitted."
    )
    path: list[ObjectName] = Field(
        default_factory=list,
        max_length=MAX_PATH,
        description="Names from the top of its tree down to itself.",
    )
    capping: CappingStatus | None = Field(
        default=None, description="Reactive capping, while spec.oversubscription is set."
    )


class PowerDomain(Resource):
    """A node of the site's power or cooling tree: a feed, switchboard, PDU, RPP or cooling loop."""

    model_config = with_cel(
        cel_rule(
            "!has(self.spec.parentRef) || self.spec.parentRef != self.metadata.name",
            _OWN_PARENT,
            ".spec.parentRef",
        ),
    )

    kind_info = KindInfo.of(
        kinds.POWER_DOMAIN,
        [
            column("Type", ".spec.type", description="Electrical or Cooling."),
            column("Role", ".spec.role", description="Utility, Switchboard, FloorPDU, RPP, CDU ..."),
            column("Parent", ".spec.parentRef", description="The domain directly above."),
            column("Usable-W", ".status.usableWatts", "integer", "Rating after derating."),
            column("Allocated-W", ".status.allocatedWatts", "integer", "Budgets of the racks beneath."),
            column("Measured-W", ".status.measuredWatts", "integer", "Measured power beneath."),
            column("Headroom-W", ".status.headroomWatts", "integer", "Usable minus allocated."),
            column("Racks", ".status.racks", "integer", "Racks beneath, at any depth."),
            column("Rating-W", ".status.ratingWatts", "integer", "Rating before derating.", priority=1),
            column("Floor-W", ".status.floorWatts", "integer", "Floors of the racks beneath.", priority=1),
            column("Demand-W", ".status.demandWatts", "integer", "Demand of the racks beneath.", priority=1),
            condition_column("Overcommitted", "Overcommitted", "Floors beneath exceed usable.", priority=1),
            condition_column("Constrained", "Constrained", "Demand beneath exceeds usable.", priority=1),
            condition_column("Capping", "Capping", "Allocating within usable on measured draw.", priority=1),
            READY_COLUMN,
            AGE_COLUMN,
        ],
    )

    kind: Literal["PowerDomain"] = Field(default="PowerDomain", description="Kind of the object.")
    spec: PowerDomainSpec = Field(description="Desired state of the domain.")
    status: PowerDomainStatus | None = Field(default=None, description="Observed state of the domain.")

    @model_validator(mode="after")
    def _not_own_parent(self) -> Self:
        if self.spec.parent_ref is not None and self.spec.parent_ref == self.metadata.name:
            raise cross_field("spec.parentRef", f"{_OWN_PARENT} ({self.metadata.name})")
        return self
