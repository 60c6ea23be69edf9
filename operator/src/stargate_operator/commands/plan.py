"""Compute the status every stargate object would get, from YAML manifests, with no cluster.

Runs exactly the core the operator runs. Status already present in the input (a claim that is
Bound, a node's telemetry) is taken as the current state. Examples:

  stargate-operator plan -f crds/samples
  stargate-operator plan -f site.yaml -f extra-racks/ -o json --now 2026-01-01T12:00:00Z
  stargate-operator plan -f crds/samples --curtail 20      # what if the grid asks for 20 % less

Exit codes: 0 planned; 2 invalid input (the message names the file, the object and the field).
References to missing objects are not errors: they become conditions, as in the operator.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from stargate_operator import kinds
from stargate_operator.api.load import LoadedObject, ManifestError, load_manifests
from stargate_operator.core import CoreSettings, Plan, plan_namespace
from stargate_operator.core.domains import DOMAIN_PROBLEMS
from stargate_operator.core.outage import CONDITION as TELEMETRY_CONDITION
from stargate_operator.core.wire import format_time
from stargate_operator.kinds import RACKS_FIELD
from stargate_operator.process import gc_paused
from stargate_operator.units import bytes_, carbon, watts

EXIT_INVALID = 2


def _rfc3339(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an RFC 3339 time: {value!r} (example: 2026-01-01T12:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {value!r}")
    return seconds


def _percent(value: str) -> int:
    try:
        percent = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole percentage: {value!r}") from None
    if not 0 <= percent <= 100:
        raise argparse.ArgumentTypeError(f"must be 0 to 100, got {percent}")
    return percent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        required=True,
        metavar="PATH",
        help="YAML or JSON manifest file, or folder of them (its own files, like kubectl apply -f DIR); "
        "repeatable. "
        "Multi-document files and kind: List are read; objects of other kinds are skipped.",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "dot"),
        default="table",
        help="table: a per-site summary for people (default); json: a Kubernetes List of every "
        "input stargate object with its computed status, as kubectl get -o json would show it; "
        "dot: each site's power and cooling tree with its budgets, as a Graphviz graph (dot -Tsvg).",
    )
    parser.add_argument(
        "--now",
        type=_rfc3339,
        default=None,
        metavar="RFC3339",
        help="the instant to plan at: decides telemetry freshness and whether a curtailment "
        "still applies (default: the current time).",
    )
    parser.add_argument(
        "--stale-after",
        type=_seconds,
        default=CoreSettings().stale_after_seconds,
        metavar="SECONDS",
        help="age at which a node's telemetry counts as stale and its GPUs as unhealthy "
        "(default: %(default)g, the operator's default).",
    )
    parser.add_argument(
        "--curtail",
        type=_percent,
        default=None,
        metavar="PERCENT",
        help="what if the grid asked every site to shed PERCENT %% of its power: plan as if each "
        f"{kinds.STARGATE_CLUSTER.kind} had spec.power.curtailment.percent = PERCENT with no end, "
        "replacing any curtailment in the manifests (the JSON output shows the spec that was planned).",
    )


def main(args: argparse.Namespace) -> int:
    now: datetime = args.now or datetime.now(UTC)
    try:
        loaded = load_manifests(args.paths)
        _refuse_duplicates(loaded)
    except ManifestError as e:
        print(f"stargate-operator plan: invalid input:\n{e}", file=sys.stderr)
        return EXIT_INVALID
    bodies = [obj.body for obj in loaded]
    if args.curtail is not None:
        bodies = [_curtailed(body, args.curtail) for body in bodies]
    with gc_paused():
        plan = plan_namespace(bodies, now, CoreSettings(stale_after_seconds=args.stale_after))
    items = with_status(bodies, plan)
    if args.output == "json":
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout, indent=2,
                  default=_json_default)
        sys.stdout.write("\n")
    elif args.output == "dot":
        from stargate_operator.commands.plandot import render_dot

        sys.stdout.write(render_dot(items))
    else:
        print_table(items, plan, now, sys.stdout)
    return 0


def _curtailed(body: dict[str, Any], percent: int) -> dict[str, Any]:
    if body.get("kind") != kinds.STARGATE_CLUSTER.kind:
        return body
    spec = dict(body["spec"])
    spec["power"] = {
        **spec["power"],
        "curtailment": {"percent": percent, "reason": "what-if: stargate-operator plan --curtail"},
    }
    return {**body, "spec": spec}


def _refuse_duplicates(loaded: Iterable[LoadedObject]) -> None:
    """Two objects with one kind, namespace and name cannot both exist; which would win is a guess."""
    seen: dict[tuple[str, str, str], LoadedObject] = {}
    problems = []
    for obj in loaded:
        key = (obj.kind, obj.namespace, obj.name)
        first = seen.setdefault(key, obj)
        if first is not obj:
            problems.append(
                f"{obj.path}: {obj.kind} {obj.namespace}/{obj.name} (document {obj.index}): "
                f"field metadata.name: duplicate of {first.path} (document {first.index})"
            )
    if problems:
        raise ManifestError("\n".join(problems))


def with_status(bodies: Iterable[Mapping[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """The input objects with the computed status; the node agent's telemetry is kept as given."""
    out = []
    for body in bodies:
        meta = body["metadata"]
        key = (str(body["kind"]), str(meta.get("namespace") or "default"), str(meta["name"]))
        status = dict(plan.statuses.get(key, {}))
        old = body.get("status")
        if isinstance(old, Mapping) and "telemetry" in old:
            status["telemetry"] = old["telemetry"]
        out.append({**body, "status": status})
    return out


def _json_default(value: object) -> str:
    # YAML turns unquoted timestamps (metadata.creationTimestamp) into datetimes.
    if isinstance(value, datetime):
        return format_time(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# --- the table -------------------------------------------------------------------------------

# Without a terminal (a pipe, a file) no line is wrapped, as kubectl prints: a MESSAGE column stays
# whole for grep. In a terminal rich fits the tables to its width.
_PLAIN_WIDTH = 10_000


class _Printer:
    """Lines and rich tables to ``out``; tables indented by two, headers bold in a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        tty = out.isatty()
        self.console = Console(file=out, force_terminal=tty, width=None if tty else _PLAIN_WIDTH,
                               markup=False, highlight=False, emoji=False)

    def line(self, text: str = "") -> None:
        self.console.print(text, soft_wrap=True)

    def table(self, headers: list[str], rows: list[list[str | Text]], *, numeric: tuple[str, ...] = (),
              wrap: tuple[str, ...] = ("MESSAGE",)) -> None:
        """A kubectl-style table: no rules, upper-case headers, two spaces between columns;
        ``numeric`` columns right-aligned; only the ``wrap`` columns wrap in a narrow terminal."""
        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0))
        for h in headers:
            table.add_column(h, justify="right" if h in numeric else "left", no_wrap=h not in wrap,
                             overflow="fold")
        for row in rows:
            table.add_row(*row)
        indented = Padding.indent(table, 2)
        if self.console.is_terminal:
            self.console.print(indented)
            return
        # Rich pads every cell to its column's width; a file gets no trailing blanks.
        with self.console.capture() as captured:
            self.console.print(indented)
        self.out.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _cond(status: Mapping[str, Any], ctype: str) -> tuple[str, str]:
    for c in status.get("conditions", []):
        if c.get("type") == ctype:
            return str(c.get("status", "")), str(c.get("reason", ""))
    return "", ""


def _ready(status: Mapping[str, Any]) -> str:
    state, reason = _cond(status, "Ready")
    return state if state == "True" else f"{state} ({reason})"


def _watts(n: object) -> str:
    # Three decimals: a planner compares budgets to the watt, 118.800 kW against 118.799 kW.
    # A figure that is not there (a status not written) is "-".
    return watts(n, digits=3)


def _bytes(n: int) -> str:
    return bytes_(n, digits=2)


def print_table(items: list[dict[str, Any]], plan: Plan, now: datetime, out: TextIO) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_kind.setdefault(item["kind"], []).append(item)

    def ns_name(item: Mapping[str, Any]) -> tuple[str, str]:
        return (str(item["metadata"].get("namespace") or "default"), str(item["metadata"]["name"]))

    p = _Printer(out)
    p.line(f"Planned at {format_time(now)}: {len(items)} objects, {len(plan.events)} events")
    clusters = sorted(by_kind.get(kinds.STARGATE_CLUSTER.kind, []), key=ns_name)
    racks = by_kind.get(kinds.RACK.kind, [])
    pools = by_kind.get(kinds.MEMORY_POOL.kind, [])
    claims = by_kind.get(kinds.MEMORY_CLAIM.kind, [])
    domains = by_kind.get(kinds.POWER_DOMAIN.kind, [])
    grid_events = by_kind.get(kinds.GRID_EVENT.kind, [])
    for site in clusters:
        ns, name = ns_name(site)
        st = site["status"]
        spec = site["spec"]
        power = st["power"]
        p.line()
        p.line(f"{kinds.STARGATE_CLUSTER.kind} {ns}/{name}: {spec['site']['region']}, "
               f"{spec['site']['kind']}, {spec['site']['cooling']} cooling, "
               f"design PUE {spec['site'].get('designPUE', kinds.DEFAULT_DESIGN_PUE)}")
        p.line(f"  Ready {_ready(st)}; PowerOvercommitted {_cond(st, 'PowerOvercommitted')[0]}")
        telemetry = next((c for c in st.get("conditions", []) if c.get("type") == TELEMETRY_CONDITION), None)
        if telemetry is not None and telemetry.get("status") == "False":
            # Every report late reads as the source failing, not the GPUs: say which one it is.
            p.line(f"  {TELEMETRY_CONDITION} False ({telemetry.get('reason')}): {telemetry.get('message')}")
        p.line(f"  {st[RACKS_FIELD]} racks, {st['nodes']} nodes, GPUs {st['gpus']['healthy']} "
               f"healthy of {st['gpus']['total']}; HBM {_bytes(st['memory']['hbmBytes'])}, host DRAM "
               f"{_bytes(st['memory']['hostBytes'])}")
        observe = power.get("observe")
        if observe is not None:
            p.line(f"  shadow mode (enforcement Observe): no limit applied; {observe['nodesOverLimit']} "
                   f"nodes draw {_watts(observe['wattsOverLimit'])} above what their limits would allow")
        curtail = spec["power"].get("curtailment")
        if curtail:
            until = curtail.get("until")
            p.line(f"  curtailment {curtail['percent']}% ({curtail.get('reason') or 'no reason given'})"
                   + (f" until {until}" if until else ""))
        p.table(["BUDGET", "ALLOCATED", "DEMAND", "FLOOR", "MEASURED", "FACILITY"],
                [[_watts(power[k]) for k in ("budgetWatts", "allocatedWatts", "demandWatts", "floorWatts",
                                             "measuredWatts", "facilityWatts")]],
                numeric=("BUDGET", "ALLOCATED", "DEMAND", "FLOOR", "MEASURED", "FACILITY"))
        if "carbonGramsPerHour" in st:
            p.line(f"  carbon {carbon(st['carbonGramsPerHour'])}")
        site_events = [e for e in grid_events if ns_name(e)[0] == ns and e["spec"]["clusterRef"] == name]
        if site_events:
            p.line()
            _print_grid_events(sorted(site_events, key=lambda e: (str(e["spec"]["start"]), ns_name(e))), p)
        site_racks = sorted(
            (r for r in racks if ns_name(r)[0] == ns and r["spec"]["clusterRef"] == name),
            key=lambda r: (-r["spec"].get("priority", kinds.DEFAULT_RACK_PRIORITY), r["metadata"]["name"]),
        )
        site_domains = [d for d in domains if ns_name(d)[0] == ns and d["spec"]["clusterRef"] == name]
        if site_domains:
            p.line()
            _print_tree(site_domains, p)
        if site_racks:
            rows: list[list[str | Text]] = []
            for r in site_racks:
                rs = r["status"]
                row: list[str | Text] = [
                    r["metadata"]["name"], str(r["spec"].get("priority", kinds.DEFAULT_RACK_PRIORITY)),
                    str(rs["nodes"]), f"{rs['gpus']['healthy']}/{rs['gpus']['total']}",
                    str(rs["power"]["budgetWatts"]), str(rs["power"]["demandWatts"]),
                    str(rs["power"]["floorWatts"]), str(rs["power"]["measuredWatts"]),
                    _cond(rs, "PowerCapped")[0], _cond(rs, "OverBudget")[0], _ready(rs),
                ]
                if site_domains:  # a site without domains prints as it did before them
                    row.insert(9, rs["power"].get("limitedBy") or "")
                rows.append(row)
            headers = ["RACK", "PRIORITY", "NODES", "GPUS", "BUDGET-W", "DEMAND-W", "FLOOR-W", "MEASURED-W",
                       "CAPPED", "OVER", "READY"]
            if site_domains:
                headers.insert(9, "LIMITED-BY")
            p.line()
            p.table(headers, rows,
                    numeric=("PRIORITY", "NODES", "GPUS", "BUDGET-W", "DEMAND-W", "FLOOR-W", "MEASURED-W"),
                    wrap=("READY",) if site_domains else ())
        site_pools = sorted((pl for pl in pools if ns_name(pl)[0] == ns and pl["spec"]["clusterRef"] == name),
                            key=ns_name)
        if site_pools:
            rows = []
            for pool in site_pools:
                ps = pool["status"]
                rows.append([
                    pool["metadata"]["name"], pool["spec"]["tier"], pool["spec"].get("rackRef") or "site",
                    _bytes(ps["capacityBytes"]), _bytes(ps["allocatedBytes"]), _bytes(ps["availableBytes"]),
                    str(ps["claims"]["bound"]), str(ps["claims"]["pending"]), _ready(ps),
                ])
            p.line()
            p.table(["POOL", "TIER", "SCOPE", "CAPACITY", "ALLOCATED", "AVAILABLE", "BOUND", "PENDING",
                     "READY"], rows, numeric=("CAPACITY", "ALLOCATED", "AVAILABLE", "BOUND", "PENDING"))
            pool_names = {pool["metadata"]["name"] for pool in site_pools}
            site_claims = sorted(
                (c for c in claims if ns_name(c)[0] == ns and c["spec"]["poolRef"] in pool_names),
                key=lambda c: (c["spec"]["poolRef"], -c["spec"].get("priority", kinds.DEFAULT_CLAIM_PRIORITY),
                               c["metadata"]["name"]),
            )
            if site_claims:
                rows = [[
                    c["metadata"]["name"], c["spec"]["poolRef"], _bytes(c["spec"]["sizeBytes"]),
                    str(c["spec"].get("priority", kinds.DEFAULT_CLAIM_PRIORITY)), c["status"]["phase"],
                    _ready(c["status"]),
                ] for c in site_claims]
                p.line()
                p.table(["CLAIM", "POOL", "SIZE", "PRIORITY", "PHASE", "READY"], rows,
                        numeric=("SIZE", "PRIORITY"))
    _print_problems(items, p)


def _print_tree(site_domains: list[dict[str, Any]], p: _Printer) -> None:
    """The site's PowerDomains as trees, each from its top, Electrical then Cooling, children by
    name under their parent with tree guides. A broken tree still prints, and every domain once: a
    domain whose parent is missing, of another site or of the other type is the top of its own
    tree, and a loop of parents (which has no top) is entered at its first name."""
    by_name = {d["metadata"]["name"]: d for d in site_domains}

    def dtype(d: Mapping[str, Any]) -> str:
        return str(d["spec"].get("type") or kinds.DEFAULT_DOMAIN_TYPE)

    def placed_under(d: Mapping[str, Any]) -> str | None:
        parent = by_name.get(d["spec"].get("parentRef") or "")
        return None if parent is None or dtype(parent) != dtype(d) else str(parent["metadata"]["name"])

    children: dict[str, list[str]] = {}
    tops: list[str] = []
    for n in sorted(by_name):
        up = placed_under(by_name[n])
        if up is None:
            tops.append(n)
        else:
            children.setdefault(up, []).append(n)
    # The sound trees first; the tops of broken ones after them.
    tops.sort(key=lambda n: (_invalid(by_name[n].get("status") or {}) is not None, n))
    unicode = p.console.encoding.lower().startswith("utf")
    branch, last, pipe = ("├── ", "└── ", "│   ") if unicode else ("|-- ", "`-- ", "|   ")

    lines: list[tuple[str, Mapping[str, Any]]] = []
    seen: set[str] = set()

    def walk(top: str) -> None:
        # Iterative, as the core's walk is: a chain of any depth costs no recursion.
        stack: list[tuple[str, str, str]] = [(top, "", "")]  # name, its guide, its children's
        while stack:
            n, guide, below = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            lines.append((guide + n, by_name[n]))
            kids = [k for k in children.get(n, []) if k not in seen]
            for i, k in reversed(list(enumerate(kids))):
                end = i == len(kids) - 1
                stack.append((k, below + (last if end else branch), below + ("    " if end else pipe)))

    types = sorted({dtype(d) for d in site_domains}, key=lambda t: (t != kinds.DEFAULT_DOMAIN_TYPE, t))
    for t in types:  # Electrical first, then Cooling
        for n in tops:
            if dtype(by_name[n]) == t:
                walk(n)
        for n in sorted(by_name):
            if dtype(by_name[n]) == t:
                walk(n)  # a loop of parents and what hangs from it: nothing above it is a top

    rows: list[list[str | Text]] = []
    for label, d in lines:
        st = d.get("status") or {}
        headroom = st.get("headroomWatts")
        rows.append([
            label, dtype(d), str(d["spec"].get("role") or ""), _watts(st.get("usableWatts")),
            _watts(st.get("allocatedWatts")),
            Text(_watts(headroom), style="red" if isinstance(headroom, int) and headroom < 0 else ""),
            str(st.get(kinds.RACK.plural, "-")), _domain_flags(st),
        ])
    p.table(["DOMAIN", "TYPE", "ROLE", "USABLE", "ALLOCATED", "HEADROOM", "RACKS", "FLAGS"], rows,
            numeric=("USABLE", "ALLOCATED", "HEADROOM", "RACKS"), wrap=("FLAGS",))


def _invalid(status: Mapping[str, Any]) -> str | None:
    """Why the domain is invalid, or None: an overcommitted one is not Ready but
    valid."""
    state, reason = _cond(status, "Ready")
    return reason if state == "False" and reason in DOMAIN_PROBLEMS else None


def _print_grid_events(events: list[dict[str, Any]], p: _Printer) -> None:
    """The site's GridEvents by start, at the instant planned: what each asks, its phase, its target
    and, while in effect (or as it ended), the allocation and measured power beneath it, and Met."""
    rows: list[list[str | Text]] = []
    for e in events:
        spec, st = e["spec"], e.get("status") or {}
        asks = f"-{spec['reducePercent']}%" if "reducePercent" in spec else f"<= {_watts(spec['limitWatts'])}"
        state, reason = _cond(st, "Met")
        ready_state, ready_reason = _cond(st, "Ready")
        met = Text(f"{state} ({reason})" if state != "True" else state,
                   style="red" if state == "False" else "")
        if ready_state == "False":
            met = Text(f"invalid: {ready_reason}", style="red")
        rows.append([
            e["metadata"]["name"], spec.get("powerDomainRef") or "site", asks, str(spec["start"]),
            str(spec.get("end") or "open"), str(st.get("phase", "")), _watts(st.get("targetWatts")),
            _watts(st.get("allocatedWatts")), _watts(st.get("measuredWatts")), met,
        ])
    p.table(["GRID EVENT", "ON", "ASKS", "START", "END", "PHASE", "TARGET", "ALLOCATED", "MEASURED", "MET"],
            rows, numeric=("TARGET", "ALLOCATED", "MEASURED"), wrap=("MET",))


def _domain_flags(status: Mapping[str, Any]) -> Text:
    """What a planner must see about a domain: invalid and why, Overcommitted, Constrained, OverLimit."""
    flags = Text()
    reason = _invalid(status)
    if reason is not None:
        flags.append(f"invalid: {reason}", style="red")
    for ctype, style in (("Overcommitted", "red"), ("Constrained", "yellow"), ("OverLimit", "red")):
        if _cond(status, ctype)[0] == "True":
            if flags:
                flags.append(", ")
            flags.append(ctype, style=style)
    return flags


PROBLEMS_SHOWN = 50


def _print_problems(items: list[dict[str, Any]], p: _Printer) -> None:
    """Objects that are not Ready for a reason a planner must fix (references, ratings, stale)."""
    rows = []
    for item in items:
        status = item["status"]
        state, reason = _cond(status, "Ready")
        if state == "True" or reason in ("Maintenance", "Bound", "InsufficientCapacity"):
            continue
        message = next((c.get("message", "") for c in status.get("conditions", [])
                        if c.get("type") == "Ready"), "")
        meta = item["metadata"]
        rows.append([item["kind"], f"{meta.get('namespace') or 'default'}/{meta['name']}", reason, message])
    if rows:
        p.line()
        p.line(f"Not ready ({len(rows)}):")
        p.table(["KIND", "NAMESPACE/NAME", "REASON", "MESSAGE"], rows[:PROBLEMS_SHOWN])
        if len(rows) > PROBLEMS_SHOWN:
            p.line(f"  ... and {len(rows) - PROBLEMS_SHOWN} more (-o json shows every status)")
