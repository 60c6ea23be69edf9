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

from stargate_operator.api.load import LoadedObject, ManifestError, load_manifests
from stargate_operator.core import CoreSettings, Plan, plan_namespace
from stargate_operator.core.wire import format_time

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
        choices=("table", "json"),
        default="table",
        help="table: a per-site summary for people (default); json: a Kubernetes List of every "
        "input stargate object with its computed status, as kubectl get -o json would show it.",
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
        "StargateCluster had spec.power.curtailment.percent = PERCENT with no end, replacing any "
        "curtailment in the manifests (the JSON output shows the spec that was planned).",
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
    plan = plan_namespace(bodies, now, CoreSettings(stale_after_seconds=args.stale_after))
    items = with_status(bodies, plan)
    if args.output == "json":
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout, indent=2,
                  default=_json_default)
        sys.stdout.write("\n")
    else:
        print_table(items, plan, now, sys.stdout)
    return 0


def _curtailed(body: dict[str, Any], percent: int) -> dict[str, Any]:
    if body.get("kind") != "StargateCluster":
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


def _cond(status: Mapping[str, Any], ctype: str) -> tuple[str, str]:
    for c in status.get("conditions", []):
        if c.get("type") == ctype:
            return str(c.get("status", "")), str(c.get("reason", ""))
    return "", ""


def _ready(status: Mapping[str, Any]) -> str:
    state, reason = _cond(status, "Ready")
    return state if state == "True" else f"{state} ({reason})"


def _bytes(n: int) -> str:
    for unit, size in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _watts(n: int) -> str:
    for unit, size in (("GW", 10**9), ("MW", 10**6), ("kW", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.3f} {unit}"
    return f"{n} W"


def _grid(rows: list[list[str]], out: TextIO, indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def print_table(items: list[dict[str, Any]], plan: Plan, now: datetime, out: TextIO) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_kind.setdefault(item["kind"], []).append(item)

    def ns_name(item: Mapping[str, Any]) -> tuple[str, str]:
        return (str(item["metadata"].get("namespace") or "default"), str(item["metadata"]["name"]))

    out.write(f"Planned at {format_time(now)}: {len(items)} objects, {len(plan.events)} events\n")
    clusters = sorted(by_kind.get("StargateCluster", []), key=ns_name)
    racks = by_kind.get("Rack", [])
    pools = by_kind.get("MemoryPool", [])
    claims = by_kind.get("MemoryClaim", [])
    for site in clusters:
        ns, name = ns_name(site)
        st = site["status"]
        spec = site["spec"]
        power = st["power"]
        out.write(f"\nStargateCluster {ns}/{name}: {spec['site']['region']}, {spec['site']['kind']}, "
                  f"{spec['site']['cooling']} cooling, design PUE {spec['site'].get('designPUE', 1.3)}\n")
        out.write(f"  Ready {_ready(st)}; PowerOvercommitted {_cond(st, 'PowerOvercommitted')[0]}\n")
        out.write(f"  {st['racks']} racks, {st['nodes']} nodes, GPUs {st['gpus']['healthy']} healthy of "
                  f"{st['gpus']['total']}; HBM {_bytes(st['memory']['hbmBytes'])}, host DRAM "
                  f"{_bytes(st['memory']['hostBytes'])}\n")
        curtail = spec["power"].get("curtailment")
        if curtail:
            until = curtail.get("until")
            out.write(f"  curtailment {curtail['percent']}% ({curtail.get('reason') or 'no reason given'})"
                      + (f" until {until}" if until else "") + "\n")
        _grid(
            [
                ["BUDGET", "ALLOCATED", "DEMAND", "FLOOR", "MEASURED", "FACILITY"],
                [_watts(power[k]) for k in ("budgetWatts", "allocatedWatts", "demandWatts", "floorWatts",
                                            "measuredWatts", "facilityWatts")],
            ],
            out,
        )
        if "carbonGramsPerHour" in st:
            out.write(f"  carbon {st['carbonGramsPerHour'] / 1000:.1f} kg CO2e per hour\n")
        site_racks = sorted(
            (r for r in racks if ns_name(r)[0] == ns and r["spec"]["clusterRef"] == name),
            key=lambda r: (-r["spec"].get("priority", 500), r["metadata"]["name"]),
        )
        if site_racks:
            rows = [["RACK", "PRIORITY", "NODES", "GPUS", "BUDGET-W", "DEMAND-W", "FLOOR-W", "MEASURED-W",
                     "CAPPED", "OVER", "READY"]]
            for r in site_racks:
                rs = r["status"]
                rows.append([
                    r["metadata"]["name"], str(r["spec"].get("priority", 500)), str(rs["nodes"]),
                    f"{rs['gpus']['healthy']}/{rs['gpus']['total']}", str(rs["power"]["budgetWatts"]),
                    str(rs["power"]["demandWatts"]), str(rs["power"]["floorWatts"]),
                    str(rs["power"]["measuredWatts"]), _cond(rs, "PowerCapped")[0],
                    _cond(rs, "OverBudget")[0], _ready(rs),
                ])
            out.write("\n")
            _grid(rows, out)
        site_pools = sorted((p for p in pools if ns_name(p)[0] == ns and p["spec"]["clusterRef"] == name),
                            key=ns_name)
        if site_pools:
            rows = [["POOL", "TIER", "SCOPE", "CAPACITY", "ALLOCATED", "AVAILABLE", "BOUND", "PENDING",
                     "READY"]]
            for p in site_pools:
                ps = p["status"]
                rows.append([
                    p["metadata"]["name"], p["spec"]["tier"], p["spec"].get("rackRef") or "site",
                    _bytes(ps["capacityBytes"]), _bytes(ps["allocatedBytes"]), _bytes(ps["availableBytes"]),
                    str(ps["claims"]["bound"]), str(ps["claims"]["pending"]), _ready(ps),
                ])
            out.write("\n")
            _grid(rows, out)
            pool_names = {p["metadata"]["name"] for p in site_pools}
            site_claims = sorted(
                (c for c in claims if ns_name(c)[0] == ns and c["spec"]["poolRef"] in pool_names),
                key=lambda c: (c["spec"]["poolRef"], -c["spec"].get("priority", 0), c["metadata"]["name"]),
            )
            if site_claims:
                rows = [["CLAIM", "POOL", "SIZE", "PRIORITY", "PHASE", "READY"]]
                for c in site_claims:
                    rows.append([
                        c["metadata"]["name"], c["spec"]["poolRef"], _bytes(c["spec"]["sizeBytes"]),
                        str(c["spec"].get("priority", 0)), c["status"]["phase"], _ready(c["status"]),
                    ])
                out.write("\n")
                _grid(rows, out)
    _print_problems(items, out)


PROBLEMS_SHOWN = 50


def _print_problems(items: list[dict[str, Any]], out: TextIO) -> None:
    """Objects that are not Ready for a reason a planner must fix (references, ratings, stale)."""
    rows = [["KIND", "NAMESPACE/NAME", "REASON", "MESSAGE"]]
    for item in items:
        status = item["status"]
        state, reason = _cond(status, "Ready")
        if state == "True" or reason in ("Maintenance", "Bound", "InsufficientCapacity"):
            continue
        message = next((c.get("message", "") for c in status.get("conditions", [])
                        if c.get("type") == "Ready"), "")
        meta = item["metadata"]
        rows.append([item["kind"], f"{meta.get('namespace') or 'default'}/{meta['name']}", reason, message])
    if len(rows) > 1:
        out.write(f"\nNot ready ({len(rows) - 1}):\n")
        _grid(rows[: PROBLEMS_SHOWN + 1], out)
        if len(rows) > PROBLEMS_SHOWN + 1:
            out.write(f"  ... and {len(rows) - 1 - PROBLEMS_SHOWN} more (-o json shows every status)\n")
