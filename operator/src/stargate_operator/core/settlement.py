"""Settlement: the figures a utility or an aggregator pays a grid event on.

Utilities pay on measured curtailment against a baseline, not on a `Met` verdict. A GridEvent's
status therefore carries:
- `baselineWatts`: the mean measured power beneath the event's constraint over the 10 minutes
  before its descent starts, leaving out time while another event bounds the same site (that
  power is not the site's normal draw); the allocation stands in where nothing is measured. It is
  fixed at the descent's start.
- `shedWatts` (baseline - measured, while active) and `shedWattHours`, its integral over the
  active time, frozen when the event completes;
- `rampStartedAt`, `targetReachedAt` (from the envelope, ramps.py) and `measuredMetAt`;
- the same figures as facility power at the site's design PUE.

Where the history lives: in the event's own status (`ledger`: the power last seen, when, and the
running sums). The core integrates the power it saw at the last plan over the time since
(measured power is piecewise constant between the operator's observations), so a restarted
operator carries on from the status it wrote and loses at most the time it was down, which it
counts at the last power seen. Prometheus would hold the same history, but the operator must
settle without it (it runs without a Prometheus too). To keep writes few, the sums move at most
once every LEDGER_STEP_SECONDS per event.

Pure: numbers and wire-form dicts in, wire-form dicts out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from stargate_operator.core.wire import format_time, from_epoch, int_or_none, mapping, parse_epoch

BASELINE_WINDOW_SECONDS = 600.0
LEDGER_STEP_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Ledger:
    at: float  # epoch seconds
    watts: int
    baseline_ws: int = 0
    baseline_s: float = 0.0
    shed_ws: int = 0


def parse_ledger(status: Mapping[str, Any]) -> Ledger | None:
    held = mapping(status.get("ledger"))
    at = parse_epoch(held.get("at"))
    watts = int_or_none(held.get("watts"))
    if at is None or watts is None:
        return None
    seconds = held.get("baselineSeconds")
    return Ledger(
        at, max(watts, 0),
        max(int_or_none(held.get("baselineWattSeconds")) or 0, 0),
        float(seconds) if isinstance(seconds, int | float) and seconds > 0 else 0.0,
        int_or_none(held.get("shedWattSeconds")) or 0,
    )


def baseline_estimate(status: Mapping[str, Any], ledger: Ledger | None) -> int | None:
    """The baseline as far as it is known: fixed once the descent started, else the mean so far,
    else the power last seen; None before anything was seen."""
    fixed = int_or_none(status.get("baselineWatts"))
    if fixed is not None:
        return fixed
    if ledger is None:
        return None
    if ledger.baseline_s > 0:
        return int(ledger.baseline_ws // ledger.baseline_s)
    return ledger.watts


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    lo = a0 if a0 > b0 else b0
    hi = a1 if a1 < b1 else b1
    return hi - lo if hi > lo else 0.0


@dataclass(slots=True)
class Window:
    """An event's times (epoch seconds): the descent's start, start, end (None: open), and when the
    envelope reached the target."""

    descent: float
    start: float
    end: float | None
    reached: float


def settle(held: Mapping[str, Any], ledger: Ledger | None, w: Window, now: float, power_w: int,
           shared: bool, pue: float, target_w: int, measured_w: int, within_target: bool,
           active: bool, first_seen: float | None = None) -> dict[str, Any]:
    """The settlement part of a valid event's status at `now`. `held`: the status as read;
    `power_w`: the power beneath now (measured, or the allocation where nothing is measured);
    `shared`: another event bounds the site now (the time does not count for the baseline)."""
    out: dict[str, Any] = {}
    baseline = int_or_none(held.get("baselineWatts"))
    window0 = w.descent - BASELINE_WINDOW_SECONDS
    done = w.end is not None and now >= w.end
    if ledger is None and window0 <= now and not done:
        # The operator plans on every change, so the power it sees now held since its last plan:
        # count it from the window's opening (or from when the event was first seen, if later).
        ledger = Ledger(window0 if first_seen is None or first_seen < window0 else first_seen, power_w)
    new = ledger
    if ledger is None:
        pass
    elif now - ledger.at >= LEDGER_STEP_SECONDS or (now >= w.descent and baseline is None) or done:
        # The power last seen held from ledger.at to now: add it to the sums it belongs to.
        span_b = 0.0 if shared else _overlap(ledger.at, now, window0, w.descent)
        b_ws = ledger.baseline_ws + int(ledger.watts * span_b)
        b_s = ledger.baseline_s + span_b
        shed_ws = ledger.shed_ws
        known = baseline if baseline is not None else (int(b_ws // b_s) if b_s > 0 else None)
        if known is not None:
            shed_ws += int((known - ledger.watts) * _overlap(ledger.at, now, w.start,
                                                             w.end if w.end is not None else now))
        new = Ledger(now, power_w, b_ws, round(b_s, 3), shed_ws)
    if baseline is None and now >= w.descent and new is not None:
        baseline = int(new.baseline_ws // new.baseline_s) if new.baseline_s > 0 else new.watts
    if baseline is not None:
        out["baselineWatts"] = baseline
    if now >= w.descent:
        out["rampStartedAt"] = format_time(from_epoch(w.descent), millis=True)
    if now >= w.reached:
        out["targetReachedAt"] = format_time(from_epoch(w.reached), millis=True)
    met_at = held.get("measuredMetAt")
    if isinstance(met_at, str) and met_at:
        out["measuredMetAt"] = met_at
    elif active and within_target:
        out["measuredMetAt"] = format_time(from_epoch(now), millis=True)
    shed: int | None = None
    if active and baseline is not None:
        shed = baseline - measured_w
    elif done:
        kept = int_or_none(held.get("shedWatts"))
        shed = kept
    if shed is not None:
        out["shedWatts"] = shed
    hours: float | None = None
    if new is not None and now >= w.start:
        hours = round(new.shed_ws / 3600, 3)
    elif done:
        kept_hours = held.get("shedWattHours")
        hours = float(kept_hours) if isinstance(kept_hours, int | float) else None
    if hours is not None:
        out["shedWattHours"] = hours
    facility: dict[str, float] = {"targetWatts": _at_pue(target_w, pue)}
    for key in ("baselineWatts", "shedWatts"):
        if key in out:
            facility[key] = _at_pue(out[key], pue)
    if active or done:
        facility["measuredWatts"] = _at_pue(measured_w, pue)
    if hours is not None:
        facility["shedWattHours"] = round(hours * pue, 3)
    out["facility"] = facility
    if new is not None and not done:
        out["ledger"] = {"at": format_time(from_epoch(new.at), millis=True), "watts": new.watts,
                         "baselineWattSeconds": new.baseline_ws, "baselineSeconds": new.baseline_s,
                         "shedWattSeconds": new.shed_ws}
    return out


def _at_pue(watts: int, pue: float) -> int:
    # Decimal of the shortest repr: 1.15 * 100 must be 115, not 114.99999999999999.
    return int(Decimal(watts) * Decimal(repr(pue)))
