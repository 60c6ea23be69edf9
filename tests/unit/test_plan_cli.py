"""`stargate-operator plan`: JSON List and table output, --now, and exit code 2 on bad input."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from stargate_operator import kinds
from stargate_operator.api.load import load_manifests
from stargate_operator.cli import build_parser, main
from stargate_operator.commands.plan import print_table, with_status
from stargate_operator.core import CoreSettings, plan_namespace
from stargate_operator.units import watts

REPO = Path(__file__).resolve().parents[2]

SITE = """
apiVersion: v1
kind: Namespace
metadata: {name: plan-test}
---
apiVersion: stargate.dev/v1alpha1
kind: StargateCluster
metadata: {name: site, namespace: plan-test}
spec:
  site: {region: test, kind: Onshore, cooling: Air}
  power:
    itCapacityWatts: 10000
    reservePercent: 0
    curtailment: {percent: 50, reason: peak, until: "2026-01-01T13:00:00Z"}
---
apiVersion: stargate.dev/v1alpha1
kind: Rack
metadata: {name: r1, namespace: plan-test}
spec: {clusterRef: site, maxPowerWatts: 20000, priority: 700}
---
apiVersion: stargate.dev/v1alpha1
kind: GPUNode
metadata: {name: n1, namespace: plan-test}
spec:
  rackRef: r1
  gpu: {model: H100-SXM, count: 8, memoryBytes: 80000000000, minPowerWatts: 200, maxPowerWatts: 700}
  basePowerWatts: 1000
status:
  telemetry: {powerWatts: 4000, healthyGPUs: 7, observedAt: "2026-01-01T11:59:30Z"}
---
apiVersion: stargate.dev/v1alpha1
kind: MemoryPool
metadata: {name: cxl, namespace: plan-test}
spec: {clusterRef: site, tier: CXL, capacityBytes: 100}
---
apiVersion: stargate.dev/v1alpha1
kind: MemoryClaim
metadata: {name: c1, namespace: plan-test}
spec: {poolRef: cxl, sizeBytes: 60}
"""


def _plan(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_json_is_a_list_of_every_object_with_its_status(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "site.yaml", SITE)
    code, out, err = _plan(["-f", str(path), "-o", "json", "--now", "2026-01-01T12:00:00Z"], capsys)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "List")
    items = {i["kind"]: i for i in doc["items"]}
    assert set(items) == {"StargateCluster", "Rack", "GPUNode", "MemoryPool", "MemoryClaim"}
    site = items["StargateCluster"]["status"]
    assert site["power"]["budgetWatts"] == 5000  # curtailed 50 % until 13:00
    assert site["gpus"] == {"total": 8, "healthy": 7}
    node = items["GPUNode"]["status"]
    assert node["telemetry"]["powerWatts"] == 4000  # the agent's part is kept
    assert node["powerLimitWatts"] == 500  # (5000 - 1000) / 8
    assert items["MemoryClaim"]["status"]["phase"] == "Bound"
    assert items["MemoryClaim"]["spec"] == {"poolRef": "cxl", "sizeBytes": 60, "priority": 0}


def test_now_decides_curtailment_and_staleness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "site.yaml", SITE)
    code, out, _ = _plan(["-f", str(path), "-o", "json", "--now", "2026-01-01T14:00:00Z"], capsys)
    assert code == 0
    items = {i["kind"]: i for i in json.loads(out)["items"]}
    power = items["StargateCluster"]["status"]["power"]
    assert (power["budgetWatts"], power["allocatedWatts"]) == (10000, 6600)  # curtailment over
    # Its only node's telemetry is 2 h old: every report of the input is late, which reads as the
    # source failing, not the GPUs: health held at the last reading, and the site says so.
    assert items["GPUNode"]["status"]["healthyGPUs"] == 7
    telemetry = {c["type"]: c for c in items["StargateCluster"]["status"]["conditions"]}["TelemetryAvailable"]
    assert (telemetry["status"], telemetry["reason"]) == ("False", "AgentReportsLate")
    code, out, _ = _plan(["-f", str(path), "--now", "2026-01-01T14:00:00Z"], capsys)
    assert "TelemetryAvailable False (AgentReportsLate): 1 of 1 nodes' reports" in out
    code, out, _ = _plan(["-f", str(path), "-o", "json", "--now", "2026-01-01T14:00:00Z",
                          "--stale-after", "86400"], capsys)
    assert {i["kind"]: i for i in json.loads(out)["items"]}["GPUNode"]["status"]["healthyGPUs"] == 7


def test_json_output_fed_back_plans_to_the_same_statuses(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "site.yaml", SITE)
    _, first, _ = _plan(["-f", str(path), "-o", "json", "--now", "2026-01-01T12:00:00Z"], capsys)
    again_path = _write(tmp_path, "planned.json", first)
    code, second, _ = _plan(["-f", str(again_path), "-o", "json", "--now", "2026-01-01T12:00:30Z"], capsys)
    assert code == 0
    assert json.loads(second) == json.loads(first)


def test_table_summarises_each_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "site.yaml", SITE)
    code, out, _ = _plan(["-f", str(path), "--now", "2026-01-01T12:00:00Z"], capsys)
    assert code == 0
    for text in ("StargateCluster plan-test/site", "curtailment 50% (peak)", "r1", "BUDGET-W", "cxl",
                 "c1", "Bound", "5.000 kW"):
        assert text in out, text


def test_table_into_a_file_is_plain_and_unwrapped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rich draws the tables; into a pipe they read as kubectl's do: no escape codes, no trailing
    blanks, a long MESSAGE on one line (grep finds it), the spec defaults filled in from kinds."""
    long_ref = "a-site-whose-name-is-long-enough-to-wrap-any-terminal-" + "x" * 60
    racks = [{"apiVersion": kinds.API_VERSION, "kind": "Rack",
              "metadata": {"name": name, "namespace": "plan-test"},
              "spec": {"clusterRef": ref, "maxPowerWatts": 20000}}
             for name, ref in (("r2", "site"), ("lost", long_ref))]
    extra = "---\n" + yaml.safe_dump_all(racks)
    path = _write(tmp_path, "site.yaml", SITE + extra)
    code, out, _ = _plan(["-f", str(path), "--now", "2026-01-01T12:00:00Z"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert "\x1b" not in out
    assert all(line == line.rstrip() for line in lines)
    header = next(line for line in lines if line.lstrip().startswith("RACK"))
    rows = {line.split()[0]: line.split() for line in lines[lines.index(header) + 1:] if line.strip()}
    assert header.split()[:2] == ["RACK", "PRIORITY"]
    assert rows["r1"][1] == "700" and rows["r2"][1] == "500", "the default priority, from kinds"
    problem = next(line for line in lines if "plan-test/lost" in line)
    assert "ClusterNotFound" in problem and long_ref in problem


def test_samples_plan_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    samples = REPO / "crds" / "samples"
    if not any(samples.glob("*.yaml")):
        pytest.fail(f"no samples in {samples}: the plan command is checked against them")
    code, out, err = _plan(["-f", str(samples), "-o", "json"], capsys)
    assert (code, err) == (0, "")
    items = json.loads(out)["items"]
    assert items and all("status" in i and i["status"]["conditions"] for i in items)
    code, out, _ = _plan(["-f", str(samples)], capsys)
    assert code == 0 and "StargateCluster" in out


BAD = [
    ("field spec.maxPowerWatts", "Rack", "apiVersion: stargate.dev/v1alpha1\nkind: Rack\n"
     "metadata: {name: r1, namespace: ns}\nspec: {clusterRef: c, maxPowerWatts: -5}\n"),
    ("field spec.gpu.count", "GPUNode", "apiVersion: stargate.dev/v1alpha1\nkind: GPUNode\n"
     "metadata: {name: n1, namespace: ns}\nspec:\n  rackRef: r\n  gpu: {model: X, count: 99, memoryBytes: 1,"
     " minPowerWatts: 1, maxPowerWatts: 2}\n"),
    ("field spec.sizeBytes", "MemoryClaim", "apiVersion: stargate.dev/v1alpha1\nkind: MemoryClaim\n"
     "metadata: {name: c1, namespace: ns}\nspec: {poolRef: p}\n"),
    ("field spec.power.reservePercent", "StargateCluster", "apiVersion: stargate.dev/v1alpha1\n"
     "kind: StargateCluster\nmetadata: {name: s, namespace: ns}\nspec:\n  site: {region: r, kind: Onshore,"
     " cooling: Air}\n  power: {itCapacityWatts: 5, reservePercent: 80}\n"),
    ("field kind", "Widget", "apiVersion: stargate.dev/v1alpha1\nkind: Widget\nmetadata: {name: w}\n"),
    ("field spec.tier", "MemoryPool", "apiVersion: stargate.dev/v1alpha1\nkind: MemoryPool\n"
     "metadata: {name: p, namespace: ns}\nspec: {clusterRef: c, tier: SRAM}\n"),
]


@pytest.mark.parametrize(("field", "kind", "text"), BAD, ids=[b[0] for b in BAD])
def test_invalid_manifests_exit_2_naming_file_object_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, kind: str, text: str
) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    code, out, err = _plan(["-f", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert str(path) in err
    assert kind in err
    assert field in err
    assert "Traceback" not in err


def test_unreadable_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _plan(["-f", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "missing.yaml" in err
    bad_yaml = _write(tmp_path, "broken.yaml", "kind: [unclosed\n")
    code, _, err = _plan(["-f", str(bad_yaml)], capsys)
    assert code == 2 and "broken.yaml" in err


def test_duplicate_objects_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path, "a.yaml", SITE)
    b = _write(tmp_path, "b.yaml", SITE)
    code, _, err = _plan(["-f", str(a), "-f", str(b)], capsys)
    assert code == 2
    assert "duplicate" in err and "Rack plan-test/r1" in err and "field metadata.name" in err


def test_bad_now_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "site.yaml", SITE)
    with pytest.raises(SystemExit) as exc:
        main(["plan", "-f", str(path), "--now", "next tuesday"])
    assert exc.value.code == 2
    assert "--now" in capsys.readouterr().err


def test_every_option_has_help() -> None:
    parser = build_parser()
    sub: Any = next(a for a in parser._actions if a.dest == "command")
    plan_parser: Any = sub.choices["plan"]
    for action in plan_parser._actions:
        assert action.help, action.dest


def test_missing_references_are_conditions_not_errors(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    docs = list(yaml.safe_load_all(SITE))
    docs = [d for d in docs if d["kind"] != "StargateCluster"]
    path = _write(tmp_path, "orphans.yaml", yaml.safe_dump_all(docs))
    code, out, _ = _plan(["-f", str(path), "-o", "json", "--now", "2026-01-01T12:00:00Z"], capsys)
    assert code == 0
    rack = next(i for i in json.loads(out)["items"] if i["kind"] == "Rack")
    ready = rack["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "ClusterNotFound")


def test_curtail_plans_a_demand_response_what_if(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "site.yaml", SITE)
    code, out, _ = _plan(["-f", str(path), "-o", "json", "--now", "2026-01-01T14:00:00Z", "--curtail", "20"],
                         capsys)
    assert code == 0
    site = next(i for i in json.loads(out)["items"] if i["kind"] == "StargateCluster")
    assert site["spec"]["power"]["curtailment"]["percent"] == 20
    assert site["status"]["power"]["budgetWatts"] == 8000  # 10000 x 0.8, from now on
    with pytest.raises(SystemExit):
        main(["plan", "-f", str(path), "--curtail", "120"])


# --- the power tree ----------------------------------------------------------------------------

def _section(out: str, site: str, first_header: str) -> list[str]:
    """The lines of one site's table that starts with the header ``first_header``, header first."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"StargateCluster {site}"))
    head = next(i for i in range(start, len(lines)) if lines[i].lstrip().startswith(first_header))
    end = next((i for i in range(head, len(lines)) if not lines[i].strip()), len(lines))
    return lines[head:end]


_RIGHT = {"USABLE", "ALLOCATED", "HEADROOM", "RACKS", "PRIORITY", "NODES", "GPUS", "BUDGET-W", "DEMAND-W",
          "FLOOR-W", "MEASURED-W"}


def _cells(table: list[str], *columns: str) -> dict[str, dict[str, str]]:
    """Rows of a kubectl-style table by their first cell (tree guides stripped), with its indent and
    the cells of ``columns``: a left-aligned cell starts under its header, a right-aligned one ends
    under it, and cells are two spaces or more apart."""
    header, rows = table[0], table[1:]
    out: dict[str, dict[str, str]] = {}
    for line in rows:
        first = re.split(r"\s{2,}", line.strip(" │├└─|`"))[0]
        cells = {"_indent": str(line.index(first))}
        for col in columns:
            start = header.index(col)
            if col in _RIGHT:
                end = start + len(col)
                blank = line[end - 1:end] in ("", " ")
                cells[col] = "" if blank else re.split(r"\s{2,}", line[:end])[-1]
            else:
                blank = line[start:start + 1] in ("", " ")
                cells[col] = "" if blank else re.split(r"\s{2,}", line[start:])[0]
        out[first] = cells
    return out


def test_table_shows_the_power_tree_indented_with_the_json_figures(
        capsys: pytest.CaptureFixture[str]) -> None:
    samples = str(REPO / "crds" / "samples")
    now = ["--now", "2026-01-01T12:00:00Z"]
    code, out, _ = _plan(["-f", samples, *now], capsys)
    assert code == 0
    _, doc, _ = _plan(["-f", samples, "-o", "json", *now], capsys)
    statuses = {i["metadata"]["name"]: i["status"] for i in json.loads(doc)["items"]
                if i["kind"] == "PowerDomain" and i["metadata"]["namespace"] == "stargate-abilene"}

    tree = _section(out, "stargate-abilene/abilene", "DOMAIN")
    names = [*_cells(tree)]
    # Electrical from its top, then Cooling; each switchboard before its PDUs, children by name.
    assert names == ["utility-13kv", "swbd-b1", "pdu-b1-a", "pdu-b1-b", "swbd-b2",
                     "fwl-b1", "cdu-b1-a", "cdu-b1-b"]
    rows = _cells(tree, "TYPE", "ROLE", "USABLE", "ALLOCATED", "HEADROOM", "RACKS", "FLAGS")
    indent = {n: int(r["_indent"]) for n, r in rows.items()}
    assert indent["utility-13kv"] < indent["swbd-b1"] == indent["swbd-b2"] < indent["pdu-b1-a"]
    assert indent["pdu-b1-a"] == indent["pdu-b1-b"]
    assert indent["fwl-b1"] == indent["utility-13kv"] < indent["cdu-b1-a"] == indent["swbd-b1"]
    assert sorted(names) == sorted(statuses), "every domain of the site, once"
    for n, r in rows.items():
        st = statuses[n]
        assert r["HEADROOM"] == watts(st["headroomWatts"], digits=3), n
        assert r["USABLE"] == watts(st["usableWatts"], digits=3), n
        assert r["ALLOCATED"] == watts(st["allocatedWatts"], digits=3), n
        assert r["RACKS"] == str(st["racks"]), n
        assert (r["FLAGS"], r["TYPE"]) == ("", "Cooling" if n.startswith(("fwl", "cdu")) else "Electrical")
    assert (rows["pdu-b1-a"]["ROLE"], rows["pdu-b1-a"]["HEADROOM"]) == ("FloorPDU", "229.200 kW")

    # north-sea: the seawater loop binds; the racks it holds say so.
    sea = _cells(_section(out, "stargate-north-sea/north-sea", "DOMAIN"), "HEADROOM", "FLAGS")
    assert sea["seawater-loop"] == {"_indent": "2", "HEADROOM": "0 W", "FLAGS": "Constrained"}
    racks = _cells(_section(out, "stargate-north-sea/north-sea", "RACK"), "CAPPED", "LIMITED-BY")
    assert {n: (r["CAPPED"], r["LIMITED-BY"]) for n, r in racks.items()} == {
        "gb200-f01": ("False", ""), "gb200-f02": ("True", "seawater-loop"),
        "h200-f01": ("True", "seawater-loop")}


BROKEN_TREE = SITE + """
---
apiVersion: stargate.dev/v1alpha1
kind: PowerDomain
metadata: {name: top, namespace: plan-test}
spec: {clusterRef: site, role: Utility, ratingWatts: 50000, deratePercent: 100}
---
apiVersion: stargate.dev/v1alpha1
kind: PowerDomain
metadata: {name: tiny, namespace: plan-test}
spec: {clusterRef: site, parentRef: top, role: RPP, ratingWatts: 1000, deratePercent: 100}
---
apiVersion: stargate.dev/v1alpha1
kind: PowerDomain
metadata: {name: loop-a, namespace: plan-test}
spec: {clusterRef: site, parentRef: loop-b, ratingWatts: 10000}
---
apiVersion: stargate.dev/v1alpha1
kind: PowerDomain
metadata: {name: loop-b, namespace: plan-test}
spec: {clusterRef: site, parentRef: loop-a, ratingWatts: 10000}
---
apiVersion: stargate.dev/v1alpha1
kind: PowerDomain
metadata: {name: orphan, namespace: plan-test}
spec: {clusterRef: site, parentRef: nowhere, type: Cooling, ratingWatts: 10000}
---
apiVersion: stargate.dev/v1alpha1
kind: PowerDomain
metadata: {name: orphan-child, namespace: plan-test}
spec: {clusterRef: site, parentRef: orphan, type: Cooling, ratingWatts: 10000}
---
apiVersion: stargate.dev/v1alpha1
kind: Rack
metadata: {name: r2, namespace: plan-test}
spec: {clusterRef: site, maxPowerWatts: 20000, powerDomainRef: loop-a}
"""


def test_a_broken_tree_prints_its_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A loop of parents, a missing parent and an overcommitted domain: every domain is on a line
    with what is wrong with it, the sound tree first, and the plan goes on."""
    tree_site = BROKEN_TREE.replace("spec: {clusterRef: site, maxPowerWatts: 20000, priority: 700}",
                                    "spec: {clusterRef: site, maxPowerWatts: 20000, priority: 700, "
                                    "powerDomainRef: tiny}")
    path = _write(tmp_path, "broken.yaml", tree_site)
    code, out, err = _plan(["-f", str(path), "--now", "2026-01-01T12:00:00Z"], capsys)
    assert (code, err) == (0, "")
    tree = _section(out, "plan-test/site", "DOMAIN")
    rows = _cells(tree, "TYPE", "HEADROOM", "FLAGS")
    assert [*rows] == ["top", "tiny", "loop-a", "loop-b", "orphan", "orphan-child"]
    assert int(rows["tiny"]["_indent"]) > int(rows["top"]["_indent"])
    # tiny's 1000 W under r1's floor of 1000 + 8 x 200 W: overcommitted, headroom negative.
    assert rows["tiny"]["FLAGS"] == "Overcommitted, Constrained, OverLimit"  # r1 draws 4000 W
    assert rows["tiny"]["HEADROOM"] == "-1.600 kW"
    assert rows["loop-a"]["FLAGS"] == rows["loop-b"]["FLAGS"] == "invalid: CycleDetected"
    assert rows["orphan"] == {"_indent": "2", "TYPE": "Cooling", "HEADROOM": "8.000 kW",
                              "FLAGS": "invalid: ParentNotFound"}
    assert rows["orphan-child"]["FLAGS"] == "invalid: ParentNotReady"
    assert int(rows["orphan-child"]["_indent"]) > int(rows["orphan"]["_indent"])
    racks = _cells(_section(out, "plan-test/site", "RACK"), "LIMITED-BY", "READY")
    assert racks["r1"]["LIMITED-BY"] == "tiny"
    assert racks["r2"] == {"_indent": "2", "LIMITED-BY": "", "READY": "False (PowerPathInvalid)"}
    assert "its chain of parents loops: loop-a -> loop-b -> loop-a" in out  # in Not ready


def test_in_a_terminal_the_tree_fits_120_columns_and_negative_headroom_is_red(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "120")
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    for paths in ([str(REPO / "crds" / "samples")], [str(_write(tmp_path, "t.yaml", BROKEN_TREE.replace(
            "priority: 700}", "priority: 700, powerDomainRef: tiny}")))]):
        bodies = [obj.body for obj in load_manifests(paths)]
        planned = plan_namespace(bodies, now, CoreSettings())
        out = Terminal()
        print_table(with_status(bodies, planned), planned, now, out)
        plain = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
        assert max(len(line.rstrip()) for line in plain.splitlines()) <= 120
        for header in ("DOMAIN", "HEADROOM", "FLAGS", "LIMITED-BY", "MEASURED-W"):
            assert header in plain, header  # no column cut short
    assert re.search(r"\x1b\[31m\s*-1\.600 kW", out.getvalue()), "negative headroom in red"


def test_a_site_without_domains_prints_no_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "site.yaml", SITE)
    code, out, _ = _plan(["-f", str(path), "--now", "2026-01-01T12:00:00Z"], capsys)
    assert code == 0
    assert "DOMAIN" not in out and "LIMITED-BY" not in out
    header = _section(out, "plan-test/site", "RACK")[0]
    assert header.split() == ["RACK", "PRIORITY", "NODES", "GPUS", "BUDGET-W", "DEMAND-W", "FLOOR-W",
                              "MEASURED-W", "CAPPED", "OVER", "READY"]


def test_json_has_every_power_domain_with_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _plan(["-f", str(REPO / "crds" / "samples"), "-o", "json"], capsys)
    assert code == 0
    domains = {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in json.loads(out)["items"]
               if i["kind"] == "PowerDomain"}
    assert {ns for ns, _ in domains} == {"stargate-abilene", "stargate-north-sea"}
    assert len(domains) == 11
    for key, item in domains.items():
        assert item["apiVersion"] == "stargate.dev/v1alpha1"
        st = item["status"]
        assert st["headroomWatts"] == st["usableWatts"] - st["allocatedWatts"], key
        assert st["path"][-1] == key[1]
        assert [c["type"] for c in st["conditions"]] == ["Ready", "Overcommitted", "Constrained", "OverLimit"]
    pdu = domains["stargate-abilene", "pdu-b1-a"]["status"]
    assert pdu["path"] == ["utility-13kv", "swbd-b1", "pdu-b1-a"]
    loop = domains["stargate-north-sea", "seawater-loop"]["status"]
    assert (loop["usableWatts"], loop["allocatedWatts"], loop["headroomWatts"]) == (232000, 232000, 0)


def test_plan_refuses_an_unknown_enforcement_naming_the_field(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "site.yaml", SITE.replace("    reservePercent: 0\n",
                                                      "    reservePercent: 0\n    enforcement: Sometimes\n"))
    code, _, err = _plan(["-f", str(path)], capsys)
    assert code != 0
    assert "spec.power.enforcement" in err and "Observe" in err, err


def test_plan_shows_what_observe_would_cap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "site.yaml", SITE.replace("    reservePercent: 0\n",
                                                      "    reservePercent: 0\n    enforcement: Observe\n"))
    code, out, _ = _plan(["-f", str(path), "-o", "json", "--now", "2026-01-01T12:00:00Z"], capsys)
    assert code == 0
    items = {i["kind"]: i for i in json.loads(out)["items"]}
    # 4000 W measured against 1000 + 8 x 500 W allocated: nothing above its limit
    observe = items["StargateCluster"]["status"]["power"]["observe"]
    assert observe == {"nodesOverLimit": 0, "wattsOverLimit": 0}
    assert items["GPUNode"]["status"]["powerEnforcement"] == "Observe"
