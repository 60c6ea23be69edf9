"""`stargate-operator demo`, as a user runs it: started as a process, checked through kubectl with the
kubeconfig it prints, stopped with a signal; nothing it started may be left running.

Each test starts a demo of its own (its own control plane, state folder, kubeconfig and metrics port),
so they run alongside a demo a person has open and alongside the other integration tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stargate_operator.localcp.binaries import BinaryError, ensure_control_plane, ensure_kubectl

pytestmark = pytest.mark.integration

# Start to converged: 10 to 30 s on two cores; minutes when the machine is loaded far beyond them.
CONVERGE_TIMEOUT = 360.0
STOP_TIMEOUT = 90.0
KUBECTL_TIMEOUT = 120.0  # one kubectl call has taken over a minute at a load average of 16 on 2 cores
CONVERGED = r"\[demo\] converged ([\d.]+)s after start"


# ---------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    start: str  # start time in clock ticks since boot: tells a reused pid apart
    cmd: str


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _procs() -> list[Proc]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is None:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # fields[0] is the state (field 3 of stat); ppid 4, pgrp 5, starttime 22.
        out.append(Proc(int(entry), int(fields[1]), int(fields[2]), fields[19], cmd))
    return out


def descendants(root: int) -> list[Proc]:
    procs = _procs()
    found, frontier = [], {root}
    while frontier:
        level = [p for p in procs if p.ppid in frontier]
        found += level
        frontier = {p.pid for p in level}
    return found


def alive(p: Proc) -> bool:
    """The very process (same pid and start time) still exists and is not a zombie."""
    fields = _stat(p.pid)
    return fields is not None and fields[0] != "Z" and fields[19] == p.start


# ---------------------------------------------------------------------------------------- the demo


class Demo:
    def __init__(self, tmp: Path, *args: str) -> None:
        self.state = tmp / "state"
        self.kubeconfig = tmp / "out" / "kubeconfig"
        self.log = tmp / "demo.out"
        self.kubectl_bin = str(ensure_kubectl())
        self.kubectl_cache = tmp / "kubectl-cache"
        cmd = [
            sys.executable, "-m", "stargate_operator.cli", "demo",
            "--state-dir", str(self.state), "--kubeconfig-out", str(self.kubeconfig),
            "--metrics-port", "0", "--agent-interval", "2", "--no-color", *args,
        ]
        self._log_file = self.log.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.output())
            if m:
                return m
            if self.proc.poll() is not None:
                pytest.fail(f"the demo exited with {self.proc.returncode} before /{pattern}/:\n"
                            f"{self.output()[-6000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no /{pattern}/ in the demo's output after {timeout:.0f}s:\n"
                            f"{self.output()[-6000:]}")
            time.sleep(0.5)

    def kubectl(self, *args: str) -> str:
        proc = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args], capture_output=True, text=True,
            timeout=KUBECTL_TIMEOUT, env=dict(os.environ, KUBECACHEDIR=str(self.kubectl_cache)),
        )
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        """After a failed test: stop it anyway (its watchdogs then end its children)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    try:
        ensure_control_plane()  # a first build happens here, outside the demo's timeouts
    except BinaryError as e:
        pytest.fail(f"the local control plane's binaries are missing: {e}", pytrace=False)
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        demo = Demo(tmp_path, *args)
        started.append(demo)
        return demo

    yield start
    for demo in started:
        demo.kill()


def _started_processes(demo: Demo) -> list[Proc]:
    """What the demo runs once it has converged: etcd, kube-apiserver, the operator, one agent per site."""
    procs = descendants(demo.proc.pid)
    cmds = [p.cmd for p in procs]
    assert any("/etcd " in c for c in cmds), cmds
    assert any("kube-apiserver " in c for c in cmds), cmds
    assert sum("stargate_operator.cli run " in c for c in cmds) == 1, cmds
    assert sum("stargate_operator.cli agent --simulate --all" in c for c in cmds) == 2, cmds
    return procs


def _assert_all_gone(demo: Demo, procs: list[Proc]) -> None:
    left = [p for p in procs if alive(p)]
    assert not left, "left running: " + "; ".join(f"{p.pid} {p.cmd[:100]}" for p in left)
    # The process groups the demo made (servers, operator, agents, watchdogs lead their own): empty.
    for pgid in {p.pgid for p in procs if p.pgid == p.pid}:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
    assert not demo.kubeconfig.exists(), "the kubeconfig of a stopped demo must go"


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in items}


def _poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Until ``check()``; a kubectl call that times out (an overloaded machine) counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s")
        time.sleep(1)


# ---------------------------------------------------------------------------------------- tests


def test_demo_runs_the_sample_site_and_stops_clean_on_ctrl_c(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--duration", "900")  # a safety net only: the test stops it with SIGINT
    t0 = time.monotonic()
    converged = demo.wait_for(CONVERGED, CONVERGE_TIMEOUT)
    print(f"demo converged {converged.group(1)}s after its start ({time.monotonic() - t0:.1f}s here)")
    out = demo.output()
    assert demo.kubeconfig.exists()
    assert f"export KUBECONFIG={demo.kubeconfig}" in out
    # Demand response is a GridEvent, not a patch of the site's curtailment.
    assert "kubectl get stargate -A" in out and '"kind":"GridEvent"' in out and "kubectl get gev" in out
    procs = _started_processes(demo)

    # Everything through kubectl with the kubeconfig the demo wrote, as a user would.
    listing = demo.kubectl("get", "stargate", "-A")
    assert "abilene" in listing and "north-sea" in listing
    sites = demo.get("sgc", "-A")["items"]
    assert {s["metadata"]["name"] for s in sites} == {"abilene", "north-sea"}
    for site in sites:
        power, status = site["spec"]["power"], site["status"]
        usable = power["itCapacityWatts"] * (100 - power["reservePercent"]) // 100
        assert status["power"]["budgetWatts"] == usable
        assert 0 < status["power"]["allocatedWatts"] <= status["power"]["budgetWatts"]
        assert status["power"]["measuredWatts"] > 0, "the simulated agents report power"
        assert status["gpus"]["total"] > 0 and status["nodes"] > 0
        ns = site["metadata"]["namespace"]
        racks = demo.get("rk", "-n", ns)["items"]
        assert racks
        for rack in racks:
            rp = rack["status"]["power"]
            assert rp["budgetWatts"] >= rp["floorWatts"] > 0, rack["metadata"]["name"]
        assert sum(r["status"]["power"]["budgetWatts"] for r in racks) == status["power"]["allocatedWatts"]
        nodes = demo.get("gpun", "-n", ns)["items"]
        assert len(nodes) == status["nodes"]
        for node in nodes:
            assert node["status"]["powerLimitWatts"] > 0
            assert node["status"]["telemetry"]["observedAt"], node["metadata"]["name"]

    claims = demo.get("mclaim", "-A")["items"]
    assert claims and all(c["status"]["phase"] in ("Bound", "Pending") for c in claims)
    claims_by_name = _by_name(claims)
    assert claims_by_name["prod-kv-cache"]["status"]["phase"] == "Bound"
    pools = demo.get("mpool", "-A")["items"]
    for pool in pools:
        mine = [c for c in claims if c["metadata"]["namespace"] == pool["metadata"]["namespace"]
                and c["spec"]["poolRef"] == pool["metadata"]["name"]]
        bound = [c for c in mine if c["status"]["phase"] == "Bound"]
        assert pool["status"]["claims"]["bound"] == len(bound) >= 1, pool["metadata"]["name"]
        assert pool["status"]["allocatedBytes"] == sum(c["status"]["allocatedBytes"] for c in bound)

    # The operator's metrics, on the port the demo printed.
    url = re.search(r"metrics (http://127\.0\.0\.1:\d+/metrics)", out)
    assert url, out[-3000:]
    with urllib.request.urlopen(url.group(1), timeout=10) as resp:
        body = resp.read().decode()
    assert re.search(r'^stargate_\w+\{[^}]*abilene', body, re.M), body[:2000]

    t = time.monotonic()
    assert demo.stop(signal.SIGINT) == 0, demo.output()[-4000:]
    print(f"demo stopped {time.monotonic() - t:.1f}s after SIGINT")
    _assert_all_gone(demo, procs)
    assert "stopped operator, agent stargate-abilene, agent stargate-north-sea, kube-apiserver, etcd" \
        in demo.output()


def test_demo_curtail_ripples_to_racks_and_node_limits(start_demo: Callable[..., Demo]) -> None:
    """`--curtail 20`: a GridEvent on the site; the site's budget drops by 20 %, the racks' budgets and
    every node's GPU power limit follow, the simulated agents bring the measured power under the new
    budget, and the event reports it Met.

    What the figures were before the event comes from the spec (the budget without curtailment, which
    the test above checks) and from the demo's own summary, whose change lines are read from the API:
    on a machine loaded far beyond its cores, a test cannot count on reading the API within a given
    window between convergence and the event."""
    demo = start_demo("--curtail", "20", "--curtail-after", "5", "--duration", "900")
    demo.wait_for(CONVERGED, CONVERGE_TIMEOUT)
    procs = _started_processes(demo)
    demo.wait_for(r"curtailment 20% applied to north-sea", 120)
    ns = "stargate-north-sea"
    # a GridEvent on the site, not a patch of it: the site's spec is the samples' own
    site = demo.get("sgc", "north-sea", "-n", ns)
    assert "curtailment" not in site["spec"]["power"]
    event = demo.get("gev", "demo-curtail", "-n", ns)
    assert (event["spec"]["clusterRef"], event["spec"]["reducePercent"]) == ("north-sea", 20)
    assert "end" not in event["spec"] and "powerDomainRef" not in event["spec"]
    cap, reserve = site["spec"]["power"]["itCapacityWatts"], site["spec"]["power"]["reservePercent"]
    before = cap * (100 - reserve) // 100
    expected = cap * (100 - reserve) * 80 // 10000
    assert abs(expected - before * 0.8) <= 1

    state: dict[str, Any] = {}

    def budget_dropped() -> bool:
        state["site"] = demo.get("sgc", "north-sea", "-n", ns)
        return bool(state["site"]["status"]["power"]["budgetWatts"] == expected)

    _poll(budget_dropped, 120, f"north-sea's budget to drop from {before} W to {expected} W")

    def event_in_effect() -> bool:
        status = demo.get("gev", "demo-curtail", "-n", ns).get("status") or {}
        state["event"] = status
        return bool(status.get("phase") == "Active" and status.get("targetWatts") == expected)

    _poll(event_in_effect, 60, "the GridEvent to be Active with the curtailed budget as its target")
    # The summary saw it happen, from the uncurtailed figure.
    old, new = re.escape(f"{before / 1000:,.1f} kW"), re.escape(f"{expected / 1000:,.1f} kW")
    demo.wait_for(rf"north-sea budget: {old} (→|->) {new}", 60)

    def limits_followed() -> bool:
        nodes = demo.get("gpun", "-n", ns)["items"]
        racks = demo.get("rk", "-n", ns)["items"]
        state["nodes"] = nodes
        if sum(r["status"]["power"]["budgetWatts"] for r in racks) > expected:
            return False
        by_rack: dict[str, int] = {}
        for n in nodes:
            rack = n["spec"]["rackRef"]
            by_rack[rack] = by_rack.get(rack, 0) + n["status"]["allocatedWatts"]
        return all(by_rack.get(r["metadata"]["name"], 0) <= r["status"]["power"]["budgetWatts"]
                   for r in racks)

    _poll(limits_followed, 120, "rack budgets and node allocations within the curtailed budget")

    # Every rack whose nodes' GPU limit the summary saw go down: its nodes now hold the new limit.
    limit = r"(\d+)(?:-(\d+))? W"
    racks = {r["metadata"]["name"] for r in demo.get("rk", "-n", ns)["items"]}
    demo.wait_for(rf"({'|'.join(map(re.escape, racks))}) GPU power limit: {limit} (→|->) {limit}", 60)
    lowered = 0
    for m in re.finditer(rf"(\S+) GPU power limit: {limit} (?:→|->) {limit}", demo.output()):
        rack, old_lo, old_hi, new_lo, new_hi = m.groups()
        if rack not in racks:
            continue
        old_max, new_min, new_max = int(old_hi or old_lo), int(new_lo), int(new_hi or new_lo)
        assert new_max < old_max, m.group(0)
        held = [n["status"]["powerLimitWatts"] for n in state["nodes"] if n["spec"]["rackRef"] == rack]
        assert held and all(new_min <= w <= new_max for w in held), (m.group(0), held)
        lowered += 1
    assert lowered >= 1, demo.output()[-4000:]

    # The simulated agents enforce the new limits: the measured power follows within a few readings.
    def measured_within_budget() -> bool:
        power = demo.get("sgc", "north-sea", "-n", ns)["status"]["power"]
        return bool(power["measuredWatts"] <= power["budgetWatts"])

    _poll(measured_within_budget, 120, "north-sea's measured power to fall within its curtailed budget")

    # ... which the event reports as met: allocation and measured power within its target
    def met() -> bool:
        status = demo.get("gev", "demo-curtail", "-n", ns).get("status") or {}
        state["event"] = status
        return any(c["type"] == "Met" and c["status"] == "True" for c in status.get("conditions", []))

    _poll(met, 120, "the GridEvent to be Met")

    assert demo.stop(signal.SIGTERM) == 0, demo.output()[-4000:]
    _assert_all_gone(demo, procs)


def test_demo_once_without_agents_exits_by_itself(start_demo: Callable[..., Demo]) -> None:
    """`--once` (the CI form): converge, print the summary, stop everything, exit 0, unattended."""
    demo = start_demo("--once", "--no-agents", "--timeout", str(CONVERGE_TIMEOUT))
    seen: dict[tuple[int, str], Proc] = {}
    deadline = time.monotonic() + CONVERGE_TIMEOUT + STOP_TIMEOUT
    while demo.proc.poll() is None:
        # Everything it starts, at any time, to check afterwards that none of it outlived the demo. A
        # zombie's command line reads empty: keep what the living process showed.
        seen.update({(p.pid, p.start): p for p in descendants(demo.proc.pid) if p.cmd})
        assert time.monotonic() < deadline, demo.output()[-4000:]
        time.sleep(0.3)
    out = demo.output()
    assert demo.proc.returncode == 0, out[-4000:]
    assert "[demo] --once: done" in out
    assert "no agents (--no-agents)" in out
    cmds = [p.cmd for p in seen.values()]
    assert any("cli run" in c for c in cmds) and any("kube-apiserver" in c for c in cmds), cmds
    assert not any("cli agent" in c for c in cmds)
    # The summary: both sites with their budgets, racks by priority, pools and claims.
    assert re.search(r"budget 380\.0 kW", out) and re.search(r"budget 247\.0 kW", out), out[-4000:]
    assert re.search(r"gb200-f01\s+800", out) and "hbm-inference" in out
    assert re.search(r"claims: \d+ bound, \d+ pending", out)
    _assert_all_gone(demo, list(seen.values()))


