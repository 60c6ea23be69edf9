"""Trace-driven simulation of power oversubscription; no cluster needed.

A site (from -f manifests, or generated with --nodes under a default tree) runs second by second on
per-node GPU power traces of documented shapes (synchronous training, diurnal inference with
bursts, idle), with the operator's own core planning it at every control step, limits enforced
after the enforcement path's lag, and breakers tripping on an inverse-time curve. For each policy,
`static` (today: nameplate divided, no oversubscription) and `measured` (oversubscription with
reactive capping on measured draw), a search finds the most nodes the tree hosts: no trip and at
most --max-capped-percent of GPU energy lost to capping over the run. Deterministic for a seed.

  stargate-operator simulate --nodes 288 --json
  stargate-operator simulate -f crds/samples --report out/
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from stargate_operator.commands.options import (
    non_negative_float,
    non_negative_int,
    percent,
    positive_float,
    positive_int,
)
from stargate_operator.kinds import DEFAULT_CAP_AT_PERCENT, DEFAULT_HOLD_SECONDS, DEFAULT_UNCAP_AT_PERCENT
from stargate_operator.sim import (
    DEFAULT_CONTROL_INTERVAL_S,
    DEFAULT_DURATION_S,
    DEFAULT_ENFORCEMENT_LAG_S,
    DEFAULT_MAX_CAPPED_PERCENT,
    DEFAULT_MIX,
    DEFAULT_OVERSUBSCRIBE_PERCENT,
    DEFAULT_START_HOUR,
)

EXIT_INVALID = 2
DEFAULT_NODES = 288


def _hour(s: str) -> float:
    v = float(s)
    if not 0 <= v < 24:
        raise argparse.ArgumentTypeError(f"an hour of the day, 0 to 24: {s}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="paths", action="append", default=None, metavar="PATH",
                        help="YAML or JSON manifests (files or folders, repeatable) of one site: its "
                             "StargateCluster, PowerDomains, Racks and GPUNodes; the racks are the "
                             "templates the search clones. Default: a generated GB200 site (--nodes).")
    parser.add_argument("--nodes", type=positive_int, default=DEFAULT_NODES, metavar="N",
                        help="generated site: GB200 nodes its utility feed is sized for at nameplate "
                             "(default: %(default)s); the search starts from there.")
    parser.add_argument("--seed", type=int, default=1, help="seed of the traces (default: %(default)s).")
    parser.add_argument("--duration", type=positive_int, default=DEFAULT_DURATION_S, metavar="SECONDS",
                        help="simulated seconds per run, at 1 s steps (default: %(default)s).")
    parser.add_argument("--start-hour", type=_hour, default=DEFAULT_START_HOUR, metavar="HOUR",
                        help="time of day the run starts, for the diurnal inference load (default: "
                             "%(default)g, near its daily peak).")
    parser.add_argument("--control-interval", type=positive_int, default=DEFAULT_CONTROL_INTERVAL_S,
                        metavar="SECONDS",
                        help="seconds between two plans of the operator's core, and the agents' report "
                             "window (default: %(default)s).")
    parser.add_argument("--enforcement-lag", type=non_negative_float, default=DEFAULT_ENFORCEMENT_LAG_S,
                        metavar="SECONDS",
                        help="seconds from a plan to its limits enforced at the GPUs (default: %(default)g, "
                             "until the enforcement path's measured figure replaces it).")
    parser.add_argument("--percent", type=percent, default=DEFAULT_OVERSUBSCRIBE_PERCENT,
                        help="measured policy: oversubscription percent set on the site and every "
                             "domain where the manifests set none (default: %(default)s: with 80 %% "
                             "derating, limits then add up to at most the breakers' rating).")
    parser.add_argument("--cap-at", type=percent, default=DEFAULT_CAP_AT_PERCENT, metavar="PERCENT",
                        help="measured policy: capAtPercent where the manifests set none "
                             "(default: %(default)s).")
    parser.add_argument("--uncap-at", type=percent, default=DEFAULT_UNCAP_AT_PERCENT, metavar="PERCENT",
                        help="measured policy: uncapAtPercent, below --cap-at (default: %(default)s).")
    parser.add_argument("--hold", type=non_negative_int, default=DEFAULT_HOLD_SECONDS, metavar="SECONDS",
                        help="measured policy: holdSeconds (default: %(default)s).")
    parser.add_argument("--max-capped-percent", type=non_negative_float, default=DEFAULT_MAX_CAPPED_PERCENT,
                        metavar="PERCENT",
                        help="a run hosts its nodes when no breaker trips and at most this share of the "
                             "GPUs' wanted energy is lost to capping (default: %(default)g).")
    parser.add_argument("--mix", default=DEFAULT_MIX, metavar="SHARES",
                        help="what the racks run, as weights (default: %(default)s).")
    parser.add_argument("--resolution", type=positive_int, default=1, metavar="NODES",
                        help="the search stops when success and failure are this close "
                             "(default: %(default)s).")
    parser.add_argument("--trip-tau", type=positive_float, default=None, metavar="SECONDS",
                        help="breakers' thermal time constant (default: 4.58, the fastest IEC 60898-1 "
                             "allows; see docs/concepts/simulate.md).")
    parser.add_argument("--steps", action="store_true",
                        help="instead of the search: run the site at its nameplate nodes through a grid "
                             "event and report, per feed, the largest 1 s and 5 s step of power split "
                             "into the workload's part and the operator's, without ramps and with "
                             "--ramp-down/--ramp-up.")
    parser.add_argument("--ramp-down", type=positive_int, default=None, metavar="W_PER_S",
                        help="--steps: the site's rampDownWattsPerSecond for the run with ramps.")
    parser.add_argument("--ramp-up", type=positive_int, default=None, metavar="W_PER_S",
                        help="--steps: the site's rampUpWattsPerSecond for the run with ramps.")
    parser.add_argument("--event-percent", type=percent, default=20, metavar="PERCENT",
                        help="--steps: the event's reducePercent, of the baseline (default: %(default)s).")
    parser.add_argument("--event-start", type=positive_int, default=None, metavar="SECONDS",
                        help="--steps: when the event starts, seconds into the run (default: half of it).")
    parser.add_argument("--event-duration", type=positive_int, default=None, metavar="SECONDS",
                        help="--steps: how long it lasts (default: a quarter of the run).")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON: {policies: {static: {...}, measured: {...}}, gain}.")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help="write an HTML page with plots (load against usable per domain over time, "
                             "the search) to DIR/index.html.")


def _has_numpy() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


MISSING = ("stargate-operator simulate needs numpy (and matplotlib for --report): "
           "pip install 'stargate-operator[sim]'")


def main(args: argparse.Namespace) -> int:
    if not _has_numpy():
        print(MISSING, file=sys.stderr)
        return EXIT_INVALID
    from stargate_operator.api.load import ManifestError, load_manifests
    from stargate_operator.sim import site as sim_site
    from stargate_operator.sim.breaker import TripCurve
    from stargate_operator.sim.run import SimSettings
    from stargate_operator.sim.simulate import simulate_policies
    from stargate_operator.sim.traces import Mix

    try:
        mix = Mix.parse(args.mix)
    except ValueError as e:
        print(f"stargate-operator simulate: --mix: {e}", file=sys.stderr)
        return EXIT_INVALID
    if args.uncap_at >= args.cap_at:
        print("stargate-operator simulate: --uncap-at must be below --cap-at", file=sys.stderr)
        return EXIT_INVALID
    if args.paths:
        try:
            template = sim_site.from_manifests([o.body for o in load_manifests(args.paths)])
        except (ManifestError, ValueError) as e:
            print(f"stargate-operator simulate: invalid input:\n{e}", file=sys.stderr)
            return EXIT_INVALID
    else:
        template = sim_site.generated(args.nodes)
    curve = TripCurve() if args.trip_tau is None else replace(TripCurve(), tau_s=args.trip_tau)
    settings = SimSettings(
        duration_s=args.duration, control_interval_s=args.control_interval,
        enforcement_lag_s=args.enforcement_lag, start_hour=args.start_hour,
        over=sim_site.Oversubscribe(args.percent, args.cap_at, args.uncap_at, args.hold),
        curve=curve, max_capped_percent=args.max_capped_percent)
    if args.steps:
        return _steps(args, template, settings, mix)
    if args.report:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(MISSING, file=sys.stderr)
            return EXIT_INVALID
    outcome = simulate_policies(template, settings, mix, args.seed, resolution=args.resolution,
                                keep_series=bool(args.report))
    if args.report:
        from stargate_operator.sim.report import write_report

        path = write_report(outcome, args.report)
        print(f"report: {path}", file=sys.stderr)
    if args.json:
        json.dump(outcome.summary(), sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
    else:
        print(outcome.text())
    return 0


def _steps(args: argparse.Namespace, template: Any, settings: Any, mix: Any) -> int:
    """simulate --steps: the largest steps per feed, without ramps and with them."""
    from stargate_operator.sim.run import simulate
    from stargate_operator.sim.site import MEASURED
    from stargate_operator.sim.steps import GridEventRun
    from stargate_operator.sim.traces import TraceBank

    duration = settings.duration_s
    start = args.event_start if args.event_start is not None else duration // 2
    length = args.event_duration if args.event_duration is not None else duration // 4
    if start + length >= duration:
        print("stargate-operator simulate: --event-start plus --event-duration must end before --duration",
              file=sys.stderr)
        return EXIT_INVALID
    runs = {"without_ramps": GridEventRun(args.event_percent, start, length)}
    if args.ramp_down is not None or args.ramp_up is not None:
        runs["with_ramps"] = GridEventRun(args.event_percent, start, length, args.ramp_down, args.ramp_up)
    bank = TraceBank(mix, args.seed, settings.start.timestamp(), duration)
    out: dict[str, Any] = {}
    for name, event in runs.items():
        run = simulate(template, template.nameplate_nodes, MEASURED,
                       replace(settings, event=event, follow_timers=True, stop_early=False), bank)
        out[name] = run.steps
    if args.json:
        json.dump({"steps": out}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for name, feeds in out.items():
        for feed, windows in (feeds or {}).items():
            figures = "  ".join(f"{w}: workload {v['workload'] / 1e3:9.1f} kW "
                                f"operator {v['operator'] / 1e3:9.1f} kW"
                                for w, v in windows.items())
            print(f"{name:13} {feed:24} {figures}")
    return 0
