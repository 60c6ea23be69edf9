"""`stargate-operator plan`: JSON List and table output, --now, and exit code 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stargate_operator.cli import build_parser, main

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
    assert items["GPUNode"]["status"]["healthyGPUs"] == 0  # telemetry 2 h old
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
    racks = [{"apiVersion": "stargate.dev/v1alpha1", "kind": "Rack",
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
