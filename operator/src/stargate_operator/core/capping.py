"""Reactive capping with hysteresis: the rule for one constraint, on plain figures.

A constraint (the site, or a PowerDomain) that sets `oversubscription` is allocated up to `percent`
above its real capacity C while it is not capping. Its *draw* is the power its racks take as far as
the operator can tell (oversubscription.py sums it). The state machine, with
cap line = floor(C x capAtPercent / 100) and uncap line = floor(C x uncapAtPercent / 100):
- not capping, draw >= cap line: capping starts now (the allocation stays within C);
- capping, draw < uncap line: the hold starts (`belowSince`, unless it already runs); once it has
  run `holdSeconds`, capping ends;
- capping, draw >= uncap line: the hold, if any, is cancelled.
The state (active, since, belowSince, and a count of starts) lives in status, so that a restarted
operator carries on where the last one stopped. Pure: strings and numbers in, a new state out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stargate_operator.core.wire import int_or, int_or_none, mapping, parse_epoch
from stargate_operator.kinds import (
    DEFAULT_CAP_AT_PERCENT,
    DEFAULT_HOLD_SECONDS,
    DEFAULT_OVERSUBSCRIPTION_PERCENT,
    DEFAULT_UNCAP_AT_PERCENT,
)

STARTED = "CappingStarted"
ENDED = "CappingEnded"


@dataclass(frozen=True, slots=True)
class Oversubscription:
    percent: int
    cap_at: int
    uncap_at: int
    hold_s: int

    def allocatable(self, capacity: int, capping: bool) -> int:
        """The capacity the allocation uses: raised by `percent`, or the real one while capping."""
        if capping or self.percent <= 0 or capacity <= 0:
            return capacity
        return capacity * (100 + self.percent) // 100

    def lines(self, capacity: int) -> tuple[int, int]:
        """(cap line, uncap line) in watts."""
        c = capacity if capacity > 0 else 0
        return c * self.cap_at // 100, c * self.uncap_at // 100


@dataclass(frozen=True, slots=True)
class CappingState:
    active: bool
    since: str  # RFC 3339, as status carries it: when the current state began
    below_since: str | None  # while active: since when the draw has stayed below the uncap line
    starts: int


def parse_oversubscription(value: object) -> Oversubscription | None:
    """spec.(power.)oversubscription, defaults filled; None when unset. Nonsense the API server would
    refuse is clamped rather than trusted (uncap at or above cap: the uncap line is put just below)."""
    if not isinstance(value, Mapping):
        return None
    percent = min(max(int_or(value.get("percent"), DEFAULT_OVERSUBSCRIPTION_PERCENT), 0), 100)
    cap_at = min(max(int_or(value.get("capAtPercent"), DEFAULT_CAP_AT_PERCENT), 1), 100)
    uncap_at = min(max(int_or(value.get("uncapAtPercent"), DEFAULT_UNCAP_AT_PERCENT), 0), cap_at - 1)
    hold = max(int_or(value.get("holdSeconds"), DEFAULT_HOLD_SECONDS), 0)
    return Oversubscription(percent, cap_at, uncap_at, hold)


def parse_capping(value: object) -> CappingState | None:
    """status.(power.)capping as the last plan wrote it; None when absent or unreadable."""
    state = mapping(value)
    since = state.get("since")
    if not state or not isinstance(since, str):
        return None
    below = state.get("belowSince")
    starts = int_or_none(state.get("starts"))
    return CappingState(
        active=state.get("active") is True,
        since=since,
        below_since=below if isinstance(below, str) else None,
        starts=starts if starts is not None and starts >= 0 else 0,
    )


def step(was: CappingState | None, over: Oversubscription, draw_w: int, capacity_w: int,
         now_s: str, now_e: float) -> tuple[CappingState, str | None, float | None]:
    """The state after seeing `draw_w` at `now`; the Event reason of a transition, if any; and when
    the state changes by time alone (the end of a running hold), if it does."""
    if was is None:
        was = CappingState(False, now_s, None, 0)
    cap_w, uncap_w = over.lines(capacity_w)
    if not was.active:
        if draw_w >= cap_w:
            return CappingState(True, now_s, None, was.starts + 1), STARTED, None
        return was, None, None
    if draw_w >= uncap_w:
        if was.below_since is None:
            return was, None, None
        return CappingState(True, was.since, None, was.starts), None, None
    below = was.below_since
    below_e = parse_epoch(below) if below is not None else None
    if below is None or below_e is None or below_e > now_e:
        below, below_e = now_s, now_e  # the hold starts now (or again: an unreadable or future mark)
    ends = below_e + over.hold_s
    if now_e >= ends:
        return CappingState(False, now_s, None, was.starts), ENDED, None
    return CappingState(True, was.since, below, was.starts), None, ends


def capping_status(state: CappingState, draw_w: int, over: Oversubscription, capacity_w: int,
                   allocatable_w: int) -> dict[str, Any]:
    """status.(power.)capping in wire form."""
    cap_w, uncap_w = over.lines(capacity_w)
    out: dict[str, Any] = {"active": state.active, "since": state.since}
    if state.below_since is not None:
        out["belowSince"] = state.below_since
    out["starts"] = state.starts
    out["drawWatts"] = draw_w
    out["capAtWatts"] = cap_w
    out["uncapAtWatts"] = uncap_w
    out["allocatableWatts"] = allocatable_w
    return out
