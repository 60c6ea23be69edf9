"""Run the operator against the current kubeconfig (in-cluster when deployed).

Every option can also be set by the environment variable shown in its help; a flag wins over the
variable. Examples:

  stargate-operator run                                  # all namespaces, metrics on :8080
  stargate-operator run -n abilene -n stargate-norway    # shard: only these sites
  stargate-operator run --leader-election stargate       # active/standby replicas (a Lease)
  stargate-operator run --discover-nodes                 # GPUNodes from GFD-labelled Nodes
"""

from __future__ import annotations

import argparse
import logging
import sys

from stargate_operator.commands.options import env as _env
from stargate_operator.commands.options import env_bool as _env_bool
from stargate_operator.commands.options import env_num as _num
from stargate_operator.controller.engine import EngineSettings
from stargate_operator.controller.leader import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
)
from stargate_operator.core.sliceplan import SliceSettings
from stargate_operator.kinds import (
    DEFAULT_CONFIRM_GRACE_SECONDS,
    DEFAULT_LEASE_DURATION_SECONDS,
    DEFAULT_MEASURED_REFRESH_SECONDS,
    DEFAULT_RAISE_AFTER_SECONDS,
    DEFAULT_SLICE_SIZE,
    DEFAULT_STALE_AFTER_SECONDS,
    DISCOVERY_RACK_LABEL,
    DISCOVERY_SITE_LABEL,
    FAILSAFE_LEASE_NAME,
    MAX_SLICE_SIZE,
    MIN_SLICE_SIZE,
)


def _slice_size(text: str) -> int:
    """--slice-size: an integer from MIN_SLICE_SIZE to MAX_SLICE_SIZE (argparse names the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not MIN_SLICE_SIZE <= value <= MAX_SLICE_SIZE:
        raise argparse.ArgumentTypeError(
            f"{value} is outside {MIN_SLICE_SIZE}..{MAX_SLICE_SIZE:,} (nodes per PowerLimitSlice)")
    return value


def _seconds(text: str) -> float:
    """A duration in seconds, > 0 (argparse names the flag)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number of seconds above 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ns_env = [n for n in (_env("STARGATE_NAMESPACES") or "").split(",") if n.strip()]
    parser.add_argument("-n", "--namespace", action="append", dest="namespaces", default=None,
                        metavar="NS", help="watch only this namespace; repeat for several "
                        "(env STARGATE_NAMESPACES, comma-separated; default: all namespaces)")
    parser.set_defaults(env_namespaces=ns_env)
    parser.add_argument("--kubeconfig", default=_env("KUBECONFIG"),
                        help="kubeconfig file (env KUBECONFIG; default ~/.kube/config, or in-cluster)")
    parser.add_argument("--metrics-port", type=int, default=_num("STARGATE_METRICS_PORT", 8080),
                        help="port of the Prometheus endpoint, 0 for any free port "
                        "(env STARGATE_METRICS_PORT; default 8080)")
    parser.add_argument("--metrics-addr", default=_env("STARGATE_METRICS_ADDR", "0.0.0.0"),
                        help="address the metrics endpoint binds "
                        "(env STARGATE_METRICS_ADDR; default 0.0.0.0)")
    parser.add_argument("--health-port", type=int, default=_num("STARGATE_HEALTH_PORT", 8081),
                        help="port of the liveness endpoint /healthz "
                        "(env STARGATE_HEALTH_PORT; default 8081)")
    per_node = _env_bool("STARGATE_PER_NODE_METRICS")
    parser.add_argument("--per-node-metrics", action="store_true", default=per_node,
                        help="export per-GPU-node series too; off by default, as a 10,000-node site "
                        "would export about 150,000 more series (env STARGATE_PER_NODE_METRICS=true)")
    parser.add_argument("--stale-after", type=float,
                        default=_num("STARGATE_STALE_AFTER", DEFAULT_STALE_AFTER_SECONDS),
                        metavar="SECONDS", help="telemetry older than this counts as stale and its GPUs "
                        f"as unhealthy (env STARGATE_STALE_AFTER; default {DEFAULT_STALE_AFTER_SECONDS:g})")
    parser.add_argument("--slice-size", type=_slice_size,
                        default=_num("STARGATE_SLICE_SIZE", DEFAULT_SLICE_SIZE), metavar="NODES",
                        help="at most this many nodes in one PowerLimitSlice (whole racks; a rack with more "
                        f"has one of its own), {MIN_SLICE_SIZE} to {MAX_SLICE_SIZE:,} "
                        f"(env STARGATE_SLICE_SIZE; default {DEFAULT_SLICE_SIZE})")
    parser.add_argument("--raise-after", type=_seconds,
                        default=_num("STARGATE_RAISE_AFTER", DEFAULT_RAISE_AFTER_SECONDS), metavar="SECONDS",
                        help="raises beneath a constraint wait for the nodes lowered beneath it to confirm "
                        "their lower limits, at most this long (then they go, with a RaisedUnconfirmed "
                        "Event) "
                        f"(env STARGATE_RAISE_AFTER; default {DEFAULT_RAISE_AFTER_SECONDS:g})")
    parser.add_argument("--confirm-grace", type=_seconds,
                        default=_num("STARGATE_CONFIRM_GRACE", DEFAULT_CONFIRM_GRACE_SECONDS),
                        metavar="SECONDS", help="a node counts as confirmed while its enforced limit is "
                        "at or below the highest limit assigned to it within this period "
                        f"(env STARGATE_CONFIRM_GRACE; default {DEFAULT_CONFIRM_GRACE_SECONDS:g})")
    parser.add_argument("--measured-refresh", type=_seconds,
                        default=_num("STARGATE_MEASURED_REFRESH", DEFAULT_MEASURED_REFRESH_SECONDS),
                        metavar="SECONDS", help="status figures that move with measurements are written at "
                        "most this often per object unless a condition changes with them "
                        f"(env STARGATE_MEASURED_REFRESH; default {DEFAULT_MEASURED_REFRESH_SECONDS:g})")
    parser.add_argument("--coalesce", type=float, default=_num("STARGATE_COALESCE_SECONDS", 0.1),
                        metavar="SECONDS", help="quiet time after the last change of a site before it is "
                        "recomputed; a busy site is recomputed at least every second "
                        "(env STARGATE_COALESCE_SECONDS; default 0.1)")
    parser.add_argument("--write-concurrency", type=int,
                        default=_num("STARGATE_WRITE_CONCURRENCY", 32),
                        help="status writes in flight at once (env STARGATE_WRITE_CONCURRENCY; default 32)")
    parser.add_argument("--leader-election", default=_env("STARGATE_LEADER_ELECTION"), metavar="NAME",
                        help="take part in leader election on the coordination.k8s.io/v1 Lease NAME (one "
                        "per shard: replicas that watch the same namespaces share it); only the holder "
                        "acts, the others stand by; without it the operator runs alone "
                        "(env STARGATE_LEADER_ELECTION)")
    parser.add_argument("--leader-election-namespace",
                        default=_env("STARGATE_LEADER_ELECTION_NAMESPACE") or _env("POD_NAMESPACE"),
                        metavar="NAMESPACE",
                        help="namespace of the election's Lease (env STARGATE_LEADER_ELECTION_NAMESPACE, "
                        "else POD_NAMESPACE, else the first -n namespace, else default)")
    parser.add_argument("--leader-lease-duration", type=float, metavar="SECONDS",
                        default=_num("STARGATE_LEADER_LEASE_DURATION", DEFAULT_LEASE_DURATION),
                        help="a leader not heard from this long is replaced "
                        f"(env STARGATE_LEADER_LEASE_DURATION; default {DEFAULT_LEASE_DURATION:g})")
    parser.add_argument("--leader-renew-deadline", type=float, metavar="SECONDS",
                        default=_num("STARGATE_LEADER_RENEW_DEADLINE", DEFAULT_RENEW_DEADLINE),
                        help="a leader that has not renewed for this long stands by; below the lease "
                        f"duration (env STARGATE_LEADER_RENEW_DEADLINE; default {DEFAULT_RENEW_DEADLINE:g})")
    parser.add_argument("--leader-retry-period", type=float, metavar="SECONDS",
                        default=_num("STARGATE_LEADER_RETRY_PERIOD", DEFAULT_RETRY_PERIOD),
                        help="how often the leader renews and a standby tries to take the Lease "
                        f"(env STARGATE_LEADER_RETRY_PERIOD; default {DEFAULT_RETRY_PERIOD:g})")
    parser.add_argument("--telemetry", choices=["none", "prometheus"],
                        default=_env("STARGATE_TELEMETRY", "none"),
                        help="where observations come from: 'none', the agents' writes to their "
                        "GPUNodes (small sites); 'prometheus', series read from Prometheus (see "
                        "--prometheus-series; campus scale: the agents then write their GPUNodes only "
                        "when their power range changes) (env STARGATE_TELEMETRY; default none)")
    parser.add_argument("--prometheus-url", default=_env("STARGATE_PROMETHEUS_URL"),
                        help="Prometheus to read the series from, http(s)://host[:port][/path] "
                        "(env STARGATE_PROMETHEUS_URL)")
    parser.add_argument("--prometheus-series", choices=["agent", "dcgm"],
                        default=_env("STARGATE_PROMETHEUS_SERIES", "agent"),
                        help="whose series --telemetry prometheus reads: 'agent', the node agents' "
                        "stargate_agent_node_* (power, healthy GPUs, enforced limit, peak, HBM), the "
                        "node from the scrape target; 'dcgm', dcgm-exporter's DCGM_FI_DEV_* (power, "
                        "XID and row-remap health, HBM, the enforced limit where enabled) "
                        "(env STARGATE_PROMETHEUS_SERIES; default agent)")
    parser.add_argument("--prometheus-timeout", type=float, metavar="SECONDS",
                        default=_num("STARGATE_PROMETHEUS_TIMEOUT", 5.0),
                        help="how long one poll's queries may take before the poll counts as failed "
                        "(the source then counts as unavailable); raise it for a large site on a busy "
                        "Prometheus (env STARGATE_PROMETHEUS_TIMEOUT; default 5)")
    parser.add_argument("--prometheus-node-label", default=_env("STARGATE_PROMETHEUS_NODE_LABEL"),
                        help="label of the series holding the node name; a comma-separated list is "
                        "tried in order (env STARGATE_PROMETHEUS_NODE_LABEL; default node for the "
                        "agents' series, Hostname for dcgm's)")
    parser.add_argument("--telemetry-interval", type=float, default=_num("STARGATE_TELEMETRY_INTERVAL", 15.0),
                        metavar="SECONDS", help="how often the prometheus telemetry source polls; keep "
                        "--stale-after well above it (env STARGATE_TELEMETRY_INTERVAL; default 15)")
    parser.add_argument("--discover-nodes", action="store_true", default=_env_bool("STARGATE_DISCOVER_NODES"),
                        help="keep one GPUNode per Kubernetes Node labelled by GPU Feature Discovery "
                        "(env STARGATE_DISCOVER_NODES=true)")
    parser.add_argument("--discovery-site-label",
                        default=_env("STARGATE_DISCOVERY_SITE_LABEL", DISCOVERY_SITE_LABEL), metavar="KEY",
                        help="Node label naming the namespace of its site "
                        "(env STARGATE_DISCOVERY_SITE_LABEL; "
                        f"default {DISCOVERY_SITE_LABEL})")
    parser.add_argument("--discovery-rack-label",
                        default=_env("STARGATE_DISCOVERY_RACK_LABEL", DISCOVERY_RACK_LABEL), metavar="KEY",
                        help="Node label naming its Rack (env STARGATE_DISCOVERY_RACK_LABEL; "
                        f"default {DISCOVERY_RACK_LABEL})")
    parser.add_argument("--taint-unconfirmed", action="store_true",
                        default=_env_bool("STARGATE_TAINT_UNCONFIRMED"),
                        help="with --discover-nodes: taint GPU Nodes stargate.dev/power-unmanaged:NoSchedule "
                        "until their node agent confirms its power limit after the Node became Ready "
                        "(needs the agents; env STARGATE_TAINT_UNCONFIRMED=true)")
    parser.add_argument("--lease-duration", type=int,
                        default=_num("STARGATE_LEASE_DURATION", DEFAULT_LEASE_DURATION_SECONDS),
                        metavar="SECONDS",
                        help="the fail-safe Lease of each site namespace (coordination.k8s.io/v1, named "
                        f"{FAILSAFE_LEASE_NAME}), renewed every third of it while this replica is active; "
                        "node agents fall back to safe limits when it is not renewed; 0: no Lease "
                        f"(env STARGATE_LEASE_DURATION; default {DEFAULT_LEASE_DURATION_SECONDS})")
    parser.add_argument("--log-level", default=_env("STARGATE_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level (env STARGATE_LOG_LEVEL; default INFO)")


def prometheus_url_problem(url: str | None) -> str | None:
    """What is wrong with a --prometheus-url, or None when it is usable."""
    from urllib.parse import urlsplit

    if not url:
        return "--telemetry prometheus needs it (e.g. http://prometheus-operated.monitoring:9090)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        return f"{url!r} is not a URL: {e}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL with a host"
    return None


def main(args: argparse.Namespace) -> int:
    from stargate_operator.controller.operator import RunSettings, run

    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf's own per-object chatter is not useful here; its warnings are.
    logging.getLogger("kopf").setLevel(max(logging.WARNING, getattr(logging, args.log_level)))
    # One line per API request is noise at ten thousand writes a second.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, getattr(logging, args.log_level)))
    # Nor one line per liveness probe (kopf's /healthz is served by aiohttp, which logs each hit).
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, getattr(logging, args.log_level)))
    discovery = None
    if args.discover_nodes:
        from stargate_operator.core.discovery import DiscoverySettings

        discovery = DiscoverySettings(site_label=args.discovery_site_label,
                                      rack_label=args.discovery_rack_label,
                                      taint_unconfirmed=args.taint_unconfirmed)
    elif args.taint_unconfirmed:
        print("stargate-operator run: --taint-unconfirmed needs --discover-nodes (the Nodes it taints "
              "are the ones discovery watches)", file=sys.stderr)
        return 2
    if args.telemetry == "prometheus":
        if not args.prometheus_timeout > 0:
            print("stargate-operator run: --prometheus-timeout: must be more than 0 seconds",
                  file=sys.stderr)
            return 2
        problem = prometheus_url_problem(args.prometheus_url)
        if problem:
            print(f"stargate-operator run: --prometheus-url: {problem}", file=sys.stderr)
            return 2
    namespaces = tuple(args.namespaces or args.env_namespaces)
    election = None
    if args.leader_election:
        from stargate_operator.controller.leader import ElectionConfig, default_identity

        try:
            election = ElectionConfig(
                name=args.leader_election,
                namespace=args.leader_election_namespace or (namespaces[0] if namespaces else "default"),
                identity=default_identity(),
                lease_duration=args.leader_lease_duration,
                renew_deadline=args.leader_renew_deadline,
                retry_period=args.leader_retry_period,
            )
        except ValueError as e:
            raise SystemExit(f"stargate-operator run: --leader-election: {e}") from None
    settings = RunSettings(
        engine=EngineSettings(
            namespaces=namespaces,
            stale_after_seconds=args.stale_after,
            slices=SliceSettings(slice_size=args.slice_size, raise_after_seconds=args.raise_after,
                                 confirm_grace_seconds=args.confirm_grace),
            measured_refresh_seconds=args.measured_refresh,
            coalesce_delay=args.coalesce,
            write_concurrency=args.write_concurrency,
        ),
        kubeconfig=args.kubeconfig,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        health_port=args.health_port,
        per_node_metrics=args.per_node_metrics,
        election=election,
        telemetry=args.telemetry,
        prometheus_url=args.prometheus_url,
        prometheus_node_label=args.prometheus_node_label or None,
        prometheus_series=args.prometheus_series,
        prometheus_timeout=args.prometheus_timeout,
        telemetry_interval=args.telemetry_interval,
        discovery=discovery,
        lease_duration=args.lease_duration,
    )
    return run(settings)
