"""The samples under crds/samples/: they load, they hang together, their figures make sense; and bad
manifests give one clear line per problem naming the file, the object and the field."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from stargate_operator.api.load import LoadedObject, ManifestError, load_manifests

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "crds" / "samples"


@pytest.fixture(scope="module")
def objects() -> list[LoadedObject]:
    return load_manifests([SAMPLES])


def by_kind(objects: list[LoadedObject], kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [o.body for o in objects if o.kind == kind and (namespace is None or o.namespace == namespace)]


def test_samples_are_current_with_their_generator() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "hack/gen-samples.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_samples_load_and_count(objects: list[LoadedObject]) -> None:
    counts = Counter(o.kind for o in objects)
    assert counts == {"StargateCluster": 2, "Rack": 7, "GPUNode": 84, "MemoryPool": 6, "MemoryClaim": 11,
                      "PowerDomain": 11}
    assert sum(o.body["spec"]["gpu"]["count"] for o in objects if o.kind == "GPUNode") == 384


def test_each_site_has_its_own_namespace_and_the_namespaces_are_in_the_samples(
    objects: list[LoadedObject],
) -> None:
    sites = {o.namespace: o.name for o in objects if o.kind == "StargateCluster"}
    assert sites == {"stargate-abilene": "abilene", "stargate-north-sea": "north-sea"}
    docs = list(yaml.safe_load_all((SAMPLES / "00-namespaces.yaml").read_text()))
    assert {d["metadata"]["name"] for d in docs if d and d["kind"] == "Namespace"} == set(sites)
    assert {o.namespace for o in objects} == set(sites)


def test_every_reference_resolves(objects: list[LoadedObject]) -> None:
    names = {(o.namespace, o.kind, o.name) for o in objects}
    refs = {
        "Rack": ("clusterRef", "StargateCluster"),
        "GPUNode": ("rackRef", "Rack"),
        "MemoryPool": ("clusterRef", "StargateCluster"),
        "MemoryClaim": ("poolRef", "MemoryPool"),
    }
    for o in objects:
        if o.kind in refs:
            field, kind = refs[o.kind]
            assert (o.namespace, kind, o.body["spec"][field]) in names, f"{o.kind} {o.name}: {field}"
        if o.kind == "MemoryPool" and "rackRef" in o.body["spec"]:
            assert (o.namespace, "Rack", o.body["spec"]["rackRef"]) in names


def test_sites_as_designed(objects: list[LoadedObject]) -> None:
    (onshore,) = by_kind(objects, "StargateCluster", "stargate-abilene")
    (floating,) = by_kind(objects, "StargateCluster", "stargate-north-sea")
    assert onshore["spec"]["site"] | {"region": ""} == {
        "region": "",
        "kind": "Onshore",
        "cooling": "DirectLiquid",
        "designPUE": 1.2,
    }
    assert floating["spec"]["site"] | {"region": ""} == {
        "region": "",
        "kind": "Floating",
        "cooling": "Seawater",
        "designPUE": 1.05,
    }


def _floor(node: dict[str, Any]) -> int:
    s = node["spec"]
    return int(s["basePowerWatts"] + s["gpu"]["count"] * s["gpu"]["minPowerWatts"])


def _demand(node: dict[str, Any]) -> int:
    s, g = node["spec"], node["spec"]["gpu"]
    per_gpu = min(
        max(g.get("requestedPowerWatts", g["maxPowerWatts"]), g["minPowerWatts"]), g["maxPowerWatts"]
    )
    return _floor(node) if s["maintenance"] else int(s["basePowerWatts"] + g["count"] * per_gpu)


def test_power_figures_make_sense(objects: list[LoadedObject]) -> None:
    racks = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(objects, "Rack")}
    floor: Counter[str] = Counter()
    demand: Counter[str] = Counter()
    for (ns, name), rack in racks.items():
        nodes = [n for n in by_kind(objects, "GPUNode", ns) if n["spec"]["rackRef"] == name]
        models = {n["spec"]["gpu"]["model"] for n in nodes}
        assert len(models) == 1
        if models == {"GB200"}:  # NVL72: 18 trays of 4 GPUs, 1.0-1.2 kW each, 192 GB HBM, about 132 kW a rack
            assert len(nodes) == 18
            assert all(n["spec"]["gpu"]["count"] == 4 for n in nodes)
            assert all(1000 <= n["spec"]["gpu"]["maxPowerWatts"] <= 1200 for n in nodes)
            assert all(n["spec"]["gpu"]["memoryBytes"] == 192 * 10**9 for n in nodes)
            assert 120_000 <= rack["spec"]["maxPowerWatts"] <= 132_000
        else:  # DGX H100/H200: 8 GPUs of 200-700 W, 80 or 141 GB
            assert all(n["spec"]["gpu"]["count"] == 8 for n in nodes)
            assert all(n["spec"]["gpu"]["maxPowerWatts"] == 700 for n in nodes)
            assert all(n["spec"]["gpu"]["minPowerWatts"] == 200 for n in nodes)
            assert {n["spec"]["gpu"]["memoryBytes"] for n in nodes} <= {80 * 10**9, 141 * 10**9}
            assert all(n["spec"]["basePowerWatts"] + 8 * 700 <= 10_200 for n in nodes)
        rack_floor = sum(_floor(n) for n in nodes)
        rack_demand = min(sum(_demand(n) for n in nodes), rack["spec"]["maxPowerWatts"])
        assert rack_floor <= rack["spec"]["maxPowerWatts"], f"{name} is misconfigured"
        floor[ns] += rack_floor
        demand[ns] += rack_demand
    for site in by_kind(objects, "StargateCluster"):
        ns = site["metadata"]["namespace"]
        power = site["spec"]["power"]
        usable = power["itCapacityWatts"] * (100 - power["reservePercent"]) // 100
        if site["spec"]["site"]["kind"] == "Onshore":
            assert usable >= demand[ns] * 1.1, "the onshore site is comfortably powered"
        else:
            assert floor[ns] < usable < demand[ns], "the floating site is tight: priorities matter"
    priorities = {ns: {r["spec"]["priority"] for (n, _), r in racks.items() if n == ns} for ns, _ in racks}
    assert all(len(p) >= 3 for p in priorities.values()), "racks of several priorities"
    assert any(n["spec"]["maintenance"] for n in by_kind(objects, "GPUNode"))


def test_memory_pools_of_every_tier_and_claims_of_several_priorities(objects: list[LoadedObject]) -> None:
    for ns in ("stargate-abilene", "stargate-north-sea"):
        pools = by_kind(objects, "MemoryPool", ns)
        assert {p["spec"]["tier"] for p in pools} == {"HBM", "DRAM", "CXL"}
        claims = by_kind(objects, "MemoryClaim", ns)
        assert len({c["spec"]["priority"] for c in claims}) >= 3
        cxl = next(p for p in pools if p["spec"]["tier"] == "CXL")
        on_cxl = sum(
            c["spec"]["sizeBytes"] for c in claims if c["spec"]["poolRef"] == cxl["metadata"]["name"]
        )
        assert on_cxl > cxl["spec"]["capacityBytes"], "one CXL claim waits for room"


def test_every_domain_reference_resolves_to_a_domain_of_the_right_type(objects: list[LoadedObject]) -> None:
    domains = {(o.namespace, o.name): o.body["spec"] for o in objects if o.kind == "PowerDomain"}
    sites = {(o.namespace, o.name) for o in objects if o.kind == "StargateCluster"}
    for (ns, name), spec in domains.items():
        assert (ns, spec["clusterRef"]) in sites, name
        if "parentRef" in spec:
            parent = domains[(ns, spec["parentRef"])]
            assert (parent["type"], parent["clusterRef"]) == (spec["type"], spec["clusterRef"]), name
    for o in objects:
        if o.kind == "Rack":
            for field, want in (("powerDomainRef", "Electrical"), ("coolingDomainRef", "Cooling")):
                if field in o.body["spec"]:
                    assert domains[(o.namespace, o.body["spec"][field])]["type"] == want, (o.name, field)


def _plan(objects: list[LoadedObject], derate: dict[str, int] | None = None
          ) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The samples planned by the core (`derate`: deratePercent of named domains, for a what-if)."""
    from stargate_operator.core import CoreSettings, plan_namespace
    from stargate_operator.core.wire import from_epoch

    bodies = [o.body for o in objects]
    for name, percent in (derate or {}).items():
        bodies = [{**b, "spec": {**b["spec"], "deratePercent": percent}}
                  if b["kind"] == "PowerDomain" and b["metadata"]["name"] == name else b for b in bodies]
    return plan_namespace(bodies, from_epoch(0), CoreSettings()).statuses


def test_abilene_is_a_ladder_from_a_13_8_kv_feed_down_to_its_racks(objects: list[LoadedObject]) -> None:
    spec = {o.name: o.body["spec"] for o in objects
            if o.kind == "PowerDomain" and o.namespace == "stargate-abilene"}
    utility = spec["utility-13kv"]
    assert utility["electrical"] == {"voltage": 13_800, "amperage": 40, "phases": 3, "powerFactor": 1.0}
    assert "ratingWatts" not in utility and "parentRef" not in utility
    statuses = _plan(objects)
    pdom = {n: statuses[("PowerDomain", "stargate-abilene", n)] for n in spec}
    # NVIDIA DPS's example tree: utility about 750 kW -> switchboard 1.6 MW -> floor PDUs 450 kW
    assert 700_000 <= pdom["utility-13kv"]["usableWatts"] <= 800_000
    assert pdom["swbd-b1"]["usableWatts"] >= 1_600_000
    assert {pdom[p]["usableWatts"] for p in ("pdu-b1-a", "pdu-b1-b")} == {450_000}
    assert pdom["pdu-b1-a"]["path"] == ["utility-13kv", "swbd-b1", "pdu-b1-a"]
    assert {s["racks"] for n, s in pdom.items() if n.startswith("cdu-")} == {2}
    # comfortably powered: nothing limits a rack, every level has headroom
    assert all(s["headroomWatts"] > 0 or s["racks"] == 0 for s in pdom.values())
    racks = [s for k, s in statuses.items() if k[0] == "Rack" and k[1] == "stargate-abilene"]
    assert racks and all(r["power"]["budgetWatts"] == r["power"]["demandWatts"] for r in racks)


def test_north_sea_is_limited_by_its_seawater_loop_on_a_warm_sea_day(objects: list[LoadedObject]) -> None:
    statuses = _plan(objects)
    ns = "stargate-north-sea"
    loop = statuses[("PowerDomain", ns, "seawater-loop")]
    site = statuses[("StargateCluster", ns, "north-sea")]["power"]
    assert loop["floorWatts"] < loop["usableWatts"] < min(site["budgetWatts"], loop["demandWatts"])
    assert next(c for c in loop["conditions"] if c["type"] == "Constrained")["status"] == "True"
    limited = {k[2]: s["power"].get("limitedBy") for k, s in statuses.items()
               if k[0] == "Rack" and k[1] == ns}
    # the high-priority rack gets its demand; the others are capped by the loop, not by the site
    assert limited == {"gb200-f01": None, "gb200-f02": "seawater-loop", "h200-f01": "seawater-loop"}
    assert site["allocatedWatts"] == loop["usableWatts"] < site["budgetWatts"]
    # A cooler day (90 %: 261 kW): the site's budget runs out first and limits the training rack.
    cooler = _plan(objects, derate={"seawater-loop": 90})
    racks = {k[2]: s["power"] for k, s in cooler.items() if k[0] == "Rack" and k[1] == ns}
    assert (racks["gb200-f02"]["budgetWatts"], racks["gb200-f02"]["limitedBy"]) == (103_400, "north-sea")


def test_the_grid_events_are_a_feed_cap_on_abilene_and_a_dispatch_to_north_sea(
        objects: list[LoadedObject]) -> None:
    """crds/samples/grid-events/: nothing changes before the 4CP afternoon; during it abilene's
    utility feed holds 250 kW and the priorities decide beneath it; north-sea's dispatch takes 20 %
    off its budget from its start on."""
    from stargate_operator.core import CoreSettings, plan_namespace
    from stargate_operator.core.wire import parse_epoch

    events = load_manifests([SAMPLES / "grid-events"])
    assert {o.kind for o in events} == {"GridEvent"}
    both = [o.body for o in objects] + [o.body for o in events]

    def at(when: str) -> dict[tuple[str, str, str], Any]:
        return plan_namespace(both, datetime.fromisoformat(when), CoreSettings()).statuses

    def budgets(statuses: dict[tuple[str, str, str], Any], ns: str) -> dict[str, int]:
        return {k[2]: s["power"]["budgetWatts"] for k, s in statuses.items() if k[0] == "Rack" and k[1] == ns}

    ab, ns = "stargate-abilene", "stargate-north-sea"
    (cap,) = [o.body for o in events if o.namespace == ab]
    assert cap["spec"]["powerDomainRef"] == "utility-13kv" and cap["spec"]["limitWatts"] == 250_000
    quiet = plan_namespace([o.body for o in objects], datetime.fromisoformat("2027-08-16T21:00:00+00:00"),
                           CoreSettings()).statuses
    before = at("2027-08-16T19:59:59+00:00")
    assert budgets(before, ab) == budgets(quiet, ab)
    assert before[("GridEvent", ab, "ercot-4cp-2027-08-16")]["phase"] == "Scheduled"
    during = at("2027-08-16T21:00:00+00:00")
    assert budgets(during, ab) == {"gb200-r01": 118_800, "gb200-r02": 81_600, "h200-r01": 24_800,
                                   "h100-r01": 24_800}
    event = during[("GridEvent", ab, "ercot-4cp-2027-08-16")]
    assert (event["phase"], event["targetWatts"], event["allocatedWatts"]) == ("Active", 250_000, 250_000)
    assert during[("PowerDomain", ab, "utility-13kv")]["usableWatts"] == 250_000
    after = at("2027-08-16T22:00:00+00:00")
    assert budgets(after, ab) == budgets(quiet, ab)
    # north-sea's dispatch: open-ended from 2026-04-12T17:00Z; 247,000 W less 20 %
    (dispatch,) = [o.body for o in events if o.namespace == ns]
    assert "end" not in dispatch["spec"] and dispatch["spec"]["reducePercent"] == 20
    assert parse_epoch(dispatch["spec"]["start"]) == parse_epoch("2026-04-12T17:00:00Z")
    site = during[("StargateCluster", ns, "north-sea")]["power"]
    assert site["budgetWatts"] == 197_600 == site["allocatedWatts"]
    assert budgets(during, ns) == {"gb200-f01": 111_600, "gb200-f02": 61_200, "h200-f01": 24_800}
    assert at("2026-04-12T16:59:59+00:00")[("StargateCluster", ns, "north-sea")]["power"]["budgetWatts"] \
        == 247_000


# ---- bad manifests: one line per problem, naming the file, the object and the field path ----

GOOD_RACK = """\
apiVersion: v1
kind: Namespace
metadata: {name: sg}
---
apiVersion: stargate.dev/v1alpha1
kind: Rack
metadata: {name: gb200-r01, namespace: sg}
spec:
  clusterRef: abilene
  maxPowerWatts: 132000
  priority: 900
"""


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            ("maxPowerWatts: 132000", "maxPowerWatts: lots"),
            "spec.maxPowerWatts",
            "valid integer (got 'lots')",
        ),
        (("maxPowerWatts: 132000", "maxPowerWatts: '132000'"), "spec.maxPowerWatts", "valid integer"),
        (("priority: 900", "priority: 1001"), "spec.priority", "less than or equal to 1000 (got 1001)"),
        (("priority: 900", "priority: [900]"), "spec.priority", "valid integer"),
        (("  maxPowerWatts: 132000\n", ""), "spec.maxPowerWatts", "required field is missing"),
        (("clusterRef: abilene", "clusterRef: Abilene_1"), "spec.clusterRef", "pattern"),
        (("priority: 900", "priority: 900\n  colour: red"), "spec.colour", "unknown field"),
        (("spec:\n", "spec:\n  location: {hall: b1, rack: 3}\n"), "spec.location.rack", "unknown field"),
    ],
)
def test_bad_manifest_message_names_file_object_and_field(
    tmp_path: Path, change: tuple[str, str], field: str, words: str
) -> None:
    path = tmp_path / "racks.yaml"
    path.write_text(GOOD_RACK.replace(*change))
    with pytest.raises(ManifestError) as info:
        load_manifests([tmp_path])
    msg = str(info.value)
    assert msg.startswith(f"{path}: Rack sg/gb200-r01 (document 2): field {field}: "), msg
    assert words in msg, msg
    assert len(msg.splitlines()) == 1 and "Traceback" not in msg


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "document 1: expected a mapping, got list"),
        (
            "apiVersion: stargate.dev/v1alpha1\nkind: Rak\nmetadata: {name: r}\nspec: {}\n",
            "Rak default/r (document 1): field kind: unknown kind 'Rak'",
        ),
        (
            "apiVersion: stargate.dev/v1beta1\nkind: Rack\nmetadata: {name: r}\nspec: {}\n",
            "field apiVersion: got 'stargate.dev/v1beta1'",
        ),
        (
            "apiVersion: stargate.dev/v1alpha1\nkind: Rack\nspec: {clusterRef: c, maxPowerWatts: 1}\n",
            "Rack default/#1 (document 1): field metadata: required field is missing",
        ),
        (
            "apiVersion: stargate.dev/v1alpha1\nkind: MemoryPool\nmetadata: {name: p}\n"
            "spec: {clusterRef: c, tier: CXL}\n",
            "MemoryPool default/p (document 1): field spec.capacityBytes: a CXL pool needs capacityBytes",
        ),
        (
            "apiVersion: stargate.dev/v1alpha1\nkind: StargateCluster\nmetadata: {name: s}\n"
            "spec: {site: {region: r, kind: Offshore, cooling: Air}, power: {itCapacityWatts: 1}}\n",
            "StargateCluster default/s (document 1): field spec.site.kind: "
            "Input should be 'Onshore' or 'Floating'",
        ),
    ],
)
def test_other_bad_files_are_one_clear_line(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_manifests([path])
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert words in msg, msg
    assert len(msg.splitlines()) == 1


def test_every_problem_in_every_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD_RACK.replace("priority: 900", "priority: -1"))
    (tmp_path / "b.yaml").write_text(GOOD_RACK.replace("maxPowerWatts: 132000", "maxPowerWatts: 0"))
    (tmp_path / "notes.txt").write_text("not a manifest")
    with pytest.raises(ManifestError) as info:
        load_manifests([tmp_path])
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert "a.yaml" in lines[0] and "spec.priority" in lines[0]
    assert "b.yaml" in lines[1] and "spec.maxPowerWatts" in lines[1]


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file or folder"):
        load_manifests([tmp_path / "nope"])


def test_other_kinds_and_lists_are_handled(tmp_path: Path) -> None:
    rack = yaml.safe_load(GOOD_RACK.split("---\n")[1])
    (tmp_path / "list.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [rack]}))
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (loaded,) = load_manifests([tmp_path])
    assert (loaded.kind, loaded.namespace, loaded.name) == ("Rack", "sg", "gb200-r01")
    assert loaded.body["spec"]["priority"] == 900


def test_subfolders_are_not_read_like_kubectl_apply_f_dir(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.yaml").write_text(GOOD_RACK.replace("priority: 900", "priority: -1"))
    assert load_manifests([tmp_path]) == []


def test_plan_refuses_a_bad_manifest_with_exit_2_and_the_same_line(tmp_path: Path) -> None:
    path = tmp_path / "racks.yaml"
    path.write_text(GOOD_RACK.replace("maxPowerWatts: 132000", "maxPowerWatts: lots"))
    cli = Path(sys.executable).parent / "stargate-operator"
    r = subprocess.run([str(cli), "plan", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"{path}: Rack sg/gb200-r01 (document 2): field spec.maxPowerWatts: " in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
