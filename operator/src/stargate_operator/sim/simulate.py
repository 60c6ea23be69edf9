"""Both policies over one site: the searches, their figures, the JSON summary and a rich progress bar."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from stargate_operator.sim.run import RunResult, SimSettings, simulate
from stargate_operator.sim.search import Search, most_nodes
from stargate_operator.sim.site import MEASURED, POLICIES, Template
from stargate_operator.sim.traces import Mix, TraceBank


@dataclass(slots=True)
class Outcome:
    template: Template
    settings: SimSettings
    mix: Mix
    seed: int
    searches: dict[str, Search]
    finals: dict[str, RunResult]  # each policy's best run (with its series when asked for)
    rack_kinds: list[str]

    def policy(self, name: str) -> dict[str, Any]:
        s = self.searches[name]
        best = s.best
        feed_mw = self.template.feed_w / 1e6
        if best is None:  # not even the smallest site tried: report that run's figures
            first = min(s.tried, key=lambda r: r.nodes)
            return {"nodes": 0, "nodes_per_mw": 0.0, "trips": len(first.trips),
                    "seconds_over_usable": first.seconds_over_usable,
                    "energy_capped_percent": first.energy_capped_percent}
        return {
            "nodes": best.nodes,
            "nodes_per_mw": round(best.nodes / feed_mw, 2) if feed_mw > 0 else 0.0,
            "trips": len(best.trips),
            "seconds_over_usable": dict(sorted(best.seconds_over_usable.items())),
            "energy_capped_percent": best.energy_capped_percent,
        }

    def summary(self) -> dict[str, Any]:
        """{"policies": {"static": {...}, "measured": {...}}, "gain": measured / static nodes}."""
        policies = {name: self.policy(name) for name in POLICIES if name in self.searches}
        static, measured = policies.get("static"), policies.get(MEASURED)
        gain = None
        if static and measured and static["nodes"] > 0:
            gain = round(measured["nodes"] / static["nodes"], 3)
        return {"policies": policies, "gain": gain}

    def text(self) -> str:
        s = self.summary()
        lines = [f"feed {self.template.feed_w / 1e6:.3f} MW, sized for {self.template.nameplate_nodes} "
                 f"nodes at nameplate; {self.settings.duration_s} s from {self.settings.start_hour:g}:00, "
                 f"control every {self.settings.control_interval_s} s, "
                 f"lag {self.settings.enforcement_lag_s:g} s"]
        for name, p in s["policies"].items():
            worst = max(p["seconds_over_usable"].items(), key=lambda kv: kv[1], default=("-", 0))
            lines.append(f"{name:9} {p['nodes']:6d} nodes  {p['nodes_per_mw']:8.2f} nodes/MW  "
                         f"{p['trips']} trips  {p['energy_capped_percent']:6.3f} % energy capped  "
                         f"most over usable: {worst[0]} {worst[1]} s")
        lines.append(f"gain      {s['gain']}")
        return "\n".join(lines)


def simulate_policies(template: Template, settings: SimSettings, mix: Mix, seed: int, *,
                      policies: tuple[str, ...] = POLICIES, resolution: int = 1, keep_series: bool = False,
                      console: Console | None = None) -> Outcome:
    bank = TraceBank(mix, seed, settings.start.timestamp(), settings.duration_s)
    console = console or Console(stderr=True)
    searches: dict[str, Search] = {}
    finals: dict[str, RunResult] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for policy in policies:
            def run(n: int, policy: str = policy) -> RunResult:
                task = progress.add_task(f"{policy:8} {n:6d} nodes", total=settings.duration_s)
                result = simulate(template, n, policy, settings, bank, keep_series=keep_series,
                                  tick=lambda k: progress.advance(task, k))
                progress.remove_task(task)
                verdict = "hosts" if result.hosts(settings.max_capped_percent) else "fails"
                progress.console.print(f"{policy:8} {n:6d} nodes: {verdict} ({len(result.trips)} trips, "
                                     f"{result.energy_capped_percent:.3f} % energy capped)")
                return result

            searches[policy] = most_nodes(policy, template.nameplate_nodes, run,
                                          settings.max_capped_percent, resolution)
            best = searches[policy].best
            if best is not None:
                finals[policy] = best  # a run that hosts never stopped early: its series is whole
    racks = max((r.nodes for s in searches.values() for r in s.tried), default=0)
    per_rack = max(template.nodes_per_rack(), 1)
    return Outcome(template, settings, mix, seed, searches, finals,
                   bank.kinds((racks + per_rack - 1) // per_rack))
