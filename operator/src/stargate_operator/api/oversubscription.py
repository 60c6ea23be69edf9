"""Oversubscription on measured draw: the spec a site or a PowerDomain sets, and
the capping state the operator keeps in its status.

Shared by StargateCluster (`spec.power.oversubscription`, `status.power.capping`) and PowerDomain
(`spec.oversubscription`, `status.capping`). The state lives in status so that a restarted operator
resumes it: a domain capping since 12:00:00 and below its uncap line since 12:04:10 still uncaps at
12:05:10, not a hold later.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from stargate_operator import kinds
from stargate_operator.api.common import Model, Timestamp, cel_rule, cross_field, with_cel

MAX_HOLD_SECONDS = 86_400  # a day: a longer hold is a typo
_UNCAP_BELOW_CAP = "uncapAtPercent must be below capAtPercent"


class Oversubscription(Model):
    """Allocate more than the real capacity, and cap reactively on measured power."""

    model_config = with_cel(
        cel_rule("self.uncapAtPercent < self.capAtPercent", _UNCAP_BELOW_CAP, ".uncapAtPercent"),
    )

    percent: int = Field(
        default=kinds.DEFAULT_OVERSUBSCRIPTION_PERCENT,
        ge=0,
        le=100,
        description="0 to 100 (default 0): allocation runs with the capacity raised by this share, so "
        "limits beneath may add up to more than the real capacity while measured power stays low.",
    )
    cap_at_percent: int = Field(
        default=kinds.DEFAULT_CAP_AT_PERCENT,
        ge=1,
        le=100,
        description="1 to 100 (default 95): once measured power reaches this share of the real "
        "capacity, Capping=True and the allocation stays within the real capacity.",
    )
    uncap_at_percent: int = Field(
        default=kinds.DEFAULT_UNCAP_AT_PERCENT,
        ge=0,
        le=99,
        description="0 to 99 (default 85), below capAtPercent: capping ends once measured power has "
        "stayed below this share of the real capacity for holdSeconds.",
    )
    hold_seconds: int = Field(
        default=kinds.DEFAULT_HOLD_SECONDS,
        ge=0,
        le=MAX_HOLD_SECONDS,
        description="0 to 86400 (default 60): how long measured power must stay below uncapAtPercent "
        "before capping ends.",
    )

    @model_validator(mode="after")
    def _uncap_below_cap(self) -> Self:
        if self.uncap_at_percent >= self.cap_at_percent:
            raise cross_field(
                "uncapAtPercent",
                f"{_UNCAP_BELOW_CAP} ({self.uncap_at_percent} >= {self.cap_at_percent})",
            )
        return self


class CappingStatus(Model):
    """Reactive capping of one constraint: its state and the figures it was decided on."""

    active: bool = Field(
        default=False, description="Capping: the allocation beneath is held within the real capacity."
    )
    since: Timestamp | None = Field(default=None, description="When the current state (active or not) began.")
    below_since: Timestamp | None = Field(
        default=None,
        description="While capping: since when measured power has stayed below the uncap line.",
    )
    starts: int = Field(
        default=0, ge=0, description="How many times capping has started (a counter kept across restarts)."
    )
    draw_watts: int = Field(
        default=0,
        ge=0,
        description="The power capping is decided on: peakPowerWatts (else powerWatts) of nodes with "
        "fresh telemetry, the allocation of the others, in watts.",
    )
    cap_at_watts: int = Field(default=0, ge=0, description="capAtPercent of the real capacity, in watts.")
    uncap_at_watts: int = Field(default=0, ge=0, description="uncapAtPercent of the real capacity, in watts.")
    allocatable_watts: int = Field(
        default=0,
        ge=0,
        description="The capacity the allocation beneath used: raised by percent, or the real one while "
        "capping, in watts.",
    )
