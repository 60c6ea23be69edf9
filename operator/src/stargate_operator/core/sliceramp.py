"""Ramps carried in PowerLimitSlices: one write per changed slice per straight piece of a ramp.

While an envelope moves (ramps.py), the plan changes every instant. Instead of writing every node's
new limit again and again, the operator writes each changed slice once per *piece*: the stretch
between two consecutive kinks of the namespace's envelopes (`Ramp.marks`, a domain brought online,
the rise after capping, an event's step). The slice's `ramp` carries, per node, `from` (its limit
in the plan at the piece's start) and `limits` (its limit in the plan at the piece's end), and the
agents move linearly from one to the other between `startAt` and `endAt` on their own.

Why the sum stays under the envelope. On a piece each envelope is a straight line, and where
several bound one constraint their minimum is concave (a minimum of lines). The sum over the
nodes beneath a constraint of their linear interpolations is itself linear: the chord between
the sums at the two ends. Both ends are plans, so each is at most the envelope there, and a chord
of a concave function between two points at or below it stays at or below it all the way. Agents
round down, so the integer limits they enforce are at most the chord.

Why the rate holds. The allocation is monotonic and 1-Lipschitz in a constraint's capacity (max-
min filling: taking W from the capacity takes at most W from the nodes together, and none gains),
so between the two ends the watts beneath any constraint move by at most what its envelope moves
(but the integer fair level's remainder, less than a watt a node), and the chord moves at most at
the envelope's slope. Each node's rounding down takes less than a watt per GPU off any one
reading, never a trend.

Deterministic: the piece's ends come from the specs (the envelopes' kinks), never from `now`, and
instants are written in whole milliseconds, taken inward (the start rounded up, the end down) so
that the piece written stays inside the straight stretch. A restarted operator plans the same two
ends and finds the slice already as it would write it: no write, no jump, no ramp started again.

Lower before raise. A node's start is also no higher than what its slice held at the piece's
start (`held.at(start)`): a node going down follows a line that is at every instant at or below
what it held, so it is a lowering, written at once; a node going up is a raise, staged as any
raise (staging.py). A node whose raise waits keeps what it holds.

Protection never waits: capping, the fail-safe, a lowered rating, an invalid domain and cooling
lower the plans of both ends at once, so the piece written at once is lower (the agents jump down
to it): a ramp is cut short by protection, never the other way round. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stargate_operator.core.wire import format_time, from_epoch, parse_epoch

if TYPE_CHECKING:
    from stargate_operator.core.objects import ClusterIn


@dataclass(frozen=True, slots=True)
class Held:
    """One node's entry in the slice held now: its limit, and its ramp's start where it ramps."""

    limit: int
    start_from: int | None = None
    start_at: float = 0.0
    end_at: float = 0.0

    def at(self, t: float) -> int:
        """What its agent enforces at t: the agents' own rule (linear, rounded down)."""
        return interpolate(self.start_from, self.limit, self.start_at, self.end_at, t)

    def ramping(self, t: float) -> bool:
        return self.start_from is not None and t < self.end_at


def interpolate(start: int | None, end: int, start_at: float, end_at: float, t: float) -> int:
    """The value at t of a line from `start` at `start_at` to `end` at `end_at`, rounded down;
    `end` before and after where there is no line."""
    if start is None or t >= end_at:
        return end
    if t <= start_at:
        return start
    share = (t - start_at) / (end_at - start_at)
    return math.floor(start + (end - start) * share)


def _ints(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if type(v) is int and v >= 0}


def held_entries(spec: Mapping[str, Any]) -> dict[str, Held]:
    """A slice's spec read as its agents read it (a malformed ramp is no ramp)."""
    limits = _ints(spec.get("limits"))
    ramp = spec.get("ramp")
    starts: dict[str, int] = {}
    begin = end = 0.0
    if isinstance(ramp, dict):
        b, e = parse_epoch(ramp.get("startAt")), parse_epoch(ramp.get("endAt"))
        if b is not None and e is not None and e > b:
            starts, begin, end = _ints(ramp.get("from")), b, e
    return {n: Held(w, starts.get(n), begin, end) if n in starts else Held(w) for n, w in limits.items()}


def stamp(ms: int) -> str:
    """Whole milliseconds since the epoch, as written in a slice's ramp."""
    text = format_time(from_epoch(ms // 1000))
    return text if ms % 1000 == 0 else f"{text[:-1]}.{ms % 1000:03d}Z"


def inward(start: float, end: float) -> tuple[str, str] | None:
    """A piece's instants in whole milliseconds, inside it; None when none is left."""
    a, b = math.ceil(start * 1000 - 1e-6), math.floor(end * 1000 + 1e-6)
    return (stamp(a), stamp(b)) if b > a else None


# A piece that starts this soon is written ahead: the agents hold its start until then, so the
# slice's write, however late within this, never makes them catch up on a line already running.
LOOKAHEAD_SECONDS = 5.0


def ramp_piece(clusters: Iterable[ClusterIn], now: float) -> tuple[float, float] | None:
    """The straight piece holding `now` while the plan may move by time alone (a window holds
    now): from the last kink or window start at or before now, to the first kink or window start
    after it, or the end of the windows holding now if sooner. Inside, no envelope turns upward or
    steps (a window's end, where a rise or descent stops, only bends them downward: concave), so
    the line between the plans at the two ends stays under every envelope."""
    windows = [w for c in clusters for w in c.ramp_windows]
    kinks = [k for c in clusters for k in c.ramp_kinks]
    holding = [b for a, b in windows if a <= now < b]
    if not holding:
        return None
    begins = max([m for m in (*kinks, *(a for a, _ in windows)) if m <= now], default=-math.inf)
    ends = min([m for m in (*kinks, *(a for a, _ in windows)) if m > now], default=math.inf)
    ends = min(ends, max(holding))
    if begins == -math.inf or ends == math.inf:
        return None
    return begins, ends


def next_piece(clusters: Iterable[ClusterIn], now: float) -> tuple[float | None, tuple[float, float] | None]:
    """The piece of the next window, when it starts within LOOKAHEAD_SECONDS (written ahead
    where the plan holds still until then); and else when to look again (its start less the
    lookahead; None: no window ahead)."""
    cs = list(clusters)
    starts = [a for c in cs for a, _ in c.ramp_windows if a > now]
    if not starts:
        return None, None
    first = min(starts)
    if first - now > LOOKAHEAD_SECONDS:
        return first - LOOKAHEAD_SECONDS, None
    return None, ramp_piece(cs, first)


@dataclass(frozen=True, slots=True)
class PieceLimits:
    """The plans at a piece's two ends: per node its limit and safe limit at each, and the
    instants as written (`startAt`, `endAt`)."""

    start_at: str
    end_at: str
    start: Mapping[str, int]
    end: Mapping[str, int]
    start_safe: Mapping[str, int]
    end_safe: Mapping[str, int]
    # The end plan's statuses of the namespace's racks and nodes.
    statuses: Mapping[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def moves(self) -> bool:
        """Some node's plan differs between the two ends."""
        return any(self.end.get(n) != w for n, w in self.start.items())

    @property
    def begins(self) -> float:
        value = parse_epoch(self.start_at)
        assert value is not None
        return value

    @property
    def ends(self) -> float:
        value = parse_epoch(self.end_at)
        assert value is not None
        return value


def ramp_starts(piece: PieceLimits, held: Mapping[str, Held]) -> dict[str, int]:
    """Per node, where its line starts: its plan at the piece's start, no higher than what it held
    there. A node new to the slices starts at its plan."""
    begins = piece.begins
    out: dict[str, int] = {}
    for node, start in piece.start.items():
        h = held.get(node)
        was = h.at(begins) if h is not None else None
        out[node] = start if was is None or start <= was else was
    return out


def failsafe_exit_rates(rates: Mapping[str, float], above: Mapping[str, Iterable[str]],
                        gpus: Mapping[str, int]) -> dict[str, float]:
    """Per node, how fast (watts per second, per GPU) its agent rises when it leaves the fail-safe:
    every agent of a site leaves at once when the operator's Lease is renewed, so each takes its
    share of the up rate of every constraint above it (`rates`: constraint -> up rate), by GPUs:
    the GPUs beneath a constraint rising at rate / GPUs each rise at its rate together. The
    slowest share, rounded down to two significant digits so that a few nodes more or less do not
    rewrite every slice. A node under no constraint with an up rate has none."""
    beneath: dict[str, int] = {}
    for node, constraints in above.items():
        for c in constraints:
            if c in rates:
                beneath[c] = beneath.get(c, 0) + gpus.get(node, 1)
    out: dict[str, float] = {}
    for node, constraints in above.items():
        shares = [rates[c] / beneath[c] for c in constraints if c in rates and beneath[c] > 0]
        if shares:
            out[node] = two_digits_down(min(shares))
    return out


def two_digits_down(x: float) -> float:
    """x rounded down to two significant digits (x > 0), as a number with a short decimal form."""
    exponent = math.floor(math.log10(x)) - 1
    digits = math.floor(x / 10.0 ** exponent + 1e-9)
    value = float(f"{digits}e{exponent}")
    return value if value <= x else float(f"{digits - 1}e{exponent}")
