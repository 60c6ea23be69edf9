"""Lower before raise under faults, on the real API server: budget moves between two racks beneath one
power domain (their priorities swapped, so every node of one rack is lowered and every node of the
other raised by as much), and in the middle of the change, while the raises wait for a lowered node
whose GPUs have not followed yet, the operator is SIGKILLed and started again, or the API server is
killed and started again.

The invariant checked: at every sampled instant, for every constraint (the site, the power domain,
each rack), the sum of the limits its nodes' GPUs enforce is at most the larger of its old and its
new allowance (the sums of the limits assigned beneath it before and after the change). The GPUs are
simulated in this process, behind the real agents' `Fleet`, and a thread reads what every one of
them enforces every few milliseconds throughout. Afterwards every node converges to its new limit.

Figures: helpers/site.py's default node (4 GPUs of 100..500 W on a 1000 W base: floor 1400 W,
demand 3000 W). The domain `rpp` is rated 17,600 W = 8 floors + 4 rooms of 1600 W: the rack first
in priority gets its demand (500 W a GPU), the other its floors (100 W a GPU); a third rack beneath
the site only keeps 500 W a GPU throughout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from helpers.api import Api, condition, obj
from helpers.fleet import FleetThread
from helpers.operator_process import OperatorProcess, wait_for
from helpers.site import cluster, node, rack
from stargate_operator.agent.backend import LimitOutcome
from stargate_operator.agent.simulate import SimulatedBackend
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

GPUS = 4
HIGH, LOW = 500, 100  # per GPU: a rack's demand, its floors
PER_RACK = 4
RAISE_AFTER = 300  # seconds: far beyond the test, so that only a confirmation lets raises go
FAULT_HOLD = 5.0  # seconds the lowered node still enforces its old limit after the fault
SAMPLE_EVERY = 0.005
WAIT = 60.0
OPERATOR_ARGS = ("--slice-size", str(PER_RACK), "--raise-after", str(RAISE_AFTER))

# Each constraint and the racks beneath it.
CONSTRAINTS = {"StargateCluster/site": ("a", "b", "free"), "PowerDomain/rpp": ("a", "b"),
               "Rack/a": ("a",), "Rack/b": ("b",), "Rack/free": ("free",)}


def nodes_of(rack_name: str) -> list[str]:
    return [f"{rack_name}-{i}" for i in range(PER_RACK)]


def site(first: str) -> list[dict[str, Any]]:
    """Racks a and b beneath rpp, `first` of them first in priority; rack free beneath the site."""
    out = [cluster(), obj("PowerDomain", "rpp", {"clusterRef": "site", "type": "Electrical", "role": "RPP",
                                                 "ratingWatts": 17_600, "deratePercent": 100})]
    for name in ("a", "b"):
        r = rack(name, priority=900 if name == first else 100)
        r["spec"]["powerDomainRef"] = "rpp"
        out.append(r)
    out.append(rack("free"))
    for name in ("a", "b", "free"):
        out.extend(node(n, name) for n in nodes_of(name))
    return out


def limits(first: str) -> dict[str, int]:
    """Each node's per-GPU limit with rack `first` first in priority."""
    return {n: (HIGH if r in (first, "free") else LOW) for r in ("a", "b", "free") for n in nodes_of(r)}


BEFORE, AFTER = limits("a"), limits("b")


def allowance(limits_: dict[str, int], racks: tuple[str, ...]) -> int:
    return sum(GPUS * limits_[n] for r in racks for n in nodes_of(r))


ALLOWANCES = {c: max(allowance(BEFORE, racks), allowance(AFTER, racks)) for c, racks in CONSTRAINTS.items()}


class HeldGPUs(SimulatedBackend):
    """A simulated node whose GPUs can be made to keep their limit when asked to lower it (as NVML
    refusing, or a node slow to act), until released."""

    def __init__(self, name: str, gpunode: dict[str, Any]) -> None:  # a Fleet's BackendFactory
        super().__init__(name, gpunode.get("spec") or {}, seed=1)
        self.hold = False

    def apply_power_limit(self, watts: int) -> LimitOutcome:
        if self.hold and watts < self.limit_watts:
            return LimitOutcome(requested_watts=watts,
                                applied=dict.fromkeys(range(self.count), self.limit_watts),
                                problems=(f"held at {self.limit_watts:.0f} W by the test",))
        return super().apply_power_limit(watts)


def at_the_gpus(fleet: FleetThread) -> dict[str, float]:
    """Node -> the per-GPU limit its (simulated) GPUs enforce now."""
    return {n: cast(HeldGPUs, b).limit_watts for n, b in fleet.backends().items()}


@dataclass
class Sampler:
    """Reads every GPU's enforced limit every SAMPLE_EVERY seconds, in a thread, and checks the
    invariant for every constraint at each sample."""

    fleet: FleetThread
    samples: int = 0
    worst: dict[str, int] = field(default_factory=lambda: dict(ALLOWANCES))  # constraint -> least margin
    # (what happened last (a mark), constraint) -> the least margin seen after it
    worst_after: dict[tuple[str, str], int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self.mark("sampling")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def mark(self, what: str) -> None:
        self.marks.append((time.monotonic(), what))

    def _run(self) -> None:
        while not self._stop.is_set():
            enforced = at_the_gpus(self.fleet)
            after = self.marks[-1][1]
            for c, racks in CONSTRAINTS.items():
                total = sum(GPUS * enforced[n] for r in racks for n in nodes_of(r))
                margin = ALLOWANCES[c] - round(total)
                if margin < self.worst[c]:
                    self.worst[c] = margin
                if margin < self.worst_after.get((after, c), margin + 1):
                    self.worst_after[after, c] = margin
                if margin < 0 and len(self.violations) < 20:
                    self.violations.append(
                        f"{c}: GPUs enforce {total:.0f} W > allowance {ALLOWANCES[c]} W after "
                        f"'{after}' ({enforced})")
            self.samples += 1
            self._stop.wait(SAMPLE_EVERY)

    def check(self) -> None:
        assert not self.violations, "the invariant broke:\n" + "\n".join(self.violations)

    def until(self, predicate: Any, timeout: float, what: str) -> None:
        """wait_for, failing at once when the invariant breaks meanwhile."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            self.check()
            try:
                if predicate():
                    return
            except Exception as e:  # the API server restarting...
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
            time.sleep(0.02)


def slice_limits(api: Api, ns: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in api.list("PowerLimitSlice", ns):
        out.update((s.get("spec") or {}).get("limits") or {})
    return out


def converged(api: Api, ns: str, fleet: FleetThread, want: dict[str, int]) -> bool:
    """Every GPU at its limit, every slice and GPUNode saying so, the site counting every node
    confirmed."""
    enforced = {n: round(w) for n, w in at_the_gpus(fleet).items()}
    if enforced != want or slice_limits(api, ns) != want:
        return False
    for n in api.list("GPUNode", ns):
        st = n.get("status") or {}
        if st.get("powerLimitWatts") != want[n["metadata"]["name"]]:
            return False
        if (st.get("telemetry") or {}).get("enforcedLimitWatts") != want[n["metadata"]["name"]]:
            return False
    power = api.status("StargateCluster", ns, "site").get("power") or {}
    return bool(power.get("limitsConfirmed") == len(want))


@pytest.fixture
def operators(control_plane: LocalControlPlane) -> Iterator[list[OperatorProcess]]:
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        if op.alive:
            op.kill()


@pytest.mark.parametrize("fault", ["operator-sigkill", "apiserver-restart"])
def test_a_fault_between_lowering_and_raising_never_overdraws_a_constraint(
        api: Api, control_plane: LocalControlPlane, namespace: str, operators: list[OperatorProcess],
        tmp_path: Path, fault: str) -> None:
    ns = namespace
    api.create_all(ns, site(first="a"))
    fleet = FleetThread(control_plane, ns, HeldGPUs, interval=2.0).start()
    sampler: Sampler | None = None
    try:
        op = OperatorProcess(control_plane, tmp_path, "-n", ns, *OPERATOR_ARGS)
        operators.append(op)
        op.start()
        wait_for(lambda: converged(api, ns, fleet, BEFORE), WAIT, 0.2,
                 "every node at its limit before the move")

        sampler = Sampler(fleet).start()
        stuck = "a-0"
        held = cast(HeldGPUs, fleet.backends()[stuck])
        held.hold = True
        # The move: b first in priority. a's nodes go down to 100 W a GPU, b's up to 500.
        api.patch("Rack", ns, "a", {"spec": {"priority": 100}})
        api.patch("Rack", ns, "b", {"spec": {"priority": 900}})
        sampler.mark("priorities swapped")

        def lowered_not_raised() -> bool:
            written = slice_limits(api, ns)
            enforced = {n: round(w) for n, w in at_the_gpus(fleet).items()}
            return (all(written.get(n) == LOW for n in nodes_of("a") + nodes_of("b"))
                    and all(enforced[n] == LOW for n in nodes_of("a")[1:]) and enforced[stuck] == HIGH)

        sampler.until(lowered_not_raised, WAIT, "the lowering written and followed, the raises waiting")
        time.sleep(1.0)
        assert lowered_not_raised(), "the raises went before the lowered node confirmed"
        sampler.mark("lowered, raises waiting")

        if fault == "operator-sigkill":
            op.kill()
            sampler.mark("operator killed")
            op = OperatorProcess(control_plane, tmp_path, "-n", ns, *OPERATOR_ARGS)
            operators.append(op)
            op.start()
            sampler.mark("operator restarted")
        else:
            control_plane.stop_apiserver(kill=True)
            sampler.mark("API server killed")
            time.sleep(2.0)
            control_plane.start_apiserver()
            sampler.mark("API server back")
        # The restarted operator (or the one that lost its API server) has recomputed meanwhile; the
        # lowered node still enforces its old limit, so the raises still wait.
        until = time.monotonic() + FAULT_HOLD
        while time.monotonic() < until:
            sampler.check()
            time.sleep(0.05)
        assert lowered_not_raised(), "the raises went before the lowered node confirmed"

        held.hold = False
        sampler.mark("lowered node released")
        sampler.until(lambda: converged(api, ns, fleet, AFTER), WAIT, "every node at its new limit")
        time.sleep(1.0)
        sampler.stop()
        sampler.check()
        assert op.alive, op.log_tail()
        # The raises went on the confirmation, not on --raise-after's override.
        assert not [e for e in api.events(ns) if e.get("reason") == "RaisedUnconfirmed"]
        gpunodes = {n["metadata"]["name"]: n["status"] for n in api.list("GPUNode", ns)}
        assert all(condition(st, "PowerLimitApplied")["status"] == "True" for st in gpunodes.values())
        least = min(sampler.worst.values())
        print(f"\n{fault}: {sampler.samples} samples, least margin {least} W "
              f"({', '.join(f'{c} {m} W' for c, m in sampler.worst.items())}); least margin of rpp after "
              + ", ".join(f"'{m}': {w} W" for (m, c), w in sampler.worst_after.items()
                          if c == "PowerDomain/rpp"))
        assert sampler.samples >= 1000
        # The change did end at the allowance of rpp and its site (the move is complete).
        assert sampler.worst["PowerDomain/rpp"] == 0
    finally:
        if sampler is not None:
            sampler.stop()
        fleet.stop()
