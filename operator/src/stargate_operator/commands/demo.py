"""The whole system on this machine, with one command, until Ctrl-C.

Starts a real Kubernetes control plane (etcd + kube-apiserver on loopback; the binaries are built from
their Go modules the first time and cached under ~/.cache/stargate-operator), installs the CRDs,
applies the sample sites (crds/samples/: two sites, 84 GPU nodes, racks of several priorities,
HBM/DRAM/CXL pools and claims), starts one simulated node agent process per site and the operator,
serves the operator's metrics, writes a kubeconfig for kubectl and shows a live summary: each site's
budget and use, its racks by priority (budget, demand, measured, the GPU power limit of their nodes),
its pools and claims. Ctrl-C (or SIGTERM) stops everything it started and removes the kubeconfig.

  stargate-operator demo                    # until Ctrl-C
  stargate-operator demo --curtail 20       # a demand-response GridEvent 10 s after it converged
  stargate-operator demo --once             # start, converge, print the summary, stop (CI)

While it runs, in another terminal (the demo prints these with the real path):

  export KUBECONFIG=~/.cache/stargate-operator/demo/kubeconfig
  kubectl get stargate -A
  kubectl apply -f crds/samples/grid-events/north-sea-dispatch.yaml    # shed 20 % from now on
  kubectl get gev -n stargate-north-sea                                # is it met?

Exit status: 0 when it stopped as asked (Ctrl-C, SIGTERM, --duration, --once), 1 when something
failed (the message names the log), 2 for bad options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stargate_operator.commands.options import non_negative_float as _non_negative
from stargate_operator.commands.options import port as _port
from stargate_operator.commands.options import positive_float as _positive
from stargate_operator.commands.options import share_to_shed as _shed
from stargate_operator.demo.runner import Demo, Options, default_state_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    state = default_state_dir()
    parser.add_argument(
        "--curtail", type=_shed, metavar="PERCENT", default=None,
        help="once the demo has converged (after --curtail-after seconds), create a GridEvent asking a "
             "site to shed PERCENT (1 to 100) of its power from then on, and highlight it rippling "
             "through the summary: the site's budget, then the racks' budgets by priority, then every "
             "node's GPU power limit")
    parser.add_argument(
        "--curtail-site", metavar="NAME", default=None,
        help="the site to curtail (default: the site of the percentage event in the samples' grid-events/ "
             "folder, north-sea)")
    parser.add_argument(
        "--curtail-after", type=_non_negative, metavar="SECONDS", default=10.0,
        help="seconds between convergence and the curtailment; 0 for at once (default 10)")
    parser.add_argument(
        "--duration", type=_positive, metavar="SECONDS", default=None,
        help="stop by itself this many seconds after the operator and agents started (tests, CI); "
             "default: run until Ctrl-C or SIGTERM")
    parser.add_argument(
        "--once", action="store_true",
        help="stop by itself as soon as every status has converged (and a --curtail has rippled "
             "through), after printing the summary; exit 1 if that takes longer than --timeout")
    parser.add_argument(
        "--timeout", type=_positive, metavar="SECONDS", default=180.0,
        help="with --once: how long convergence may take (default 180)")
    parser.add_argument(
        "--no-agents", dest="agents", action="store_false",
        help="start no simulated node agents: nodes then count as fully healthy and nothing is measured")
    parser.add_argument(
        "--agent-interval", type=_positive, metavar="SECONDS", default=5.0,
        help="seconds between two telemetry writes of each simulated node (default 5)")
    parser.add_argument(
        "--stale-after", type=_positive, metavar="SECONDS", default=30.0,
        help="the operator's telemetry staleness threshold: stop an agent and its nodes turn stale "
             "after this long (default 30)")
    parser.add_argument(
        "--seed", type=int, default=None,
        help="seed of the simulated telemetry, for reproducible numbers (default: random)")
    parser.add_argument(
        "--metrics-port", type=_port, metavar="PORT", default=None,
        help="port of the operator's Prometheus endpoint on 127.0.0.1; 0 for any free port (default "
             "8080, or a free port when 8080 is taken)")
    parser.add_argument(
        "--kubeconfig-out", type=Path, metavar="PATH", default=None,
        help=f"where to write the kubeconfig for kubectl; removed when the demo stops "
             f"(default {state / 'kubeconfig'})")
    parser.add_argument(
        "--state-dir", type=Path, metavar="DIR", default=state,
        help=f"the control plane's files (certificates, etcd data), the rendered CRDs and the logs "
             f"of the operator and agents; one demo at a time per folder (default {state})")
    parser.add_argument(
        "--samples", metavar="DIR", default=None,
        help="folder of manifests to apply instead of the sample site (default: crds/samples/ of the "
             "checkout; env STARGATE_SAMPLES)")
    parser.add_argument(
        "--refresh", type=_positive, metavar="SECONDS", default=2.0,
        help="seconds between two refreshes of the summary (default 2)")
    parser.add_argument(
        "--color", action=argparse.BooleanOptionalAction, default=None,
        help="colours and highlighting (default: when the output is a terminal and NO_COLOR is unset)")


def main(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.expanduser().resolve()
    kubeconfig_out: Path = (args.kubeconfig_out or state_dir / "kubeconfig").expanduser().resolve()
    opts = Options(
        state_dir=state_dir,
        kubeconfig_out=kubeconfig_out,
        samples=args.samples,
        metrics_port=args.metrics_port,
        agents=args.agents,
        agent_interval=args.agent_interval,
        stale_after=args.stale_after,
        seed=args.seed,
        curtail=args.curtail,
        curtail_site=args.curtail_site,
        curtail_after=args.curtail_after,
        duration=args.duration,
        once=args.once,
        timeout=args.timeout,
        refresh=args.refresh,
        color=args.color,
    )
    return Demo(opts).run()
