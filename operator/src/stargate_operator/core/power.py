"""Power arithmetic: floors, demands, budgets and max-min fair shares, and the
two rules about what a power figure means (whether a curtailment applies, a GPU-only reading made
a node's).

Everything is integer watts and every share is rounded down, so no level hands out more than it
has. Watts left over by rounding stay unallocated: they are fewer than the number of sharers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stargate_operator.core.wire import int_or


def node_floor_demand(
    count: int, min_w: int, max_w: int, requested_w: int | None, base_w: int, maintenance: bool
) -> tuple[int, int]:
    """F = base + count * min; D = base + count * clamp(requested, min, max); D = F in maintenance."""
    floor = base_w + count * min_w
    if maintenance:
        return floor, floor
    per_gpu = max_w if requested_w is None else requested_w
    if per_gpu > max_w:
        per_gpu = max_w
    if per_gpu < min_w:  # also covers min > max, which the API refuses: the floor wins
        per_gpu = min_w
    return floor, base_w + count * per_gpu


def site_budget(it_capacity_w: int, reserve_percent: int, curtailment_percent: int) -> int:
    """B = floor(it * (1 - reserve/100) * (1 - curtailment/100)), in exact integer arithmetic."""
    reserve = min(max(reserve_percent, 0), 100)
    curtail = min(max(curtailment_percent, 0), 100)
    return max(it_capacity_w, 0) * (100 - reserve) * (100 - curtail) // 10000


def fair_level(rooms: Sequence[int], remainder: int) -> int:
    """The highest integer L with sum(min(room, L)) <= remainder (rooms >= 0, remainder >= 0)."""
    left = remainder
    k = len(rooms)
    for room in sorted(rooms):
        if room * k <= left:
            left -= room  # this one is filled; the level reaches at least its room
            k -= 1
        else:
            return left // k
    # Every room fits: the level is unbounded; the largest room is as good as any.
    return max(rooms, default=0)


def max_min_shares(rooms: Sequence[int], remainder: int) -> tuple[list[int], bool]:
    """Shares of `remainder` over `rooms`, max-min fair; True when every room was filled."""
    if sum(rooms) <= remainder:
        return list(rooms), True
    level = fair_level(rooms, remainder)
    return [room if room < level else level for room in rooms], False


def power_limit(allocated_w: int, base_w: int, count: int, min_w: int) -> int:
    """Per-GPU limit: floor((allocated - base) / count), never below the GPU's minimum."""
    if count <= 0:
        return min_w
    limit = (allocated_w - base_w) // count
    return limit if limit > min_w else min_w


def curtailment_in_effect(percent: int, until_epoch: float | None, now_epoch: float) -> bool:
    """Whether a site's `spec.power.curtailment` applies now: a positive share, and no `until` or
    one still ahead (after `until` passes the curtailment no longer applies).
    The allocation and the metrics both read this, so a budget and a dashboard never disagree."""
    return percent > 0 and (until_epoch is None or now_epoch < until_epoch)


def with_base_power(reading: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """A GPU-only reading (DCGM measures the GPUs alone) as node telemetry: the GPUNode's
    `spec.basePowerWatts` added, as the node agent does, so that measured power compares with node
    and rack budgets, which count the whole node. The base is read as the node's floor reads it
    (`parse_node`), so measured and floor agree on what the rest of the node is."""
    base = int_or(spec.get("basePowerWatts"), 0)  # a malformed spec must not fail the namespace
    return {**reading, "powerWatts": int(reading.get("powerWatts") or 0) + base}
