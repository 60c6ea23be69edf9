"""The docs follow the code: the generated reference pages are current, the hand-written Events and
conditions page names exactly the reasons the code uses, every alert links to a runbook section that
exists, `plan -o dot` draws the whole tree, and nothing the project ships points to a document
outside the repository or names internal tracker numbers."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from stargate_operator import kinds
from stargate_operator.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PKG = ROOT / "operator" / "src" / "stargate_operator"
ALERTS = ROOT / "helm" / "stargate-operator" / "files" / "stargate-alerts.yaml"


def test_generated_reference_is_current() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "gen-docs.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_generated_reference_covers_the_code() -> None:
    """Spot checks that the generator reads what it claims to: a field of each kind, a flag of each
    command, a metric of each collector, a value of the chart, every alert."""
    api = (DOCS / "reference" / "api.md").read_text()
    for spec in kinds.KINDS:
        assert f"## {spec.kind}\n" in api, spec.kind
    assert "| `spec.power.reservePercent` | integer (int64) | `5` | >= 0; <= 50 |" in api
    cli = (DOCS / "reference" / "cli.md").read_text()
    for flag in ("`--stale-after`", "`--curtail`", "`--failsafe-after`", "`--enforcement-lag`"):
        assert flag in cli, flag
    metrics = (DOCS / "reference" / "metrics.md").read_text()
    for name in ("`stargate_cluster_power_budget_watts`", "`stargate_reconciles_total` | counter",
                 "`stargate_agent_power_limit_changes_total` | counter", "`stargate_node_gpus`"):
        assert name in metrics, name
    alerts_page = (DOCS / "reference" / "alerts.md").read_text()
    for rule in _alerts():
        assert f"[`{rule['alert']}`]" in alerts_page


# ------------------------------------------------------------------------ Events and conditions

CAMEL = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+$")
# CamelCase literals of the core that are type or kind names, not reasons.
NOT_REASONS = {"CoreSettings", "ObjectKey", "PlanCache", "PlanEvent", *(k.kind for k in kinds.KINDS),
               "TelemetrySource",  # the record of a telemetry source among the planner's objects
               "NoSchedule"}  # the effect of the power-unmanaged taint


def _reasons_in_code() -> set[str]:
    found: set[str] = set()
    for folder in ("core", "agent"):
        for path in (PKG / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and CAMEL.match(node.value):
                    found.add(node.value)
    return found - NOT_REASONS


def _reasons_in_page() -> set[str]:
    text = (DOCS / "reference" / "events.md").read_text()
    return {m for m in re.findall(r"`([A-Za-z]+)`", text) if CAMEL.match(m)} - NOT_REASONS


def test_events_page_names_every_reason_of_the_code() -> None:
    missing = _reasons_in_code() - _reasons_in_page()
    assert not missing, f"docs/reference/events.md does not describe: {sorted(missing)}"


def test_events_page_names_no_reason_the_code_lacks() -> None:
    # Single-word reasons (Bound, Enforced, Evicted, Exhausted ...) are not CamelCase compounds and are
    # checked here against every string literal of the core and the agent.
    words: set[str] = set()
    for folder in ("core", "agent"):
        for path in (PKG / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    words.add(node.value)
    text = (DOCS / "reference" / "events.md").read_text()
    documented = set(re.findall(r"`([A-Z][A-Za-z]+)`", text)) - NOT_REASONS
    stale = documented - words
    assert not stale, f"docs/reference/events.md names reasons the code does not use: {sorted(stale)}"


# --------------------------------------------------------------------------------- runbooks


def _alerts() -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]


def _anchors(page: Path) -> set[str]:
    # mkdocs' toc slugs: lower case, spaces to dashes, other punctuation dropped
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)}


def test_every_alert_links_to_its_runbook_section() -> None:
    anchors = _anchors(DOCS / "operations" / "runbooks.md")
    for rule in _alerts():
        url = rule["annotations"]["runbook_url"]  # type: ignore[index]
        assert url == f"http://127.0.0.1:8000/operations/runbooks.html#{str(rule['alert']).lower()}", url
        assert url.rsplit("#", 1)[1] in anchors, f"no runbook section for {rule['alert']}"


def test_every_runbook_section_has_meaning_confirmation_and_action() -> None:
    text = (DOCS / "operations" / "runbooks.md").read_text()
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert {s.split("\n", 1)[0] for s in sections} == {str(r["alert"]) for r in _alerts()}
    for s in sections:
        name = s.split("\n", 1)[0]
        for part in ("**Meaning.**", "**Confirm.**", "**Act.**"):
            assert part in s, f"{name}: no {part}"
        assert "```promql" in s, f"{name}: no PromQL to confirm it"


# ------------------------------------------------------------------------------- plan -o dot


def test_plan_dot_draws_every_domain_and_rack_with_its_edges() -> None:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli_main(["plan", "-f", str(ROOT / "crds" / "samples"), "-o", "dot",
                         "--now", "2026-12-07T12:00:00Z"]) == 0
    dot = buf.getvalue()
    assert dot.startswith("digraph power {") and dot.rstrip().endswith("}")
    objects = [d for f in sorted((ROOT / "crds" / "samples").glob("*.yaml"))
               for d in yaml.safe_load_all(f.read_text()) if d]
    for o in objects:
        ns, name, spec = o["metadata"].get("namespace"), o["metadata"]["name"], o.get("spec", {})
        if o["kind"] == kinds.POWER_DOMAIN.kind:
            node = f'"{ns}/PowerDomain/{name}"'
            parent = (f'"{ns}/PowerDomain/{spec["parentRef"]}"' if spec.get("parentRef")
                      else f'"{ns}/StargateCluster/{spec["clusterRef"]}"')
            assert f"{parent} -> {node}" in dot, (parent, node)
        if o["kind"] == kinds.RACK.kind:
            node = f'"{ns}/Rack/{name}"'
            feed = (f'"{ns}/PowerDomain/{spec["powerDomainRef"]}"' if spec.get("powerDomainRef")
                    else f'"{ns}/StargateCluster/{spec["clusterRef"]}"')
            assert f"{feed} -> {node};" in dot, (feed, node)
    # north-sea on a warm-sea day: the seawater loop holds the training rack, and the label says so
    assert "limited by seawater-loop" in dot


# ------------------------------------------------------------------ speaking for itself

OUTSIDE = [
    re.compile(r"\bDESIGN(?:\.md)?\b"),
    re.compile(r"\.\./shared\b"),
    re.compile(r"\b[Ii]ssues? #?\d+"),
    re.compile(r"(?:^|[\s(])#\d{1,4}(?=[\s).,:]|$)"),
    re.compile(r"\b[Ss]ession \d+\b"),
    re.compile(r"\b[Rr]ound \d+ of (?:work|review)\b"),
    # a section number of a design document (a published paper's "section 3.3.4" is a citation)
    re.compile(r"\b(?:[Ss]ections?|§) \d{1,2}\b(?!\.\d)"),
]


def _shipped_text() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS.rglob("*.md"),
             *(ROOT / "crds").glob("*.yaml"), *(ROOT / "helm").rglob("*.yaml"),
             *(ROOT / "helm").rglob("*.tpl"), ROOT / "helm" / "stargate-operator" / "README.md",
             *PKG.rglob("*.py"), *(ROOT / "hack").glob("*"), *(ROOT / "tests").rglob("*.py")]
    return [f for f in files if f.is_file() and f.resolve() != Path(__file__).resolve()]


@pytest.mark.parametrize("pattern", OUTSIDE, ids=lambda p: p.pattern)
def test_nothing_points_outside_the_repository_or_at_a_tracker(pattern: re.Pattern[str]) -> None:
    hits = []
    for path in _shipped_text():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)


# ------------------------------------------------------------------ the worked examples


def _plan_json(*args: str) -> dict[str, dict[str, object]]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli_main(["plan", *args, "-o", "json", "--now", "2026-12-07T12:00:00Z"]) == 0
    import json

    return {f"{i['kind']}/{i['metadata']['name']}": i for i in json.loads(buf.getvalue())["items"]}


def test_allocation_page_worked_example_is_what_the_core_computes() -> None:
    """docs/concepts/allocation.md derives these figures by hand from docs/examples/allocation.yaml."""
    example = str(DOCS / "examples" / "allocation.yaml")
    items = _plan_json("-f", example)
    budgets = {n: items[f"Rack/{n}"]["status"]["power"]["budgetWatts"]  # type: ignore[index]
               for n in ("rack-a", "rack-b", "rack-c")}
    assert budgets == {"rack-a": 20000, "rack-b": 18200, "rack-c": 6800}
    node = items["GPUNode/b-node-1"]["status"]
    assert node["powerLimitWatts"] == 887 and node["allocatedWatts"] == 4548  # type: ignore[index]
    site = items["StargateCluster/example"]["status"]["power"]  # type: ignore[index]
    assert site["budgetWatts"] == 45000 and site["floorWatts"] == 18000
    curtailed = _plan_json("-f", example, "--curtail", "40")
    assert curtailed["Rack/rack-a"]["status"]["power"]["budgetWatts"] == 16200  # type: ignore[index]
    over = _plan_json("-f", example, "--curtail", "70")["StargateCluster/example"]["status"]
    assert over["power"]["budgetWatts"] == 13500  # type: ignore[index]
    assert "4500" in next(c["message"] for c in over["conditions"]  # type: ignore[index]
                          if c["type"] == "PowerOvercommitted")


def test_memory_page_worked_example_is_what_the_core_computes(tmp_path: Path) -> None:
    """docs/concepts/memory.md: binding, then eviction when node-4 goes into maintenance."""
    import json

    first = _plan_json("-f", str(DOCS / "examples" / "memory.yaml"))
    phases = {n: first[f"MemoryClaim/{n}"]["status"]["phase"]  # type: ignore[index]
              for n in ("train-a", "infer-b", "batch-c", "batch-d")}
    assert phases == {"train-a": "Bound", "infer-b": "Bound", "batch-c": "Pending", "batch-d": "Bound"}
    items = list(first.values())
    for item in items:
        if item["metadata"]["name"] == "node-4":  # type: ignore[index]
            item["spec"]["maintenance"] = True  # type: ignore[index]
    path = tmp_path / "after.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    second = _plan_json("-f", str(path))
    claim = second["MemoryClaim/batch-d"]["status"]
    assert claim["phase"] == "Pending"  # type: ignore[index]
    assert next(c["reason"] for c in claim["conditions"] if c["type"] == "Ready") == "Evicted"  # type: ignore[index]
    assert second["MemoryClaim/train-a"]["status"]["phase"] == "Bound"  # type: ignore[index]


def test_oversubscription_page_worked_example_is_what_the_core_computes(tmp_path: Path) -> None:
    """docs/concepts/oversubscription.md: the four steps of its table, each planned on the statuses
    of the step before with the agents' new reports, as the operator would."""
    import json

    base = [d for d in yaml.safe_load_all((DOCS / "examples" / "oversubscription.yaml").read_text()) if d]

    def step(items: list[dict[str, object]], peak: int, now: str) -> dict[str, dict[str, object]]:
        for item in items:
            if item["kind"] == kinds.GPU_NODE.kind:
                item.setdefault("status", {})["telemetry"] = {  # type: ignore[union-attr]
                    "powerWatts": peak - 200, "peakPowerWatts": peak, "healthyGPUs": 4, "observedAt": now}
        path = tmp_path / "site.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert cli_main(["plan", "-f", str(path), "-o", "json", "--now", now]) == 0
        return {i["metadata"]["name"]: i for i in json.loads(buf.getvalue())["items"]}

    def figures(objs: dict[str, dict[str, object]]) -> tuple[object, ...]:
        pdu = objs["pdu-1"]["status"]
        capping = next(c for c in pdu["conditions"] if c["type"] == "Capping")  # type: ignore[index]
        return (pdu["capping"]["drawWatts"], capping["status"], capping["reason"],  # type: ignore[index]
                pdu["capping"]["allocatableWatts"],  # type: ignore[index]
                objs["rack-a"]["status"]["power"]["budgetWatts"],  # type: ignore[index]
                objs["rack-b"]["status"]["power"]["budgetWatts"],  # type: ignore[index]
                objs["b-node-1"]["status"]["powerLimitWatts"])  # type: ignore[index]

    s1 = step(base, 4000, "2026-12-07T12:00:00Z")
    assert figures(s1) == (80000, "False", "DrawBelowCapAt", 125000, 60000, 60000, 1250)
    assert s1["b-node-1"]["status"]["safeLimitWatts"] == 750  # type: ignore[index]
    assert not s1["rack-a"]["status"].get("safeLimits")  # type: ignore[union-attr]
    s2 = step(list(s1.values()), 4800, "2026-12-07T12:01:00Z")
    assert figures(s2) == (96000, "True", "DrawAboveCapAt", 100000, 60000, 40000, 750)
    s3 = step(list(s2.values()), 4200, "2026-12-07T12:02:00Z")
    assert figures(s3) == (84000, "True", "HoldingBelowUncapAt", 100000, 60000, 40000, 750)
    s4 = step(list(s3.values()), 4200, "2026-12-07T12:03:01Z")
    assert figures(s4) == (84000, "False", "DrawBelowCapAt", 125000, 60000, 60000, 1250)


def test_every_failure_mode_row_names_tests_that_exist() -> None:
    """Each row of the failure-mode table names at least one test, and every test it names
    (`tests/...py::name`, or `::name` after one of the same file) is defined there."""
    page = (DOCS / "operations" / "failure-modes.md").read_text()
    table = page.split("## The table", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in table.splitlines()
            if ln.startswith("| ") and not ln.startswith(("| Failure", "|---"))]
    assert len(rows) >= 13, rows
    defined: dict[str, set[str]] = {}
    for row in rows:
        proven_by = row.rstrip(" |").rsplit(" | ", 1)[1]
        named = re.findall(r"`(tests/[\w/]+\.py)?::(\w+)`|`(tests/[\w/]+\.py)`", proven_by)
        assert named, f"no test named in: {row[:80]}"
        current = ""
        for file, name, whole in named:
            current = file or whole or current
            path = ROOT / current
            assert path.is_file(), f"{current} (in: {row[:60]})"
            if name:
                if current not in defined:
                    tree = ast.parse(path.read_text())
                    defined[current] = {n.name for n in ast.walk(tree)
                                        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
                assert name in defined[current], f"{current}::{name} is not defined (in: {row[:60]})"
