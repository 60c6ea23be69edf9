"""Ramps carried in the PowerLimitSlices, on the real API server with `stargate-operator run` and
real `agent --simulate` processes: a grid event followed through its descent and its rise costs one
write per changed slice per piece of the ramp; the operator SIGKILLed mid-descent, the agents finish
the descent on their own (their enforced limits follow the slice's line); restarted mid-descent, the
operator writes no slice (no jump, no ramp started again); protection (a rack's rating lowered)
still applies at once, and the ramp goes from the slice.

The site: 20,000 W, no domains, two racks of two default nodes (4 GPUs of 100..500 W on a 1000 W
base: demand 3,000 W a node, 12,000 W in all); slices of 2 nodes, so one slice per rack. The event
limits the site to 6,000 W (1,500 W a node: 125 W a GPU); down and up at 500 W/s, so the envelope
descends from 20,000 W 28 s before start and meets the demand 12 s before start: the slices' line
runs from there to start. After end it rises to the demand in 12 s."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.api import Api, obj
from helpers.operator_process import OperatorProcess, free_port, wait_for
from helpers.site import cluster, node, rack, rfc3339
from stargate_operator.core.sliceramp import LOOKAHEAD_SECONDS, held_entries
from stargate_operator.core.wire import parse_epoch
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

AGENT = [sys.executable, "-m", "stargate_operator.cli", "agent"]
NODES = ("a-1", "a-2", "b-1", "b-2")
FULL, TARGET = 500, 125  # per GPU: demand, and 1,500 W a node


def _site(start: datetime, end: datetime) -> list[dict[str, Any]]:
    site = cluster(it=20_000)
    site["spec"]["power"].update(rampDownWattsPerSecond=500, rampUpWattsPerSecond=500)
    event = obj("GridEvent", "dr", {"clusterRef": "site", "start": rfc3339(start), "end": rfc3339(end),
                                    "limitWatts": 6_000, "source": "test:vtn/event-1"})
    return [site, rack("a"), rack("b"), *(node(n, n[0]) for n in NODES), event]


class Agents:
    """`agent --simulate --all` as a process of its own; its enforced limits read from its metrics."""

    def __init__(self, control_plane: LocalControlPlane, ns: str, log: Path) -> None:
        self.port = free_port()
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [*AGENT, "--simulate", "--all", "--interval", "1", "--metrics-port", str(self.port),
             "--metrics-addr", "127.0.0.1", "--seed", "1"],
            env={**control_plane.env(), "STARGATE_AGENT_NAMESPACE": ns}, stdout=self.log,
            stderr=subprocess.STDOUT)

    def enforced(self) -> dict[str, int]:
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return {}
        out: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("stargate_agent_node_enforced_limit_watts{"):
                name = line.split('node="', 1)[1].split('"', 1)[0]
                out[name] = int(float(line.rsplit(" ", 1)[1]))
        return out

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def agents(control_plane: LocalControlPlane, namespace: str, tmp_path: Path) -> Iterator[Agents]:
    a = Agents(control_plane, namespace, tmp_path / "agents.log")
    try:
        yield a
    finally:
        a.stop()


def _read(agents: Agents) -> tuple[float, dict[str, int]]:
    """The agents' enforced limits, and an instant after they were read."""
    limits = agents.enforced()
    return time.time(), limits


def _slices(api: Api, ns: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in api.list("PowerLimitSlice", ns)}


def _slice_writes(op: OperatorProcess) -> int:
    # created by an apply, then written onto the version held (an update)
    return sum(int(op.counter("stargate_api_writes", kind="PowerLimitSlice", verb=verb))
               for verb in ("apply", "update"))


def test_a_ramp_is_one_write_per_slice_per_piece_and_survives_the_operator(
        api: Api, control_plane: LocalControlPlane, namespace: str, tmp_path: Path, agents: Agents) -> None:
    ns = namespace
    start = (datetime.now(UTC) + timedelta(seconds=40)).replace(microsecond=0)
    end = start + timedelta(seconds=8)  # its rise is written ahead from end - 5 s: after the checks
    descent = start.timestamp() - 12  # where the envelope meets the demand
    api.create_all(ns, _site(start, end))
    first = OperatorProcess(control_plane, tmp_path, "--slice-size", "2").start()
    second: OperatorProcess | None = None
    try:
        wait_for(lambda: agents.enforced() == dict.fromkeys(NODES, FULL), 30, 0.2,
                 "every agent to enforce its full limit")
        # the descent's piece is written a few seconds ahead (sliceramp.LOOKAHEAD_SECONDS): before that
        wait_for(lambda: time.time() > descent - LOOKAHEAD_SECONDS - 2, 60, 0.1, "the descent to come near")
        before = _slice_writes(first)
        revisions = {n: s["spec"]["revision"] for n, s in _slices(api, ns).items()}
        assert len(revisions) == 2 and all("ramp" not in s["spec"] for s in _slices(api, ns).values())

        # The descent: each slice written once, with the whole line, before it starts.
        wait_for(lambda: all("ramp" in s["spec"] for s in _slices(api, ns).values()), 10, 0.05,
                 "the slices to carry the descent")
        assert time.time() < descent
        held = _slices(api, ns)
        for s in held.values():
            ramp = s["spec"]["ramp"]
            assert (parse_epoch(ramp["startAt"]), parse_epoch(ramp["endAt"])) == (descent, start.timestamp())
            assert set(ramp["from"].values()) == {FULL} and set(s["spec"]["limits"].values()) == {TARGET}
        lines = {n: e for s in held.values() for n, e in held_entries(s["spec"]).items()}

        # SIGKILL mid-descent: the agents go on down the line on their own.
        wait_for(lambda: time.time() > descent + 2, 10, 0.05, "the descent to be under way")
        writes_first = _slice_writes(first) - before
        first.kill()
        killed_at = time.time()
        seen: list[tuple[float, dict[str, int]]] = []
        while time.time() < killed_at + 4:
            seen.append(_read(agents))
            time.sleep(0.25)
        # Restarted, still mid-descent: it finds the slices as it would write them.
        second = OperatorProcess(control_plane, tmp_path, "--slice-size", "2").start()
        while time.time() < start.timestamp() + 2:
            seen.append(_read(agents))
            time.sleep(0.25)
        assert _slice_writes(second) == 0, second.log_tail()
        assert {n: (s["metadata"]["generation"], s["spec"]) for n, s in _slices(api, ns).items()} == \
            {n: (s["metadata"]["generation"], s["spec"]) for n, s in held.items()}
        # The agents followed the line: never above it at the instant read, never more than the
        # two seconds of an agent's step and read behind it; and they took steps while no
        # operator ran.
        for t, limits in seen:
            for n, w in limits.items():
                assert lines[n].at(t) <= w <= lines[n].at(t - 2.5), (t, n, w, lines[n].at(t))
        alone = {w for t, limits in seen if killed_at < t < killed_at + 4 for w in limits.values()}
        assert len(alone - {FULL, TARGET}) >= 3, seen
        assert seen[-1][1] == dict.fromkeys(NODES, TARGET), seen[-1]

        # The rise after end: one write per slice again, and nothing more.
        wait_for(lambda: time.time() > end.timestamp() + 13, 40, 0.2, "the rise to end")
        wait_for(lambda: agents.enforced() == dict.fromkeys(NODES, FULL), 10, 0.2,
                 "every agent back at its full limit")
        writes = writes_first + _slice_writes(second)
        assert writes == 2 + 2, (writes_first, second.log_tail())
        after = _slices(api, ns)
        assert {n: s["spec"]["revision"] for n, s in after.items()} == \
            {n: r + 2 for n, r in revisions.items()}
        assert all(parse_epoch(s["spec"]["ramp"]["startAt"]) == end.timestamp() for s in after.values())

        # Protection never waits: rack a's rating lowered, its slice written at once without a ramp.
        api.patch("Rack", ns, "a", {"spec": {"maxPowerWatts": 4_000}})  # 2,000 W a node: 250 W a GPU
        wait_for(lambda: agents.enforced().get("a-1") == 250, 10, 0.1, "rack a's nodes to be lowered")
        assert "ramp" not in _slices(api, ns)[held_slice_of(after, "a-1")]["spec"]
    finally:
        first.kill()
        if second is not None:
            second.stop()


def held_slice_of(slices: dict[str, dict[str, Any]], node_name: str) -> str:
    return next(n for n, s in slices.items() if node_name in s["spec"]["limits"])
