"""Power domains for the core's tests: objects and the hypothesis strategies of random domain trees,
with the verdicts and constraints they should get.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import strategies as hs

from helpers.core_objects import NOW, _obj, cluster, node, rack, ts

PRIORITIES = (0, 100, 500, 1000)


def domain(name: str, *, cluster_ref: str = "site", parent: str | None = None, type_: str = "Electrical",
           role: str | None = None, rating: int | None = None, electrical: dict[str, Any] | None = None,
           derate: int = 100, **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterRef": cluster_ref, "type": type_, "deratePercent": derate}
    if parent is not None:
        spec["parentRef"] = parent
    if role is not None:
        spec["role"] = role
    if electrical is not None:
        spec["electrical"] = electrical
    else:
        spec["ratingWatts"] = rating if rating is not None else 1_000_000
    return _obj("PowerDomain", name, spec, **kw)


def fed(name: str, power: str | None = None, cooling: str | None = None, **kw: Any) -> dict[str, Any]:
    """A rack fed by `power` and cooled by `cooling` (domain names)."""
    r = rack(name, **kw)
    if power is not None:
        r["spec"]["powerDomainRef"] = power
    if cooling is not None:
        r["spec"]["coolingDomainRef"] = cooling
    return r


@hs.composite
def tree_sites(draw: hs.DrawFn, broken: bool = True, domains: bool = True) -> list[dict[str, Any]]:
    """One or two sites; an Electrical and a Cooling tree each of depth 1 to 6, some ratings so
    small that domains are overcommitted; broken references and loops; racks of several priorities
    fed and cooled by any domain (or a missing or wrong one)."""
    objs: list[dict[str, Any]] = [
        cluster("s1", it=draw(hs.integers(1, 80_000)), reserve=draw(hs.integers(0, 20)))]
    clusters = ["s1"]
    if draw(hs.booleans()):
        objs.append(cluster("s2", it=draw(hs.integers(1, 80_000))))
        clusters.append("s2")
    by_type: dict[str, list[str]] = {"Electrical": [], "Cooling": []}
    if domains:
        for type_, prefix in (("Electrical", "e"), ("Cooling", "k")):
            depth = draw(hs.integers(1, 6))
            above: list[str] = []
            for level in range(depth):
                here = [f"{prefix}{level}-{i}" for i in range(draw(hs.integers(1, 3)))]
                for name in here:
                    parent = draw(hs.sampled_from(above)) if above else None
                    use_electrical = draw(hs.integers(0, 4)) == 0
                    electrical = ({"voltage": draw(hs.integers(1, 480)),
                                   "amperage": draw(hs.integers(1, 100)),
                                   "phases": draw(hs.sampled_from([1, 3])),
                                   "powerFactor": draw(hs.sampled_from([1.0, 0.95, 0.8]))}
                                  if use_electrical else None)
                    objs.append(domain(name, cluster_ref="s1", parent=parent, type_=type_,
                                       role=draw(hs.sampled_from([None, "RPP", "CDU"])),
                                       rating=draw(hs.integers(1, 40_000)), electrical=electrical,
                                       derate=draw(hs.sampled_from([80, 100, 50]))))
                    by_type[type_].append(name)
                above = here
        if broken:
            for _ in range(draw(hs.integers(0, 3))):
                victim = draw(hs.sampled_from([o for o in objs if o["kind"] == "PowerDomain"]))
                change = draw(hs.sampled_from(["missing-parent", "other-type", "other-site", "no-site",
                                               "loop", "self"]))
                spec = victim["spec"]
                if change == "missing-parent":
                    spec["parentRef"] = "nowhere"
                elif change == "other-type":
                    other = by_type["Cooling" if spec["type"] == "Electrical" else "Electrical"]
                    spec["parentRef"] = draw(hs.sampled_from(other))
                elif change == "other-site":
                    spec["clusterRef"] = "s2"
                elif change == "no-site":
                    spec["clusterRef"] = "gone"
                elif change == "self":
                    spec["parentRef"] = victim["metadata"]["name"]
                else:  # the victim under one of its descendants (or anyone): maybe a loop
                    same = by_type[spec["type"]]
                    spec["parentRef"] = draw(hs.sampled_from(same))
    rack_names = [f"r{i}" for i in range(draw(hs.integers(0, 8)))]
    electrical_refs = [None, *by_type["Electrical"], *by_type["Electrical"]]
    cooling_refs = [None, *by_type["Cooling"]]
    wrong = ["missing", *by_type["Cooling"]] if broken else []
    for name in rack_names:
        power = draw(hs.sampled_from(electrical_refs + wrong))
        wrong_cooling = ["missing", *by_type["Electrical"][:1]] if broken else []
        cooling = draw(hs.sampled_from(cooling_refs + wrong_cooling))
        objs.append(fed(name, power, cooling, cluster_ref=draw(hs.sampled_from([*clusters, "gone"] if broken
                                                                               else clusters)),
                        max_w=draw(hs.integers(100, 30_000)), priority=draw(hs.sampled_from(PRIORITIES))))
    for i in range(draw(hs.integers(0, 16))):
        min_w = draw(hs.integers(1, 300))
        telemetry = draw(hs.none() | hs.fixed_dictionaries({
            "powerWatts": hs.integers(0, 8000), "healthyGPUs": hs.integers(0, 8),
            "observedAt": hs.just(ts(NOW - timedelta(seconds=5)))}))
        objs.append(node(f"n{i}", draw(hs.sampled_from([*rack_names, "missing"])),
                         count=draw(hs.integers(1, 8)), min_w=min_w, max_w=min_w + draw(hs.integers(0, 700)),
                         req=draw(hs.none() | hs.integers(1, 1200)), base=draw(hs.integers(0, 2000)),
                         maintenance=draw(hs.integers(0, 9)) == 0, telemetry=telemetry))
    return objs


@hs.composite
def dense_sites(draw: hs.DrawFn) -> list[dict[str, Any]]:
    """One site, many racks of few priorities under few tight domains of both types: where
    constraints cross and close together, which random trees reach less often."""
    objs: list[dict[str, Any]] = [cluster("s1", it=draw(hs.integers(1000, 60_000)))]
    names: dict[str, list[str]] = {"Electrical": [], "Cooling": []}
    for type_, prefix, most in (("Electrical", "e", 5), ("Cooling", "k", 4)):
        for i in range(draw(hs.integers(0 if type_ == "Cooling" else 1, most))):
            mine = names[type_]
            parent = draw(hs.sampled_from(mine)) if len(mine) > 0 and draw(hs.booleans()) else None
            objs.append(domain(f"{prefix}{i}", cluster_ref="s1", parent=parent, type_=type_,
                               rating=draw(hs.integers(500, 20_000))))
            mine.append(f"{prefix}{i}")
    racks = [f"r{i}" for i in range(draw(hs.integers(2, 12)))]
    for r in racks:
        objs.append(fed(r, draw(hs.sampled_from([None, *names["Electrical"]])),
                        draw(hs.sampled_from([None, *names["Cooling"]])), cluster_ref="s1",
                        priority=draw(hs.sampled_from([0, 1, 2])), max_w=draw(hs.integers(500, 30_000))))
    for i in range(draw(hs.integers(2, 24))):
        min_w = draw(hs.integers(1, 100))
        objs.append(node(f"n{i}", draw(hs.sampled_from(racks)), count=draw(hs.integers(1, 8)), min_w=min_w,
                         max_w=min_w + draw(hs.integers(0, 900)), base=draw(hs.integers(0, 500))))
    return objs


def specs_of(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == kind}


def expected_verdicts(objs: list[dict[str, Any]]) -> dict[str, str | None]:
    """Each domain's Ready reason when invalid, None when valid: straight from the rules."""
    doms, sites = specs_of(objs, "PowerDomain"), specs_of(objs, "StargateCluster")

    def own(name: str) -> str | None:
        d = doms[name]
        if d["clusterRef"] not in sites:
            return "ClusterNotFound"
        p = d.get("parentRef")
        if p is None:
            return None
        if p not in doms:
            return "ParentNotFound"
        if doms[p]["clusterRef"] != d["clusterRef"] or doms[p]["type"] != d["type"]:
            return "ParentMismatch"
        return None

    def on_loop(name: str) -> bool:
        at = name
        for _ in range(len(doms)):
            if own(at) is not None or doms[at].get("parentRef") is None:
                return False
            at = doms[at]["parentRef"]
            if at == name:
                return True
        return False

    out: dict[str, str | None] = {}

    def verdict(name: str) -> str | None:
        if name not in out:
            problem = own(name)
            if problem is None and doms[name].get("parentRef") is not None:
                if on_loop(name):
                    problem = "CycleDetected"
                else:
                    problem = "ParentNotReady" if verdict(doms[name]["parentRef"]) else None
            out[name] = problem
        return out[name]

    for name in doms:
        verdict(name)
    return out


def expected_constraints(objs: list[dict[str, Any]]) -> dict[str, list[str] | None]:
    """Per rack whose site exists: the constraints above it (site first), or None when its power
    path is invalid."""
    doms, sites = specs_of(objs, "PowerDomain"), specs_of(objs, "StargateCluster")
    verdicts = expected_verdicts(objs)

    def chain(name: str) -> list[str]:
        up = doms[name].get("parentRef")
        return [*chain(up), name] if up else [name]

    out: dict[str, list[str] | None] = {}
    for name, spec in specs_of(objs, "Rack").items():
        if spec["clusterRef"] not in sites:
            continue
        found: list[str] | None = [spec["clusterRef"]]
        for field, want in (("powerDomainRef", "Electrical"), ("coolingDomainRef", "Cooling")):
            ref = spec.get(field)
            if ref is None or found is None:
                continue
            d = doms.get(ref)
            if d is None or d["clusterRef"] != spec["clusterRef"] or d["type"] != want or verdicts[ref]:
                found = None
            else:
                found += chain(ref)
        out[name] = found
    return out
