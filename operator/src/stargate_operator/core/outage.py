"""A telemetry source outage is not a GPU loss: the rule that tells the two apart.

A node is stale when its own reports stop while the others' still arrive: its GPUs count 0
healthy (capacity.py). When the source itself fails, every node would age the same way, and a
Prometheus restart would read as a site losing all its GPUs: pools shrink to nothing, claims are
evicted, budgets move. So, per site (a namespace):

- the source is **unavailable** when the caller says so (an external source it polls, such as
  Prometheus, unreachable or answering errors: a `TelemetrySource` record among the objects), or
  when most reports are late at once: more than half of the nodes whose reports carry a readable
  time are stale (reason `<Source>ReportsLate`). An input whose every node is stale is an outage.
- during an outage health **freezes at the last readings**: every node that reported is judged on
  its last reading as if it were current (healthy GPUs, enforced limit), so no pool shrinks, no
  claim is evicted and no budget moves for health; but its measured power is not used, so the
  node counts at its allocation, and an oversubscribed constraint meets its capping threshold
  sooner, never later (it fails closed).
- the site says so in condition `TelemetryAvailable` (False, the reason naming the source, the
  message since when), with a Warning Event when it turns False and a Normal one when it is back.

Pure: plain data in, plain data out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stargate_operator.core.capacity import read_telemetry
from stargate_operator.core.conditions import FALSE, TRUE, CondSpec, OldConditions, recovered, turned
from stargate_operator.core.objects import NodeIn
from stargate_operator.core.types import ObjectKey, PlanEvent

CONDITION = "TelemetryAvailable"
# Not an API kind: the record by which a caller that polls an external source tells the core how
# that source fares. It has no namespace: it concerns every site planned with it.
SOURCE_KIND = "TelemetrySource"
AGENTS = "Agent"  # the source when node agents write their reports to the API server
# More than this share of the reporting nodes late at once is an outage, not that many dead nodes.
LATE_SHARE = 0.5
# The reasons, by source: each names its source (a source of another name gets the generic one).
UNAVAILABLE = {"Prometheus": "PrometheusUnavailable"}
REPORTS_LATE = {"Prometheus": "PrometheusReportsLate", AGENTS: "AgentReportsLate"}


@dataclass(frozen=True, slots=True)
class SourceState:
    """An external telemetry source as its poller sees it."""

    name: str  # CamelCase, as reasons carry it: Prometheus
    available: bool
    since: str = ""  # RFC 3339: since when it is (un)available
    error: str = ""  # what the first failed poll answered


def source_record(state: SourceState) -> dict[str, Any]:
    """The wire form of a source's state, put among a namespace's objects by the caller."""
    return {"kind": SOURCE_KIND, "name": state.name, "available": state.available,
            "since": state.since, "error": state.error}


def parse_source(obj: Mapping[str, Any]) -> SourceState:
    return SourceState(str(obj.get("name") or "Telemetry"), obj.get("available") is not False,
                       str(obj.get("since") or ""), str(obj.get("error") or ""))


@dataclass(frozen=True, slots=True)
class Verdict:
    """A site's telemetry: available or not, and the condition that says it."""

    available: bool
    reason: str
    message: str

    @property
    def condition(self) -> CondSpec:
        return (CONDITION, TRUE if self.available else FALSE, self.reason, self.message)


def judge(source: SourceState | None, reporting: int, late: int, last_late: str | None,
          stale_after: float) -> Verdict:
    """The rule. `reporting`: nodes whose report carries a readable time, fresh or stale; `late`:
    those of them that are stale; `last_late`: the newest report among the late ones."""
    name = source.name if source is not None else AGENTS
    held = "health held at the last readings, measured power counted as allocated"
    if source is not None and not source.available:
        since = f" since {source.since}" if source.since else ""
        error = f" ({source.error})" if source.error else ""
        return Verdict(False, UNAVAILABLE.get(name, "SourceUnavailable"),
                       f"{name} unavailable{since}{error}: {held}")
    if reporting > 0 and late > reporting * LATE_SHARE:
        whose = "the node agents" if source is None else name
        since = f" since {last_late}" if last_late else ""
        return Verdict(False, REPORTS_LATE.get(name, "SourceReportsLate"),
                       f"{late} of {reporting} nodes' reports from {whose} are older than "
                       f"{stale_after:g} s{since}: {held}")
    if reporting == 0:
        return Verdict(True, "NoReports", "no node reports telemetry: every GPU counts as healthy")
    what = "node agents' reports arrive" if source is None else f"{name} answers and reports arrive"
    return Verdict(True, "Reporting", what)


def judge_site(nodes: Iterable[NodeIn], source: SourceState | None, stale_after: float) -> Verdict:
    """`judge` over a site's judged nodes (capacity.assess_node has run on each)."""
    reporting = late = 0
    last_late: str | None = None
    for n in nodes:
        why = n.stale_reason
        if why == "Fresh":
            reporting += 1
        elif why == "Stale":
            reporting += 1
            late += 1
            seen = n.telemetry.get("observedAt")
            if isinstance(seen, str) and (last_late is None or seen > last_late):
                last_late = seen  # RFC 3339 in UTC, as every writer formats it: orders as text
    return judge(source, reporting, late, last_late, stale_after)


def freeze(nodes: Iterable[NodeIn]) -> list[NodeIn]:
    """Through an outage, judge every node that reported on its last reading, without its measured
    power (it counts at its allocation). Returns the nodes changed: the caller must not reuse
    their verdicts once the outage ends."""
    out: list[NodeIn] = []
    for n in nodes:
        if n.stale_reason in ("Fresh", "Stale"):
            if n.stale_reason == "Stale":
                n.stale = False
                n.stale_reason = "Fresh"
                read_telemetry(n)
            n.measured_w = None
            out.append(n)
    return out


def telemetry_events(key: ObjectKey, old: OldConditions, verdict: Verdict, events: list[PlanEvent]) -> None:
    """A Warning TelemetryUnavailable when the condition turns False, a Normal TelemetryAvailable
    when it is True again (not on the first status of a site that has it True)."""
    if not verdict.available:
        if turned(old, CONDITION, FALSE):
            events.append(PlanEvent(key, "Warning", "TelemetryUnavailable", verdict.message))
    elif CONDITION in old and not recovered(old, CONDITION):
        events.append(PlanEvent(key, "Normal", "TelemetryAvailable", verdict.message))
