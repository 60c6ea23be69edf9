"""The slice pass remembers what it read (nodes, racks' places in the power tree, held slices) from
one call to the next: over any sequence of changes, a cache with its memos gives exactly the plan
that the same cache gives with every memo forgotten before each call (the state of a change under
way, pending lowerings and recent limits, is kept by both)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as hs

from helpers.core_objects import NOW, NS, _obj, cluster, node, rack, ts
from helpers.properties import PROPS
from stargate_operator.core import Plan
from stargate_operator.core.sliceplan import (
    CampusCache,
    CampusSettings,
    SliceSettings,
    plan_campus,
    stage_campus,
)

Key = tuple[str, str, str]
SETTINGS = CampusSettings(slices=SliceSettings(slice_size=5, raise_after_seconds=30.0,
                                               confirm_grace_seconds=60.0))


class Server:
    """Objects as an API server holds them: every write gives a new resourceVersion."""

    def __init__(self, objs: list[dict[str, Any]]) -> None:
        self._rv = itertools.count(1)
        self.objects: dict[Key, dict[str, Any]] = {}
        for o in objs:
            self.put(o)

    def put(self, obj: dict[str, Any]) -> None:
        meta = {**obj["metadata"], "resourceVersion": str(next(self._rv))}
        held = self.objects.get((obj["kind"], meta.get("namespace") or "default", meta["name"]))
        if held is not None and held.get("spec") != obj.get("spec"):
            meta["generation"] = held["metadata"]["generation"] + 1  # as the API server counts
        key = (obj["kind"], meta.get("namespace") or "default", meta["name"])
        self.objects[key] = {**obj, "metadata": meta}

    def write_back(self, plan: Plan) -> None:
        """The engine's writes: the slices' applies, then every status (telemetry kept)."""
        for body in plan.applies:
            key = (body["kind"], body["metadata"]["namespace"], body["metadata"]["name"])
            held = self.objects.get(key)
            if held is None:
                meta = {**body["metadata"], "uid": f"uid-{key[2]}", "generation": 1}
                self.put({**body, "metadata": meta})
            elif held["spec"] != body["spec"]:
                self.put({**held, "spec": body["spec"]})
        for key, status in plan.statuses.items():
            held = self.objects.get(key)
            if held is None:
                continue
            tel = (held.get("status") or {}).get("telemetry")
            self.put({**held, "status": {**status, **({"telemetry": tel} if tel is not None else {})}})


def domain(name: str, parent: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterRef": "site", "type": "Electrical", "role": "FloorPDU",
                            "ratingWatts": 9_000}
    if parent is not None:
        spec["parentRef"] = parent
    return _obj("PowerDomain", name, spec)


RACKS = ("r0", "r1", "r2", "r3", "gone")
DOMAINS = ("d0", "d1", None)


@hs.composite
def campus(draw: hs.DrawFn) -> list[dict[str, Any]]:
    objs = [cluster(it=draw(hs.integers(2_000, 40_000))), domain("d0", None), domain("d1", "d0")]
    for r in RACKS[:-1]:
        spec_ref = draw(hs.sampled_from(DOMAINS))
        obj = rack(r, max_w=draw(hs.integers(1_000, 20_000)))
        if spec_ref is not None:
            obj["spec"]["powerDomainRef"] = spec_ref
        objs.append(obj)
    for i in range(draw(hs.integers(1, 14))):
        objs.append(node(f"n{i}", draw(hs.sampled_from(RACKS)), count=draw(hs.integers(1, 4)),
                         min_w=100, max_w=draw(hs.integers(100, 700))))
    return objs


# One change between two recomputations, as (what, argument); the argument picks a node, rack, value.
CHANGES = hs.tuples(hs.sampled_from(["curtail", "report", "overlay", "move", "resize", "rack-domain",
                                     "reparent", "delete", "write-back", "time"]),
                    hs.integers(0, 1_000))


def change(server: Server, what: str, arg: int, now: Any) -> Any:
    objs = server.objects
    nodes = sorted(k for k in objs if k[0] == "GPUNode")
    site = objs["StargateCluster", NS, "site"]
    if what == "curtail":
        curtailment = {"percent": arg % 60, "reason": "grid"} if arg % 3 else None
        power = {**site["spec"]["power"], "curtailment": curtailment}
        server.put({**site, "spec": {**site["spec"], "power": power}})
    elif what in ("report", "overlay") and nodes:
        key = nodes[arg % len(nodes)]
        held = objs[key]
        status = held.get("status") or {}
        held_limit = status.get("powerLimitWatts") or 300
        tel = {"powerWatts": 500, "healthyGPUs": 1, "observedAt": ts(now - timedelta(seconds=arg % 200)),
               "enforcedLimitWatts": held_limit + (arg % 5 - 2) * 50}
        updated = {**held, "status": {**status, "telemetry": tel}}
        if what == "report":
            server.put(updated)  # the agent's write
        else:
            objs[key] = updated  # laid over by the engine, no new resourceVersion
    elif what == "move" and nodes:
        held = objs[nodes[arg % len(nodes)]]
        server.put({**held, "spec": {**held["spec"], "rackRef": RACKS[arg % len(RACKS)]}})
    elif what == "resize" and nodes:
        held = objs[nodes[arg % len(nodes)]]
        server.put({**held, "spec": {**held["spec"], "gpu": {**held["spec"]["gpu"], "count": 1 + arg % 4}}})
    elif what == "rack-domain":
        held = objs["Rack", NS, RACKS[arg % 4]]
        spec = {k: v for k, v in held["spec"].items() if k != "powerDomainRef"}
        ref = DOMAINS[arg % 3]
        server.put({**held, "spec": spec if ref is None else {**spec, "powerDomainRef": ref}})
    elif what == "reparent":
        held = objs["PowerDomain", NS, "d0"]
        spec = {k: v for k, v in held["spec"].items() if k != "parentRef"}
        server.put({**held, "spec": spec if arg % 2 else {**spec, "parentRef": "d1"}})
    elif what == "delete" and nodes:
        del objs[nodes[arg % len(nodes)]]
    elif what == "time":
        return now + timedelta(seconds=arg % 90)
    return now


@PROPS
@given(campus(), hs.lists(CHANGES, min_size=1, max_size=12))
def test_the_memos_change_nothing_over_any_sequence_of_changes(objs: list[dict[str, Any]],
                                                               changes: list[tuple[str, int]]) -> None:
    server = Server(objs)
    remembering, forgetting = CampusCache(), CampusCache()
    now = NOW
    for what, arg in [("write-back", 0), *changes]:
        now = change(server, what, arg, now)
        current = list(server.objects.values())
        forgetting.forget()
        staged = stage_campus(current, now, SETTINGS, remembering)
        sent_first = [dict(a) for a in staged.applies]  # what the engine writes before finish()
        kept = staged.finish()
        fresh = plan_campus(current, now, SETTINGS, forgetting)
        assert sent_first == kept.applies  # the first step's applies are the whole plan's
        assert kept.applies == fresh.applies
        assert kept.statuses == fresh.statuses
        assert kept.events == fresh.events
        assert kept.next_change_at == fresh.next_change_at
        if what == "write-back" or arg % 2:
            server.write_back(kept)


def _planned_and_enforced(objs: list[dict[str, Any]]) -> tuple[Server, CampusCache]:
    """A namespace planned once, with nodes a and b reporting that they enforce their first limit."""
    server = Server(objs)
    cache = CampusCache()
    server.write_back(plan_campus(list(server.objects.values()), NOW, SETTINGS, cache))
    for name in ("a", "b"):
        held = server.objects["GPUNode", NS, name]
        server.put({**held, "status": {**held["status"], "telemetry": {
            "powerWatts": 500, "healthyGPUs": 1, "observedAt": ts(NOW), "enforcedLimitWatts": 600}}})
    return server, cache


def test_forgetting_keeps_a_change_under_way() -> None:
    """`forget` drops what was read, not what a raise waits on: after it, the raise still waits
    for the lowered node's confirmation."""
    objs = [cluster(it=1_200), rack("r0"), rack("r1"),
            node("a", "r0", count=1, max_w=700), node("b", "r1", count=1, max_w=700)]
    server, cache = _planned_and_enforced(objs)
    rack_r1 = server.objects["Rack", NS, "r1"]
    server.put({**rack_r1, "spec": {**rack_r1["spec"], "priority": 1000}})
    at = NOW + timedelta(seconds=1)
    first = plan_campus(list(server.objects.values()), at, SETTINGS, cache)
    assert _limits(first) == {"a": 500, "b": 600}  # a lowered at once, b's raise waits for it
    server.write_back(first)
    cache.forget()
    assert cache.spaces[NS].pending == {"a": 600} and not cache.spaces[NS].memos.nodes
    again = list(server.objects.values())
    assert _limits(plan_campus(again, at, SETTINGS, cache)) == {"a": 500, "b": 600}
    assert cache.spaces[NS].memos.nodes  # read again


def _limits(plan: Plan) -> dict[str, int]:
    return {n: w for b in plan.applies if b["kind"] == "PowerLimitSlice"
            for n, w in b["spec"]["limits"].items()}


def test_a_domain_moved_in_the_tree_moves_the_constraints_above_its_racks() -> None:
    """The racks' places in the tree are remembered, and read again when a domain moves: the
    constraints a forced raise names are those of the tree as it is now."""
    r0, r1 = rack("r0"), rack("r1")
    r0["spec"]["powerDomainRef"] = r1["spec"]["powerDomainRef"] = "d1"
    objs = [cluster(it=1_200), domain("d0", None), domain("d2", None), domain("d1", "d0"), r0, r1,
            node("a", "r0", count=1, max_w=700), node("b", "r1", count=1, max_w=700)]
    server, cache = _planned_and_enforced(objs)
    d1 = server.objects["PowerDomain", NS, "d1"]
    server.put({**d1, "spec": {**d1["spec"], "parentRef": "d2"}})
    held_r1 = server.objects["Rack", NS, "r1"]
    server.put({**held_r1, "spec": {**held_r1["spec"], "priority": 1000}})
    lowered = plan_campus(list(server.objects.values()), NOW + timedelta(seconds=1), SETTINGS, cache)
    assert _limits(lowered) == {"a": 500, "b": 600}
    server.write_back(lowered)
    forced = plan_campus(list(server.objects.values()), NOW + timedelta(seconds=32), SETTINGS, cache)
    assert _limits(forced) == {"a": 500, "b": 700}
    (event,) = forced.events
    assert event.reason == "RaisedUnconfirmed"
    assert "PowerDomain/d1, PowerDomain/d2, StargateCluster/site" in event.message
    assert "PowerDomain/d0" not in event.message
