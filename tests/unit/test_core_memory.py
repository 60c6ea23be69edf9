"""Memory binding: capacity per tier, binding order, eviction, rebinding."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from helpers.core_objects import GB, claim, cluster, cond, feed_back, node, pool, rack, run, st

NODES = [cluster(), rack("r1"), node("a", "r1", count=8, mem=80 * GB, host=2000 * GB),
         node("b", "r1", count=8, mem=80 * GB, host=1000 * GB, maintenance=True),
         rack("r2"), node("c", "r2", count=4, mem=100 * GB, host=500 * GB)]


def test_pool_capacity_per_tier() -> None:
    plan = run([*NODES,
                pool("hbm", tier="HBM", share=50),  # healthy GPUs: 8 x 80 + 4 x 100 = 1040 GB
                pool("dram", tier="DRAM"),  # not in maintenance: 2000 + 500
                pool("rack-hbm", tier="HBM", rack_ref="r2"),
                pool("cxl", tier="CXL", capacity=4096 * GB),
                pool("cxl-unsized", tier="CXL")])
    assert st(plan, "MemoryPool", "hbm")["capacityBytes"] == 520 * GB
    assert st(plan, "MemoryPool", "dram")["capacityBytes"] == 2500 * GB
    assert st(plan, "MemoryPool", "rack-hbm")["capacityBytes"] == 400 * GB
    assert st(plan, "MemoryPool", "cxl")["capacityBytes"] == 4096 * GB
    unsized = st(plan, "MemoryPool", "cxl-unsized")
    assert (unsized["capacityBytes"], cond(unsized, "Ready")["reason"]) == (0, "CapacityRequired")


def _pool_plan(claims: list[dict[str, Any]], capacity: int = 100) -> Any:
    return run([cluster(), pool("p", capacity=capacity), *claims])


def _phases(plan: Any, names: Iterable[str]) -> str:
    return "".join("B" if st(plan, "MemoryClaim", n)["phase"] == "Bound" else "." for n in names)


def test_binding_order_priority_then_age_then_name_without_head_of_line_blocking() -> None:
    plan = _pool_plan([
        claim("a", "p", 60, priority=1),  # bound first: highest priority
        claim("b", "p", 50, priority=0, age_s=100),  # older than c but does not fit: skipped
        claim("c", "p", 30, priority=0, age_s=50),  # fits behind b: no head-of-line blocking
        claim("d", "p", 10, priority=0, age_s=50),  # same age as e: name decides, both fit
        claim("e", "p", 10, priority=0, age_s=50),
    ])
    assert _phases(plan, "abcde") == "B.BB."
    p = st(plan, "MemoryPool", "p")
    assert (p["allocatedBytes"], p["availableBytes"], p["claims"]) == (100, 0, {"bound": 3, "pending": 2})
    assert cond(p, "Exhausted")["status"] == "True"
    assert st(plan, "MemoryClaim", "a")["boundAt"] == "2026-01-01T12:00:00Z"
    assert st(plan, "MemoryClaim", "a")["allocatedBytes"] == 60
    assert cond(st(plan, "MemoryClaim", "b"), "Ready")["reason"] == "InsufficientCapacity"


def test_bound_claims_stay_bound_even_before_higher_priority_newcomers() -> None:
    plan = _pool_plan([claim("old", "p", 80, bound=True), claim("vip", "p", 50, priority=100)])
    assert _phases(plan, ["old", "vip"]) == "B."
    assert st(plan, "MemoryClaim", "old")["boundAt"] == "2025-12-31T00:00:00Z"  # preserved


def test_eviction_lowest_priority_then_newest_first_and_rebinding_when_room_returns() -> None:
    claims = [
        claim("keep", "p", 40, priority=10, bound=True),
        claim("old-low", "p", 30, priority=0, age_s=500, bound=True),
        claim("new-low", "p", 30, priority=0, age_s=10, bound=True),
    ]
    plan = _pool_plan(claims, capacity=70)  # 100 bound, 70 left: evict new-low (newest of prio 0)
    assert _phases(plan, ["keep", "old-low", "new-low"]) == "BB."
    evicted = st(plan, "MemoryClaim", "new-low")
    assert (evicted["phase"], evicted["allocatedBytes"]) == ("Pending", 0)
    assert "boundAt" not in evicted
    assert cond(evicted, "Ready")["reason"] == "Evicted"
    warnings = [(e.key[0], e.key[2], e.reason) for e in plan.events if e.type == "Warning"]
    assert warnings == [("MemoryClaim", "new-low", "Evicted"), ("MemoryPool", "p", "Exhausted")]

    # still short of room: stays Pending with reason Evicted, and nothing is written or posted
    objs = feed_back([cluster(), pool("p", capacity=70), *claims], plan)
    again = run(objs)
    assert again.statuses == plan.statuses
    assert again.events == []

    # room returns: bound again by a later recomputation
    objs[1] = pool("p", capacity=100)
    back = run(objs)
    assert _phases(back, ["keep", "old-low", "new-low"]) == "BBB"
    assert cond(st(back, "MemoryClaim", "new-low"), "Ready")["reason"] == "Bound"


def test_eviction_then_smaller_claims_fill_the_room_in_binding_order() -> None:
    # capacity 50: bound 60 (big, prio 0) is evicted; then step two binds in order: big (60) does
    # not fit, small (20, pending) does.
    plan = _pool_plan([claim("big", "p", 60, bound=True), claim("small", "p", 20)], capacity=50)
    assert _phases(plan, ["big", "small"]) == ".B"


def test_capacity_shrinks_when_gpus_go_unhealthy() -> None:
    objs = [cluster(), rack("r"), node("n", "r", count=2, mem=100),
            pool("hbm", tier="HBM"), claim("c", "hbm", 150, bound=True)]
    assert st(run(objs), "MemoryClaim", "c")["phase"] == "Bound"
    objs[2] = node("n", "r", count=2, mem=100, maintenance=True)
    shrunk = run(objs)
    assert st(shrunk, "MemoryPool", "hbm")["capacityBytes"] == 0
    assert st(shrunk, "MemoryClaim", "c")["phase"] == "Pending"


def test_claim_whose_pool_is_missing_goes_pending() -> None:
    plan = run([cluster(), claim("c", "gone", 10, bound=True)])
    status = st(plan, "MemoryClaim", "c")
    assert status["phase"] == "Pending"
    ready = cond(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PoolNotFound")
    assert "gone" in ready["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "PoolNotFound")]


def test_allocated_never_above_capacity_and_each_claim_counted_once() -> None:
    claims = [claim(f"c{i}", "p", 7 + i, priority=i % 3, age_s=i, bound=i % 2 == 0) for i in range(20)]
    plan = _pool_plan(claims, capacity=90)
    p = st(plan, "MemoryPool", "p")
    bound = [st(plan, "MemoryClaim", f"c{i}") for i in range(20)]
    assert p["allocatedBytes"] == sum(c["allocatedBytes"] for c in bound) <= 90
    assert p["claims"]["bound"] + p["claims"]["pending"] == 20
