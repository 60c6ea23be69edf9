"""`plan -o dot`: each site's power and cooling tree with its budgets, as a Graphviz graph.

One cluster per site: the site (budget and allocated), every PowerDomain (usable, allocated and
headroom; red when overcommitted, orange when it limits its racks), and every rack (priority,
budget against demand, and what holds it below its demand). Electrical edges are solid, cooling
edges dashed; a rack without a domain hangs off its site. Render it with `dot -Tsvg`.

Pure text from the planned objects (`plan.with_status`): no Graphviz is needed to produce it, and
the output is deterministic (sorted by name), so the docs can keep it and a test can compare it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stargate_operator import kinds
from stargate_operator.units import watts


def _q(text: str) -> str:
    # Names are DNS-1123 and figures are digits: only a quote needs escaping; the labels' line
    # breaks are DOT's own `\n` escapes and stay as they are.
    return '"' + text.replace('"', '\\"') + '"'


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _w(value: Any) -> str:
    return watts(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def _true(status: Mapping[str, Any], ctype: str) -> bool:
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return cond.get("status") == "True"
    return False


def render_dot(items: list[dict[str, Any]]) -> str:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_kind.setdefault(str(item.get("kind")), []).append(item)

    def name(o: Mapping[str, Any]) -> str:
        return str(_get(o, "metadata", "name") or "")

    def ns(o: Mapping[str, Any]) -> str:
        return str(_get(o, "metadata", "namespace") or "default")

    lines = ["digraph power {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", '
             'fillcolor="#ffffff", fontname="Helvetica", fontsize=10];', '  edge [color="#555555"];']
    sites = sorted(by_kind.get(kinds.STARGATE_CLUSTER.kind, []), key=lambda o: (ns(o), name(o)))
    domains = sorted(by_kind.get(kinds.POWER_DOMAIN.kind, []), key=lambda o: (ns(o), name(o)))
    racks = sorted(by_kind.get(kinds.RACK.kind, []), key=lambda o: (ns(o), name(o)))
    for i, site in enumerate(sites):
        sns, sname = ns(site), name(site)
        sid = f"{sns}/{kinds.STARGATE_CLUSTER.kind}/{sname}"
        power = _get(site, "status", "power") or {}
        lines.append(f"  subgraph cluster_{i} {{")
        title = f"{sname} ({sns})"
        lines.append(f"    label={_q(title)}; fontname=Helvetica; color=\"#9999bb\";")
        budget, allocated = _w(power.get("budgetWatts")), _w(power.get("allocatedWatts"))
        label = f"site {sname}\\nbudget {budget}\\nallocated {allocated}"
        lines.append(f"    {_q(sid)} [label={_q(label)}, fillcolor=\"#e8eaf6\"];")
        here = {name(d) for d in domains if ns(d) == sns and _get(d, "spec", "clusterRef") == sname}
        for d in domains:
            dname = name(d)
            if dname not in here:
                continue
            st = d.get("status") or {}
            role = _get(d, "spec", "role") or _get(d, "spec", "type") or ""
            colour = ("#ffcdd2" if _true(st, "Overcommitted") else
                      "#ffe0b2" if _true(st, "Constrained") else
                      "#e0f7fa" if _get(d, "spec", "type") == "Cooling" else "#f1f8e9")
            label = (f"{dname} ({role})\\nusable {_w(st.get('usableWatts'))}\\n"
                     f"allocated {_w(st.get('allocatedWatts'))}\\nheadroom {_w(st.get('headroomWatts'))}")
            did = f"{sns}/{kinds.POWER_DOMAIN.kind}/{dname}"
            lines.append(f"    {_q(did)} [label={_q(label)}, fillcolor={_q(colour)}];")
            parent = _get(d, "spec", "parentRef")
            src = f"{sns}/{kinds.POWER_DOMAIN.kind}/{parent}" if parent in here else sid
            style = ' [style=dashed]' if _get(d, "spec", "type") == "Cooling" else ""
            lines.append(f"    {_q(src)} -> {_q(did)}{style};")
        for r in racks:
            if ns(r) != sns or _get(r, "spec", "clusterRef") != sname:
                continue
            rname = name(r)
            rp = _get(r, "status", "power") or {}
            limited = rp.get("limitedBy") or ""
            label = (f"rack {rname} (priority {_get(r, 'spec', 'priority') or kinds.DEFAULT_RACK_PRIORITY})"
                     f"\\nbudget {_w(rp.get('budgetWatts'))} of {_w(rp.get('demandWatts'))}"
                     + (f"\\nlimited by {limited}" if limited else ""))
            rid = f"{sns}/{kinds.RACK.kind}/{rname}"
            fill = "#fff9c4" if limited else "#ffffff"
            lines.append(f"    {_q(rid)} [label={_q(label)}, fillcolor={_q(fill)}];")
            feed = _get(r, "spec", "powerDomainRef")
            cool = _get(r, "spec", "coolingDomainRef")
            src = f"{sns}/{kinds.POWER_DOMAIN.kind}/{feed}" if feed in here else sid
            lines.append(f"    {_q(src)} -> {_q(rid)};")
            if cool in here:
                cid = f"{sns}/{kinds.POWER_DOMAIN.kind}/{cool}"
                lines.append(f"    {_q(cid)} -> {_q(rid)} [style=dashed];")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
