"""Power domains observed through the API with `stargate-operator run` as a real
process: a change to a PowerDomain is reflected in the racks beneath it like any other change, and
schema-valid nonsense (a missing parent, a loop, a rack naming a cooling domain as its feed) gives
conditions and Events while the rest of the site plans on.

Figures from helpers/site.py's default node: floor F = 1400 W, demand D = 3000 W, room 1600 W.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from helpers.api import Api, obj
from helpers.expect import WAIT, expect, expect_event
from helpers.operator_process import OperatorProcess
from helpers.site import cluster, node, rack
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator_survives")]


@pytest.fixture(scope="module")
def operator(control_plane: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    with OperatorProcess(control_plane, tmp_path_factory.mktemp("operator")) as op:
        yield op


def pdom(name: str, rating: int, parent: str | None = None, type_: str = "Electrical",
         role: str = "RPP") -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterRef": "site", "type": type_, "role": role, "ratingWatts": rating,
                            "deratePercent": 100}
    if parent is not None:
        spec["parentRef"] = parent
    return obj("PowerDomain", name, spec)


def fed(name: str, power: str | None = None, cooling: str | None = None,
        priority: int = 500) -> dict[str, Any]:
    r = rack(name, priority=priority)
    if power is not None:
        r["spec"]["powerDomainRef"] = power
    if cooling is not None:
        r["spec"]["coolingDomainRef"] = cooling
    return r


def test_a_power_domain_change_reaches_its_racks(api: Api, operator: OperatorProcess, namespace: str) -> None:
    ns = namespace
    # rpp usable 4000 over floors 2 x 1400 = 2800: 1200 beyond floors. hi (900) takes it all and the
    # rpp closes: hi 2600, lo keeps its floor 1400. free, under the site only, gets its demand 3000.
    api.create_all(ns, [
        cluster(), pdom("feed", 1_000_000, role="Utility"), pdom("rpp", 4000, parent="feed"),
        fed("hi", "rpp", priority=900), fed("lo", "rpp", priority=100), fed("free"),
        node("hi-1", "hi"), node("lo-1", "lo"), node("free-1", "free"),
    ])
    hi = expect(api, ns, "Rack", "hi", {"power": {"budgetWatts": 2600, "limitedBy": "rpp"}},
                {"PowerCapped": ("True", "BudgetBelowDemand")})
    assert "limited by RPP rpp, usable 4000 W" in next(
        c for c in hi["conditions"] if c["type"] == "PowerCapped")["message"]
    expect(api, ns, "Rack", "lo", {"power": {"budgetWatts": 1400, "limitedBy": "rpp"}})
    expect(api, ns, "Rack", "free", {"power": {"budgetWatts": 3000}}, {"PowerCapped": ("False", "DemandMet")})
    expect(api, ns, "GPUNode", "hi-1", {"allocatedWatts": 2600, "powerLimitWatts": 400})
    expect(api, ns, "PowerDomain", "rpp", {
        "ratingWatts": 4000, "usableWatts": 4000, "racks": 2, "floorWatts": 2800, "demandWatts": 6000,
        "allocatedWatts": 4000, "headroomWatts": 0, "path": ["feed", "rpp"], "observedGeneration": 1,
    }, {"Ready": ("True", "PowerAllocated"), "Constrained": ("True", "DemandExceedsUsable"),
        "Overcommitted": ("False", "FloorsFit")})
    expect(api, ns, "PowerDomain", "feed", {"racks": 2, "allocatedWatts": 4000, "path": ["feed"]},
           {"Constrained": ("False", "DemandFits")})

    # A bigger breaker: 7000 W covers both demands; nothing is limited any more.
    api.patch("PowerDomain", ns, "rpp", {"spec": {"ratingWatts": 7000}})
    expect(api, ns, "Rack", "lo", {"power": {"budgetWatts": 3000}}, {"PowerCapped": ("False", "DemandMet")})
    expect(api, ns, "GPUNode", "lo-1", {"allocatedWatts": 3000, "powerLimitWatts": 500})
    expect(api, ns, "PowerDomain", "rpp",
           {"allocatedWatts": 6000, "headroomWatts": 1000, "observedGeneration": 2},
           {"Constrained": ("False", "DemandFits")})
    lo = api.status("Rack", ns, "lo")
    assert "limitedBy" not in lo["power"], lo

    # Derated below the floors beneath: overcommitted, floors only, and an Event says by how much.
    api.patch("PowerDomain", ns, "rpp", {"spec": {"deratePercent": 30}})  # 2100 W usable < 2800
    expect(api, ns, "PowerDomain", "rpp", {"usableWatts": 2100, "headroomWatts": -700},
           {"Ready": ("False", "Overcommitted"), "Overcommitted": ("True", "FloorsExceedUsable")})
    expect(api, ns, "Rack", "hi", {"power": {"budgetWatts": 1400, "limitedBy": "rpp"}})
    ev = expect_event(api, ns, "PowerDomain", "rpp", "Overcommitted")
    assert "overcommitted by 700 W" in ev["message"]
    expect(api, ns, "Rack", "free", {"power": {"budgetWatts": 3000}})


def test_broken_domains_are_conditions_and_events_and_the_rest_plans_on(
    api: Api, operator: OperatorProcess, namespace: str
) -> None:
    ns = namespace
    api.create_all(ns, [
        cluster(), pdom("rpp", 4000), pdom("cdu", 100_000, type_="Cooling", role="CDU"),
        pdom("ring-a", 10_000, parent="ring-b"), pdom("ring-b", 10_000, parent="ring-a"),
        fed("good", "rpp"), fed("looped", "ring-a"), fed("misfed", "cdu"), fed("lost", "no-such-rpp"),
        node("good-1", "good"), node("looped-1", "looped"), node("misfed-1", "misfed"),
        node("lost-1", "lost"),
    ])
    ring = expect(api, ns, "PowerDomain", "ring-a", {"racks": 0, "allocatedWatts": 0},
                  {"Ready": ("False", "CycleDetected"), "Constrained": ("Unknown", "CycleDetected")})
    ready = next(c for c in ring["conditions"] if c["type"] == "Ready")
    assert "ring-a -> ring-b -> ring-a" in ready["message"], ready
    expect_event(api, ns, "PowerDomain", "ring-b", "CycleDetected", contains="ring-b -> ring-a -> ring-b")
    for name, words in (("looped", "PowerDomain ring-a is not ready (CycleDetected"),
                        ("misfed", "PowerDomain cdu is a Cooling domain"),
                        ("lost", "PowerDomain no-such-rpp not found")):
        r = expect(api, ns, "Rack", name, {"power": {"budgetWatts": 1400, "floorWatts": 1400}},
                   {"Ready": ("False", "PowerPathInvalid")})
        assert words in next(c for c in r["conditions"] if c["type"] == "Ready")["message"], r
        expect_event(api, ns, "Rack", name, "PowerPathInvalid", contains=words)
    # the good rack plans as if the broken part were not there: the rpp's 2600 W beyond its floor
    expect(api, ns, "Rack", "good", {"power": {"budgetWatts": 3000}}, {"Ready": ("True", "PowerAllocated")})
    expect(api, ns, "PowerDomain", "rpp", {"racks": 1, "allocatedWatts": 3000})
    expect(api, ns, "StargateCluster", "site",
           {"power": {"floorWatts": 5600, "allocatedWatts": 3000 + 3 * 1400}})

    # Break the loop, delete the rpp: the looped rack is fed again, the good one loses its path.
    api.patch("PowerDomain", ns, "ring-b", {"spec": {"parentRef": None}})
    api.delete("PowerDomain", ns, "rpp")
    expect(api, ns, "PowerDomain", "ring-a", {"racks": 1, "path": ["ring-b", "ring-a"]},
           {"Ready": ("True", "PowerAllocated")})
    expect(api, ns, "Rack", "looped", {"power": {"budgetWatts": 3000}}, {"Ready": ("True", "PowerAllocated")})
    expect(api, ns, "Rack", "good", {"power": {"budgetWatts": 1400}},
           {"Ready": ("False", "PowerPathInvalid")}, timeout=WAIT)
