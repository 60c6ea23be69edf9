"""The demo's sequence and its clean stop.

1. the control-plane binaries (cached; the first time they are built from their Go modules, with
   progress lines), kubectl from this environment;
2. the local control plane (etcd + kube-apiserver) with its files under the state folder;
3. the CRDs, rendered from this package's models; the sample site (``kubectl apply --server-side``);
4. the kubeconfig copied to a stable path, for the user's kubectl;
5. the operator (``stargate-operator run``) and one simulated agent process per namespace that has
   GPU nodes (``stargate-operator agent --simulate --all``), each in a process group of its own;
6. the live summary every ``refresh`` seconds; optionally a demand-response curtailment once the
   site has converged;
7. on Ctrl-C, SIGTERM, ``--duration`` or ``--once``: the agents and the operator (SIGTERM, grace,
   SIGKILL to each group), then kube-apiserver and etcd; the stable kubeconfig is removed (it would
   point at a server that is gone), the logs stay.

A second signal while stopping is ignored: stopping always finishes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

import yaml
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from stargate_operator import kinds
from stargate_operator.client import ApiError
from stargate_operator.core.wire import format_time, from_epoch
from stargate_operator.demo.assets import (
    AssetError,
    sample_documents,
    sample_namespaces,
    sample_sites,
    samples_dir,
    write_crds,
)
from stargate_operator.demo.procs import Children
from stargate_operator.demo.summary import BAD, DIM, ApiReader, Glyphs, Renderer, Snapshot, Tracker, duration
from stargate_operator.localcp.binaries import BinaryError, cache_root, ensure_control_plane, ensure_kubectl
from stargate_operator.localcp.controlplane import (
    CLUSTER_NAME,
    ControlPlaneError,
    KubectlError,
    LocalControlPlane,
)
from stargate_operator.localcp.versions import ETCD_VERSION, KUBERNETES_VERSION

CURTAIL_FIELD_MANAGER = "grid-operator"
CURTAIL_REASON = "demand-response event from stargate-operator demo --curtail"
# The GridEvent `--curtail` creates: on the site, from the moment it is applied.
CURTAIL_EVENT = "demo-curtail"
CURTAIL_SOURCE = "stargate-operator demo --curtail"
_PERIODIC_FRAME_SECONDS = 30.0  # without a terminal: a full summary this often, changes as they happen
_SETTLE_SECONDS = 3.0  # --once: no tracked change for this long after the curtailment
# Without a terminal nothing says how wide a line may be: wide enough for a rack row with two
# highlighted figures, so that a log or a CI page shows the tables unwrapped.
_PLAIN_WIDTH = 160
_API_TIMEOUT = 20.0  # a list on a machine loaded far beyond its cores can take seconds


_T = TypeVar("_T")


def default_state_dir() -> Path:
    return cache_root() / "demo"


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why (and where the logs are)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: stop everything and exit 0."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Options:
    state_dir: Path
    kubeconfig_out: Path
    samples: str | None = None
    metrics_port: int | None = None  # None: 8080 when free, else any free port
    agents: bool = True
    agent_interval: float = 5.0
    stale_after: float = 30.0
    seed: int | None = None
    curtail: int | None = None
    curtail_site: str | None = None
    curtail_after: float = 10.0
    duration: float | None = None
    once: bool = False
    timeout: float = 180.0
    refresh: float = 2.0
    color: bool | None = None  # None: when the output is a terminal


def _binaries_at_hand() -> bool:
    """kube-apiserver and etcd need no build: KUBEBUILDER_ASSETS is set, or both are in the cache."""
    if os.environ.get("KUBEBUILDER_ASSETS"):
        return True
    return all(
        (cache_root() / "bin" / f"{name}-{version}" / name).exists()
        for name, version in (("kube-apiserver", KUBERNETES_VERSION), ("etcd", ETCD_VERSION))
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Demo:
    def __init__(self, opts: Options, out: IO[str] | None = None) -> None:
        self.opts = opts
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        color = opts.color if opts.color is not None else self.tty and os.environ.get("NO_COLOR") is None
        # markup off: "[demo]" and kubectl's JSON patches are text, not rich markup.
        self.console = Console(file=self.out, force_terminal=self.tty or color,
                               color_system="auto" if color else None, no_color=not color,
                               width=None if self.tty else _PLAIN_WIDTH, markup=False, highlight=False,
                               emoji=False)
        self.glyphs = Glyphs(unicode=self.console.encoding.lower().startswith("utf"))
        self._live: Live | None = None
        self.t0 = time.monotonic()
        self.started_at = time.time()  # wall clock: the start of the GridEvent the demo suggests
        self.cp: LocalControlPlane | None = None
        self.children = Children()
        self.reader: ApiReader | None = None
        self.metrics_url = ""
        self._stopping = False
        self._defer = False
        self._pending_signal: int | None = None
        self._lock_file: IO[str] | None = None
        self._kubeconfig_written = False

    # ------------------------------------------------------------------ output
    def say(self, msg: str) -> None:
        """One line of news; while the live summary runs in a terminal, rich prints it above the
        summary, which stays in place. Not wrapped by rich: the terminal wraps a long line, a log
        keeps it whole."""
        self.console.print(f"[demo] {msg}", soft_wrap=True)

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self._stopping:
            return
        if self._defer:
            self._pending_signal = signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def _no_interrupt(self) -> Iterator[None]:
        """Hold a signal back while a child is being started and registered, then act on it."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
        if self._pending_signal is not None and not self._stopping:
            raise Interrupted(self._pending_signal)

    # ------------------------------------------------------------------ entry
    def run(self) -> int:
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        code = 1
        try:
            try:
                code = self._run()
            finally:
                self._stopping = True
        except Interrupted as e:
            self._end_live()
            self.console.print()
            self.say(f"{e}: stopping everything the demo started")
            code = 0
        except (AssetError, BinaryError, ControlPlaneError, KubectlError, DemoError) as e:
            print(f"stargate-operator demo: {e}", file=sys.stderr, flush=True)
            code = 1
        finally:
            self._stopping = True
            self._cleanup()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return code

    def _lock(self) -> None:
        state = self.opts.state_dir
        state.mkdir(parents=True, exist_ok=True)
        f = (state / "lock").open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise DemoError(
                f"another demo (pid {holder}) is running with the state folder {state}; stop it, or "
                "give this one another --state-dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f

    def _run(self) -> int:
        opts = self.opts
        self._lock()
        self._check_kubeconfig_out()
        samples = samples_dir(opts.samples)
        site_ns, site_name = self._curtail_target(samples)
        agent_namespaces = sample_namespaces(samples) if opts.agents else []

        if not _binaries_at_hand():
            self.say("kube-apiserver and etcd are not cached yet: building them from their Go modules, once "
                     f"(several minutes; progress below; cached under {cache_root()})")
        t = time.monotonic()
        kubectl = ensure_kubectl()
        binaries = ensure_control_plane()
        self.say(f"binaries ready in {time.monotonic() - t:.1f}s: {binaries.kube_apiserver.parent.name}, "
                 f"{binaries.etcd.parent.name}")

        t = time.monotonic()
        self.cp = cp = LocalControlPlane(opts.state_dir / "control-plane", binaries=binaries, kubectl=kubectl)
        cp.start()
        self.say(f"control plane (etcd + kube-apiserver) ready in {time.monotonic() - t:.1f}s at {cp.server}")

        t = time.monotonic()
        crd_dir = write_crds(opts.state_dir / "crds")
        crds = self._patiently("installing the CRDs", lambda: cp.apply_crds(crd_dir))
        docs = sample_documents(samples)
        self._patiently("applying the samples", lambda: cp.kubectl(
            "apply", "--server-side", "--field-manager=stargate-demo", "-f", str(samples), timeout=120))
        self.say(f"{len(crds)} CRDs installed and {len(docs)} sample objects applied from {samples} "
                 f"in {time.monotonic() - t:.1f}s")

        self._write_kubeconfig(cp)
        self.reader = ApiReader(cp.connect(timeout=_API_TIMEOUT))

        metrics_port = self._metrics_port()
        self._start_operator(cp, metrics_port)
        for ns in agent_namespaces:
            self._start_agent(cp, ns)
        self.say(f"operator started (metrics {self.metrics_url})"
                 + (f", simulated agents for {', '.join(agent_namespaces)}" if agent_namespaces else
                    ", no agents (--no-agents): nodes count as healthy, nothing is measured"))
        self._print_try(site_ns, site_name)
        return self._loop(site_ns, site_name)

    # ------------------------------------------------------------------ steps
    def _patiently(self, what: str, step: Callable[[], _T], attempts: int = 3) -> _T:
        """An idempotent kubectl step, again when kubectl times out (a machine loaded far beyond its
        cores); its failures are errors at once."""
        for attempt in range(1, attempts + 1):
            try:
                return step()
            except subprocess.TimeoutExpired as e:
                if attempt == attempts:
                    raise DemoError(f"{what}: kubectl timed out {attempts} times ({e.timeout:.0f}s each); "
                                    "is the machine overloaded?") from None
                self.say(f"{what}: kubectl timed out after {e.timeout:.0f}s; trying again")
        raise AssertionError("unreachable")  # pragma: no cover

    def _curtail_target(self, samples: Path) -> tuple[str, str]:
        """The site a curtailment goes to: --curtail-site, else the site of the percentage event in
        the samples' grid-events/ folder, else the first site."""
        sites = sample_sites(samples)
        if not sites:
            raise AssetError(f"{samples}: no StargateCluster in the samples")
        wanted = self.opts.curtail_site
        if wanted is None:
            events = samples / "grid-events"
            for d in sample_documents(events) if events.is_dir() else []:
                spec = d.get("spec") or {}
                if d.get("kind") == kinds.GRID_EVENT.kind and "reducePercent" in spec:
                    wanted = str(spec.get("clusterRef"))
                    break
        if wanted is None:
            return sites[0]
        for ns, name in sites:
            if name == wanted:
                return ns, name
        raise AssetError(f"--curtail-site {wanted}: no such site in the samples "
                         f"({', '.join(n for _, n in sites)})")

    def _check_kubeconfig_out(self) -> None:
        """Refuse to overwrite (and later remove) a kubeconfig that is not an earlier demo's, such as
        ``--kubeconfig-out ~/.kube/config``."""
        out = self.opts.kubeconfig_out
        if not out.exists():
            return
        try:
            cfg = yaml.safe_load(out.read_text())
            clusters = {c.get("name") for c in cfg.get("clusters") or []} if isinstance(cfg, dict) else set()
        except (OSError, yaml.YAMLError):
            clusters = set()
        if clusters != {CLUSTER_NAME}:
            raise DemoError(f"--kubeconfig-out {out} exists and is not a kubeconfig the demo wrote; the demo "
                            "removes its kubeconfig when it stops, so give a path of its own")

    def _write_kubeconfig(self, cp: LocalControlPlane) -> None:
        out = self.opts.kubeconfig_out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(cp.kubeconfig.read_text())
        tmp.chmod(0o600)
        tmp.replace(out)
        self._kubeconfig_written = True

    def _metrics_port(self) -> int:
        port = self.opts.metrics_port
        if port is None:
            if _port_free(8080):
                port = 8080
            else:
                port = _free_port()
                self.say(f"port 8080 is taken; metrics on {port} instead")
        elif port == 0 or not _port_free(port):
            if port:
                raise DemoError(f"--metrics-port {port} is taken")
            port = _free_port()
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        return port

    def _child_env(self, cp: LocalControlPlane) -> dict[str, str]:
        env = cp.env()
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start_operator(self, cp: LocalControlPlane, metrics_port: int) -> None:
        args = [
            sys.executable, "-m", "stargate_operator.cli", "run",
            "--kubeconfig", str(cp.kubeconfig),
            "--metrics-port", str(metrics_port), "--metrics-addr", "127.0.0.1",
            "--health-port", str(_free_port()),
            "--stale-after", str(self.opts.stale_after),
            # The live summary reads measured figures from status: refreshed often here (the
            # default, minutes, is for sites whose live figures are in Prometheus and Grafana).
            "--measured-refresh", "2",
        ]
        with self._no_interrupt():
            self.children.start("operator", args, log=self.opts.state_dir / "logs" / "operator.log",
                                env=self._child_env(cp), cwd=self.opts.state_dir)

    def _start_agent(self, cp: LocalControlPlane, namespace: str) -> None:
        args = [
            sys.executable, "-m", "stargate_operator.cli", "agent", "--simulate", "--all",
            "--namespace", namespace, "--kubeconfig", str(cp.kubeconfig),
            "--interval", str(self.opts.agent_interval),
            # One INFO line per status write would grow the log by megabytes an hour.
            "--log-level", "WARNING",
        ]
        if self.opts.seed is not None:
            args += ["--seed", str(self.opts.seed)]
        with self._no_interrupt():
            self.children.start(f"agent {namespace}", args,
                                log=self.opts.state_dir / "logs" / f"agent-{namespace}.log",
                                env=self._child_env(cp), cwd=self.opts.state_dir)

    def _commands(self, ns: str, site: str) -> list[tuple[str, str]]:
        kc = shlex.quote(str(self.opts.kubeconfig_out))
        event = json_compact(grid_event(ns, site, "shed-20", 20, self.started_at, "demand response",
                                        "kubectl"))
        return [
            (f"export KUBECONFIG={kc}", ""),
            ("kubectl get stargate -A", "every site, rack, node, pool and claim"),
            ("kubectl get sgc -A -o wide", "sites: budget, demand, allocated, measured"),
            (f"kubectl get rk -n {ns} -o wide", "racks: priority, budget, demand, floor, measured"),
            (f"kubectl get gpun -n {ns}", "nodes: the per-GPU power limit the agents enforce"),
            ("kubectl get mpool,mclaim -A", "memory pools and claims"),
            (f"kubectl describe sgc {site} -n {ns}", "conditions and events"),
            (f"echo {shlex.quote(event)} | kubectl apply -f -",
             "a demand-response event (GridEvent): shed 20 % from now on"),
            (f"kubectl get gev -n {ns}; kubectl delete gev shed-20 -n {ns}",
             "... how it is met, and its end"),
            (f"kubectl annotate gpun NODE -n {ns} {kinds.FAILED_GPUS_ANNOTATION}=2 --overwrite",
             "a GPU fault on a simulated node"),
            (f"curl -s {self.metrics_url} | grep ^stargate_", "the operator's metrics"),
        ]

    def _print_try(self, ns: str, site: str) -> None:
        lines = [Text(""), Text("Try it, in another terminal:", style="bold")]
        for cmd, what in self._commands(ns, site):
            lines.append(Text(f"  {cmd}"))
            if what:
                lines.append(Text(f"      # {what}", style=DIM))
        if shutil.which("kubectl") is None and self.cp is not None:
            lines.append(Text(f"  (kubectl is {self.cp.kubectl_path}: "
                              f"export PATH={shlex.quote(str(self.cp.kubectl_path.parent))}:$PATH)"))
        lines += [Text(f"  logs: {self.opts.state_dir / 'logs'}"), Text("")]
        # Copied by hand into a shell: one command a line, whatever the terminal's width.
        for line in lines:
            self.console.print(line, soft_wrap=True)

    def _curtail(self, ns: str, site: str, percent: int) -> None:
        """A GridEvent on the site from now on, open-ended, shedding ``percent`` of its budget (like
        the sample in ``crds/samples/grid-events/``), server-side applied by the field manager
        ``grid-operator``; straight to the API, as a kubectl process (discovery first) takes seconds
        on a busy machine."""
        assert self.reader is not None
        manifest = grid_event(ns, site, CURTAIL_EVENT, percent, time.time(), CURTAIL_REASON, CURTAIL_SOURCE)
        try:
            self.reader.apply(kinds.GRID_EVENT.plural, ns, CURTAIL_EVENT, manifest, CURTAIL_FIELD_MANAGER)
        except ApiError as e:
            raise DemoError(f"the curtailment of {site} was not accepted: {e}") from None

    # ------------------------------------------------------------------ the live summary
    def _header(self, now: float, converged_at: float | None, ns: str, site: str,
                waiting: list[str] | None = None) -> list[RenderableType]:
        if converged_at is not None:
            state = f"converged {converged_at - self.t0:.1f}s after start"
        else:
            state = "converging" + (f" ({'; '.join(waiting)})" if waiting else "")
        cmds = self._commands(ns, site)
        d = self.glyphs.dot
        return [
            Text.assemble(("Stargate demo", "bold"),
                          f" {d} up {duration(now - self.t0)} {d} {state} {d} Ctrl-C stops everything"),
            Text(f"  {cmds[0][0]}   then: {cmds[1][0]} {d} {cmds[3][0]}"),
            Text(f"  {cmds[7][0]}"),
            Text(f"  metrics {self.metrics_url} {d} logs {self.opts.state_dir / 'logs'}"),
        ]

    def _draw(self, frame: RenderableType) -> None:
        """In a terminal: the frame replaces the last one in place (rich Live: only the summary is
        redrawn, what was printed before it stays in the scrollback, a frame taller than the screen is
        cut). Otherwise: printed in full, then a blank line."""
        if self.tty:
            if self._live is None:
                self._live = Live(console=self.console, auto_refresh=False, transient=False)
                self._live.start()
            self._live.update(frame, refresh=True)
        else:
            self.console.print(frame)
            self.console.print()

    def _end_live(self) -> None:
        """Leave the last frame on the screen and print below it from now on."""
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()

    def _loop(self, ns: str, site: str) -> int:
        opts = self.opts
        assert self.reader is not None
        renderer = Renderer(self.glyphs, self.t0)
        tracker = Tracker()
        started = time.monotonic()
        deadline = started + opts.duration if opts.duration is not None else None
        converged_at: float | None = None
        curtail_at: float | None = None
        curtailed_at: float | None = None
        last_change = started
        last_frame = 0.0
        snap: Snapshot | None = None
        waiting: list[str] = []
        api_error = ""
        while True:
            for child in self.children.dead():
                raise DemoError(self.children.describe_death(child))
            now = time.monotonic()
            try:
                snap = self.reader.snapshot()
                errors = self.reader.errors
                api_error = ("the API did not answer (showing the last lists): " + "; ".join(errors)
                             if errors else "")
            except (ApiError, ValueError) as e:
                api_error = f"the API did not answer: {e or type(e).__name__}"
            frame_due = False
            if snap is not None:
                changes = tracker.update(snap, now)
                if changes:
                    last_change = now
                if not self.tty:
                    for c in changes:
                        self.console.print(renderer.change(c), soft_wrap=True)
                waiting = snap.pending() + (snap.waiting_for_telemetry() if opts.agents else [])
                if converged_at is None and not waiting:
                    converged_at, tracker.armed, frame_due = now, True, True
                    self.say(f"converged {now - self.t0:.1f}s after start ({now - started:.1f}s after the "
                             "operator started): every status written, "
                             + ("every node reporting telemetry, " if opts.agents else "")
                             + "claims decided")
                    if opts.curtail is not None:
                        curtail_at = now + opts.curtail_after
                if curtail_at is not None and curtailed_at is None and now >= curtail_at:
                    assert opts.curtail is not None
                    self._curtail(ns, site, opts.curtail)
                    curtailed_at = last_change = now
                    self.say(f"curtailment {opts.curtail}% applied to {site} (GridEvent {CURTAIL_EVENT}, "
                             f"field manager {CURTAIL_FIELD_MANAGER}); watch it ripple: site budget, rack "
                             "budgets, GPU power limits, measured power")
                if opts.once and converged_at is not None and (
                    opts.curtail is None or (
                        curtailed_at is not None and self._settled(snap, ns, site, opts.curtail)
                        and now - last_change >= _SETTLE_SECONDS)):
                    self._draw(renderer.frame(snap, tracker, now=now,
                                              header=self._header(now, converged_at, ns, site)))
                    self._end_live()
                    self.say("--once: done")
                    return 0
            if opts.once and now - started > opts.timeout:
                what = "; ".join(waiting) if snap is not None else api_error
                raise DemoError(f"--once: not settled after {opts.timeout:.0f}s ({what or 'curtailment'}); "
                                f"logs in {opts.state_dir / 'logs'}")
            if self.tty or frame_due or now - last_frame >= _PERIODIC_FRAME_SECONDS:
                header = self._header(now, converged_at, ns, site, waiting)
                if api_error:
                    header.append(Text(api_error, style=BAD))
                self._draw(renderer.frame(snap, tracker, now=now, header=header) if snap is not None
                           else Group(*header))
                last_frame = now
            if deadline is not None and now >= deadline:
                self._end_live()
                self.say(f"--duration {opts.duration:g}s reached")
                if snap is not None and not self.tty:
                    self._draw(renderer.frame(snap, tracker, now=now))
                return 0
            wake = now + opts.refresh
            if deadline is not None:
                wake = min(wake, deadline)
            time.sleep(max(0.0, wake - time.monotonic()))

    @staticmethod
    def _settled(snap: Snapshot, ns: str, site: str, percent: int) -> bool:
        """The curtailment's GridEvent is in effect on the site and every status is written for the
        current specs."""
        if snap.pending():
            return False
        for e in snap.events:
            if e["metadata"].get("namespace") == ns and e["metadata"]["name"] == CURTAIL_EVENT:
                spec, status = e.get("spec") or {}, e.get("status") or {}
                return bool(spec.get("clusterRef") == site and spec.get("reducePercent") == percent
                            and status.get("phase") == "Active")
        return False

    # ------------------------------------------------------------------ stop
    def _cleanup(self) -> None:
        self._end_live()
        t = time.monotonic()
        stopped: list[str] = []
        if self.reader is not None:
            with contextlib.suppress(Exception):
                self.reader.close()
            self.reader = None
        children = [c.name for c in self.children.children if not c.stopped]
        try:
            self.children.stop_all()
            stopped += children
        finally:
            if self.cp is not None:
                self.cp.stop()
                stopped += ["kube-apiserver", "etcd"]
                self.cp = None
                # etcd's data (tens of MB) is wiped at the next start anyway; its log and the API
                # server's stay next to it.
                shutil.rmtree(self.opts.state_dir / "control-plane" / "etcd", ignore_errors=True)
            if self._kubeconfig_written:
                with contextlib.suppress(OSError):
                    self.opts.kubeconfig_out.unlink()
                self._kubeconfig_written = False
            if stopped:
                self.say(f"stopped {', '.join(stopped)} in {time.monotonic() - t:.1f}s; "
                         f"logs kept in {self.opts.state_dir / 'logs'}")
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


def grid_event(ns: str, site: str, name: str, percent: int, start: float, reason: str,
               source: str) -> dict[str, Any]:
    """A GridEvent asking `site` to shed `percent` of its budget from `start` (epoch seconds, whole
    seconds as Kubernetes writes times), open-ended."""
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.GRID_EVENT.kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterRef": site, "start": format_time(from_epoch(start)), "reducePercent": percent,
                 "reason": reason, "source": source},
    }


def json_compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
