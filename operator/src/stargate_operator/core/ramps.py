"""Ramps: an envelope on a constraint's capacity, so that no step of power is of the operator's making.

A site or a PowerDomain may set how fast the power assigned beneath it may fall and rise
(`rampDownWattsPerSecond`, `rampUpWattsPerSecond`). A grid event with target T from `start` to
`end` on a constraint whose capacity is otherwise N then bounds that capacity by its *envelope*:

    before the descent         N (no bound)
    descending, then active    max(T, N - down x (t - descent start))
    after end                  the level at end + up x (t - end), until it reaches N again

The descent starts at `start - (N - T) / down`, so that the target holds at `start` and the
descent follows whatever the demand is; an event created too late for that (start - creation <
(N - T) / down) descends from its creation and reaches the target after `start`. Several envelopes
compose by the minimum. Without a rate in a direction the envelope steps there, as it always did:
to T at `start` (also for `urgency: Emergency`), back to N at `end`.

Stateless: the envelope is a function of the specs and the instant alone, so `plan --now T` shows
any instant of a ramp, and a restarted operator neither jumps nor starts a ramp again.

A site's rates bound every move beneath it. When several events beneath one site ramp at the same
time (two feeds), each gets an equal share of the site's rate: the share is fixed from the specs
(the number of events whose ramp windows overlap), so the envelopes stay stateless and the sum of
their slopes never exceeds the site's rate.

Integer watts: an envelope is rounded up (never below the target, monotonic); a move over any
window is at most the rate times its length plus one watt of rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stargate_operator.core.power import site_budget
from stargate_operator.core.wire import format_time, from_epoch, parse_epoch

if TYPE_CHECKING:
    from stargate_operator.core.objects import ClusterIn, DomainIn

INFINITY = float("inf")
# During a ramp the plan changes continuously; the engine plans again at this interval (seconds).
RAMP_TICK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Rates:
    """Watts per second; None: no limit in that direction."""

    down: float | None = None
    up: float | None = None

    def within(self, outer: Rates) -> Rates:
        """These rates, no faster than `outer`'s (a site's rates bound a domain's)."""
        return Rates(_slower(self.down, outer.down), _slower(self.up, outer.up))

    @property
    def any(self) -> bool:
        return self.down is not None or self.up is not None


NO_RAMP = Rates()


def _slower(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a < b else b


@dataclass(slots=True)
class Ramp:
    """One event's bound on one constraint: its normal capacity N, its target T, its times (epoch
    seconds), and the rates it moves at (None: it steps)."""

    normal: int
    target: int
    start: float
    end: float | None = None
    created: float | None = None  # when it became known; None: long before (or unknown)
    down: float | None = None
    up: float | None = None
    # Share of a site's rate (see share_site_rate): the rate actually used.
    down_used: float | None = field(default=None)
    up_used: float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.down_used is None:
            self.down_used = self.down
        if self.up_used is None:
            self.up_used = self.up

    @property
    def drop(self) -> int:
        return self.normal - self.target if self.normal > self.target else 0

    def descent_start(self) -> float:
        """When the capacity leaves N: `start - drop / down`, not before the event was created."""
        down = self.down_used
        begins = self.start if down is None or self.drop == 0 else self.start - self.drop / down
        if self.created is not None and self.created > begins:
            begins = self.created
        return begins

    def reached_at(self) -> float:
        """When the capacity reaches the target: `start` when known early enough, later when not."""
        down = self.down_used
        begins = self.descent_start()
        if down is None or self.drop == 0:
            return begins if begins > self.start else self.start
        reached = begins + self.drop / down
        return reached if reached > self.start else self.start

    def _level(self, t: float) -> float:
        """The descending line at t >= descent start (never below the target)."""
        down = self.down_used
        if down is None:
            return self.target
        # Measured back from the instant the target is reached, so that it holds exactly there.
        level = self.target + down * (self.reached_at() - t)
        return level if level > self.target else self.target

    def rise_ends(self) -> float | None:
        """When the capacity is back at N after `end` (None: open-ended, or no descent before end)."""
        if self.end is None or self.descent_start() >= self.end:
            return None
        up = self.up_used
        if up is None:
            return self.end
        return self.end + (self.normal - self._level(self.end)) / up

    def capacity(self, t: float) -> int | None:
        """The envelope at t; None where it does not bound the capacity."""
        begins = self.descent_start()
        if t < begins or (self.end is not None and begins >= self.end):
            return None
        # Without a down rate the capacity is N until start, and T from start.
        if self.down_used is None and t < self.start:
            return None
        if self.end is None or t < self.end:
            return _up(self._level(t))
        up = self.up_used
        if up is None:
            return None
        level = self._level(self.end) + up * (t - self.end)
        return None if level >= self.normal else _up(level)

    def moving(self, t: float) -> bool:
        """The envelope changes with time at t (the engine plans again within a tick)."""
        begins = self.descent_start()
        if self.down_used is not None and begins <= t < self.reached_at() and t >= begins:
            return True
        ends = self.rise_ends()
        return self.end is not None and ends is not None and self.end <= t < ends

    def windows(self, demand: int) -> list[tuple[float, float]]:
        """Where the plan beneath it moves by time alone: the descent, from where the envelope
        meets `demand` (the demand beneath the constraint) to the target; the rise, from `end` to
        where it passes the demand again."""
        out: list[tuple[float, float]] = []
        if self.down_used is not None and self.drop > 0:
            meets = [t for t in self.crossings(demand) if t <= self.reached_at()]
            out.append((max([self.descent_start(), *meets]), self.reached_at()))
        ends = self.rise_ends()
        if self.end is not None and ends is not None and self.up_used is not None and ends > self.end:
            passes = [t for t in self.crossings(demand) if t > self.end]
            out.append((self.end, min([ends, *passes])))
        return [(a, b) for a, b in out if b > a]

    def kinks(self) -> list[float]:
        """Where the envelope turns upward (the target reached, `end`) or steps (no rate): no
        straight piece of a ramp spans those."""
        out = [self.reached_at()]
        if self.end is not None:
            out.append(self.end)
        return out

    def crossings(self, level: int) -> list[float]:
        """When the envelope passes `level` on its way down and on its way up: where a demand of
        `level` beneath the constraint starts and stops being bound by it (a kink of the plan)."""
        if not self.target < level < self.normal:
            return []
        out: list[float] = []
        if self.down_used is not None:
            t = self.reached_at() - (level - self.target) / self.down_used
            if t > self.descent_start():
                out.append(t)
        ends = self.rise_ends()
        if self.end is not None and ends is not None and self.up_used is not None:
            t = self.end + (level - self._level(self.end)) / self.up_used
            if self.end < t < ends:
                out.append(t)
        return out

    def changes(self, t: float) -> float:
        """The next instant after t at which the envelope changes by time alone (infinity: none)."""
        if self.moving(t):
            return t + RAMP_TICK_SECONDS
        marks = [self.descent_start(), self.start, self.reached_at()]
        if self.end is not None:
            marks.append(self.end)
        return min((m for m in marks if m > t), default=INFINITY)


def _up(level: float) -> int:
    return math.ceil(level - 1e-9)  # a float's dust must not add a watt


def envelope_instant(cluster: ClusterIn, now: float) -> float:
    """The instant a site's envelopes are read at: `now`, unless the plan is of a ramp's end."""
    at = cluster.envelope_at
    return now if at is None else at


def note_window(cluster: ClusterIn, start: float, stop: float) -> None:
    """A stretch where the site's plan may move by time alone (sliceramp.py)."""
    if stop > start:
        cluster.ramp_windows.append((start, stop))


def note_kinks(cluster: ClusterIn, kinks: Sequence[float]) -> None:
    """Instants where an envelope turns upward or steps (sliceramp.py)."""
    cluster.ramp_kinks.extend(kinks)


def demand_beneath(cluster: ClusterIn) -> int:
    return sum(r.demand_w for r in cluster.racks)


def compose(normal: int, ramps: Sequence[Ramp], t: float) -> int:
    """The capacity at t: N, bounded by every envelope (the minimum)."""
    cap = normal
    for r in ramps:
        c = r.capacity(t)
        if c is not None and c < cap:
            cap = c
    return cap


def _windows(r: Ramp) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    down = (r.descent_start(), r.reached_at()) if r.down_used is not None and r.drop > 0 else None
    ends = r.rise_ends()
    up = (r.end, ends) if r.up_used is not None and r.end is not None and ends is not None \
        and ends > r.end else None
    return down, up


def share_site_rate(ramps: Sequence[Ramp], site: Rates) -> None:
    """Give every ramp beneath one site at most an equal share of the site's rate among the ramps
    whose windows overlap its own, so that their slopes added never exceed the site's rate.

    The shares come from the specs alone (no time): starting from each ramp's own rate, count the
    overlapping windows, slow down, and count again (slower ramps last longer and may overlap
    more) until no share changes. At any instant the k ramps moving together each overlap the
    other k - 1, so each runs at most at the site's rate / k."""
    if not ramps:
        return
    for _ in range(len(ramps) + 1):
        changed = False
        windows = [_windows(r) for r in ramps]
        for i, r in enumerate(ramps):
            for which, rate in ((0, site.down), (1, site.up)):
                mine = windows[i][which]
                if rate is None or mine is None:
                    continue
                k = 1 + sum(1 for j, w in enumerate(windows)
                            if j != i and w[which] is not None and _overlap(mine, w[which]))
                share = rate / k
                own = r.down if which == 0 else r.up
                used = share if own is None or share < own else own
                current = r.down_used if which == 0 else r.up_used
                if current is None or used < current - 1e-12:
                    if which == 0:
                        r.down_used = used
                    else:
                        r.up_used = used
                    changed = True
        if not changed:
            return


def _overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    return a is not None and b is not None and a[0] < b[1] and b[0] < a[1]


def ramp_curtailment(cluster: ClusterIn, now: float) -> int:
    """A site's `spec.power.curtailment` under its ramp rates: one more envelope on the site. It has
    no start of its own, so its times live in status (`power.curtailment`): `since`, when the
    operator first saw it, and `liftedAt`, when it was removed or its `until` passed. A changed
    percent continues from where the envelope is now. Sets the site's ramp cap, what status says,
    and when the envelope next changes; returns the budget without the curtailment."""
    normal = site_budget(cluster.it_capacity_w, cluster.reserve_percent, 0)
    down, up = cluster.rates.down, cluster.rates.up
    held = cluster.curtail_held
    percent = cluster.curtailment_percent
    since: float | None = None
    lifted: float | None = None
    if cluster.curtailment_active:
        target = site_budget(cluster.it_capacity_w, cluster.reserve_percent, percent)
        if held is not None and held[0] == percent and held[2] is None:
            since = held[1]
        else:
            since = _as_kept(now)
            if held is not None and down is not None:  # continue from the envelope's level now
                level = _curtailment_ramp(cluster, held, normal, down, up).capacity(now)
                if level is not None:
                    since = _as_kept(now - (normal - level) / down)
    elif held is not None:
        percent, since, lifted = held
        if lifted is None:
            until = cluster.curtailment_until
            lifted = until if until is not None and until <= now and until >= since else _as_kept(now)
        target = site_budget(cluster.it_capacity_w, cluster.reserve_percent, percent)
    if since is None:
        return normal
    ramp = Ramp(normal, target, since, lifted, since, down, up)
    for a, b in ramp.windows(demand_beneath(cluster)):
        note_window(cluster, a, b)
    note_kinks(cluster, ramp.kinks())
    cap = ramp.capacity(envelope_instant(cluster, now))
    if ramp.capacity(now) is None and lifted is not None:
        cluster.curtail_out = None  # risen back: the record goes
        return normal
    if cap is not None and (cluster.ramp_cap_w is None or cap < cluster.ramp_cap_w):
        cluster.ramp_cap_w = cap
    out: dict[str, object] = {"percent": percent, "since": format_time(from_epoch(since), millis=True)}
    if lifted is not None:
        out["liftedAt"] = format_time(from_epoch(lifted), millis=True)
    cluster.curtail_out = out
    change = ramp.changes(now)
    if change != INFINITY and (cluster.ramp_next is None or change < cluster.ramp_next):
        cluster.ramp_next = change
    return normal


def _as_kept(t: float) -> float:
    """An instant as status keeps it (whole milliseconds): the next plan reads it back from there,
    and must find the same envelope (a ramp in the slices is written once, sliceramp.py)."""
    kept = parse_epoch(format_time(from_epoch(t), millis=True))
    assert kept is not None
    return kept


def _curtailment_ramp(cluster: ClusterIn, held: tuple[int, float, float | None], normal: int,
                      down: float | None, up: float | None) -> Ramp:
    target = site_budget(cluster.it_capacity_w, cluster.reserve_percent, held[0])
    return Ramp(normal, target, held[1], held[2], held[1], down, up)


def domain_rates(d: DomainIn, cluster: ClusterIn) -> Rates:
    """A domain's rates, no faster than any domain above it or its site's."""
    rates = d.rates
    for above in d.chain:
        rates = rates.within(above.rates)
    return rates.within(cluster.rates)


def bring_online(cluster: ClusterIn, now: float) -> float | None:
    """A domain brought online (valid since its Ready turned True, or new) rises from its racks'
    floors at its up rate rather than handing out its whole capacity at once: `online_rise_w` is how
    far above the floors beneath it the allocation may be now. The instant is the Ready condition's
    lastTransitionTime, which the status keeps; a domain becoming valid in this plan starts now.
    Returns when the next step is due while one rises."""
    upcoming: float | None = None
    for d in cluster.domains:
        up = domain_rates(d, cluster).up
        if up is None or d.problem is not None:
            continue
        ready = d.old.get("Ready") or {}
        since = parse_epoch(ready.get("lastTransitionTime")) if ready.get("status") == "True" else None
        if since is None or since > now:
            since = float(math.floor(now))  # as its Ready condition will say: whole seconds
        note_window(cluster, since, since + d.usable_w / up)
        if up * (now - since) >= d.usable_w:  # beyond its usable power the rise bounds nothing
            continue
        rise = up * (envelope_instant(cluster, now) - since)
        if rise < d.usable_w:
            d.online_rise_w = rise
        upcoming = now + RAMP_TICK_SECONDS
    return upcoming
