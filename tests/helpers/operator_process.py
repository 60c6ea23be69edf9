"""`stargate-operator run` as a real subprocess against the local control plane, for integration tests.

``OperatorProcess(control_plane, log_dir, *extra_args)``: ``start()`` picks free metrics and health
ports, logs to ``log_dir/operator-N.log`` and waits until ``/healthz`` answers with the engine's
cache synced; ``stop()`` sends SIGTERM (graceful), ``kill()`` SIGKILL (a crash). ``metrics()`` reads
its Prometheus endpoint; ``counter(name, **labels)`` sums a counter's samples.

``wait_for(predicate, timeout)`` polls until the predicate returns a truthy value and returns it;
on timeout it fails with the last value (or exception) seen, which is what a test wants to read.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from stargate_operator.localcp.controlplane import LocalControlPlane

T = TypeVar("T")
_serial = itertools.count(1)
_BIN = Path(sys.executable).parent / "stargate-operator"


class WaitTimeout(AssertionError):
    pass


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.1,
             what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; return that. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as e:  # the API may be restarting, an object not there yet...
            last = e
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what or predicate!r}; last: {last!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    def __init__(self, control_plane: LocalControlPlane, log_dir: Path, *args: str,
                 env: dict[str, str] | None = None, kubeconfig: Path | None = None) -> None:
        self.control_plane = control_plane
        self.kubeconfig = kubeconfig or control_plane.kubeconfig  # another one: e.g. through a proxy
        self.args = list(args)
        self.log = Path(log_dir) / f"operator-{next(_serial)}.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, wait: bool = True, timeout: float = 30.0) -> OperatorProcess:
        self.metrics_port, self.health_port = free_port(), free_port()
        while self.health_port == self.metrics_port:
            self.health_port = free_port()
        cmd = [str(_BIN), "run", "--kubeconfig", str(self.kubeconfig),
               "--metrics-port", str(self.metrics_port), "--metrics-addr", "127.0.0.1",
               "--health-port", str(self.health_port), *self.args]
        env = self.control_plane.env()
        env.update(self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Tests read measured figures from status within seconds: refreshed at once unless a test
        # asks for the production default (extra_env).
        env.setdefault("STARGATE_MEASURED_REFRESH", "0.2")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        if wait:
            self.wait_synced(timeout)
        return self

    def health(self) -> dict[str, Any]:
        """/healthz as JSON (kopf caches the probes' results for up to 10 s)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
            body: dict[str, Any] = json.loads(r.read() or b"{}")
            return body

    def engine_health(self) -> dict[str, Any]:
        out: dict[str, Any] = self.health().get("engine") or {}
        return out

    def wait_synced(self, timeout: float = 30.0) -> None:
        """Until the engine has listed every kind and /healthz answers. The log says when the cache
        is synced: kopf caches probe results for 10 s, so /healthz alone would lag."""
        def synced() -> bool:
            if not self.alive:
                raise AssertionError(f"the operator exited ({self.returncode}):\n{self.log_tail()}")
            return "cache synced" in self.log_text() and try_urlopen_ok(
                f"http://127.0.0.1:{self.health_port}/healthz")

        try:
            wait_for(synced, timeout, 0.1, "the operator's cache to sync")
        except AssertionError as e:
            raise AssertionError(f"{e}\nlog:\n{self.log_tail()}") from None

    def active(self) -> bool:
        """Acting (not a standby), from the log: with --leader-election, the last of the election's
        lines ('is now active' / 'standing by'); without, once the cache is synced."""
        text = self.log_text()
        if "--leader-election" not in self.args:
            return "cache synced" in text
        return text.rfind("is now active") > text.rfind("standing by")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (graceful shutdown); SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return self.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the operator did not stop within {timeout}s of SIGTERM:\n"
                                 f"{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL, as in a crash or an OOM kill: no cleanup at all."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> OperatorProcess:
        if self.proc is None:
            try:
                self.start()
            except BaseException:
                # __exit__ does not run when __enter__ fails: never leave the process behind.
                self.__exit__(None, None, None)
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.alive:
            with contextlib.suppress(AssertionError):
                self.stop()

    # -- observation --------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
            return text

    def counter(self, name: str, **labels: str) -> float:
        """Sum of the samples of counter ``name`` (without ``_total``) whose labels match."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics_text()):
            if family.name != name:
                continue
            for s in family.samples:
                if s.name != name + "_total":
                    continue
                if all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def writes(self, kind: str | None = None) -> int:
        """Status patches the operator made (``stargate_api_writes_total{verb="patch_status"}``)."""
        labels = {"verb": "patch_status"}
        if kind:
            labels["kind"] = kind
        return int(self.counter("stargate_api_writes", **labels))

    def reconciles(self) -> int:
        return int(self.counter("stargate_reconciles", kind="namespace"))


def try_urlopen_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False
