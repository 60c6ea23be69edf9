"""A plausible GPU node without GPUs: for the demo, the tests and trying the operator on a laptop.

The model, per node, sized from the GPUNode's spec:
- a workload intensity that wanders (mean-reverting random walk, 0.6 to 1.0: training jobs run their
  GPUs near the cap); in maintenance the node idles;
- each healthy GPU draws `idle + (limit - idle) * intensity` with a little noise, never above the
  power limit in force: the draw follows the applied limit, as power capping does;
- the rest of the node draws its `basePowerWatts` scaled a little by the load;
- each healthy GPU has 50 to 95 % of its HBM in use, wandering too;
- failed GPUs (`--fail-gpus N`, or the annotation `stargate.dev/simulate-failed-gpus: "N"` on the
  GPUNode at runtime, which wins) are the highest-numbered ones; they count as unhealthy, idle and
  hold no memory.
The device's settable range is the spec's `minPowerWatts..maxPowerWatts` (reported with the telemetry,
as the NVML agent reports the hardware's, its default limit being `maxPowerWatts`: GPUs boot at their
TDP); a limit outside it is clamped and reported, as with NVML, and the enforced limit it reports
(`telemetry.enforcedLimitWatts`) is the one it applied. With a seed the numbers are
reproducible (one stream per node name).
"""

from __future__ import annotations

import logging
import random
from typing import Any

from stargate_operator.agent.backend import GPUReading, LimitOutcome, NodeReading
from stargate_operator.kinds import FAILED_GPUS_ANNOTATION

log = logging.getLogger(__name__)

IDLE_FRACTION = 0.1  # an idle datacentre GPU draws about a tenth of its maximum


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


class SimulatedBackend:
    blocking = False

    def __init__(self, name: str, spec: dict[str, Any], *, seed: int | None = None, failed_gpus: int = 0,
                 uuid_prefix: str = "GPU-sim") -> None:
        self.name = name
        self.rng = random.Random(f"{seed}:{name}") if seed is not None else random.Random()
        self.default_failed = max(0, failed_gpus)
        self.uuid_prefix = uuid_prefix
        self.spec: dict[str, Any] = {}
        self.limit_watts: float = 0.0
        self.intensity = 0.85 + 0.1 * self.rng.random()
        self.hbm_fraction: list[float] = []
        self.failed = 0
        self._configure(spec)
        self.limit_watts = float(self.gpu.get("requestedPowerWatts") or self.max_w)  # the device default

    # -- sizing from the spec ------------------------------------------------------------------------

    @property
    def gpu(self) -> dict[str, Any]:
        g: dict[str, Any] = self.spec.get("gpu") or {}
        return g

    @property
    def count(self) -> int:
        return int(self.gpu.get("count") or 1)

    @property
    def min_w(self) -> float:
        return float(self.gpu.get("minPowerWatts") or 100)

    @property
    def max_w(self) -> float:
        return float(self.gpu.get("maxPowerWatts") or 700)

    def _configure(self, spec: dict[str, Any]) -> None:
        self.spec = spec or {}
        while len(self.hbm_fraction) < self.count:
            self.hbm_fraction.append(0.5 + 0.45 * self.rng.random())
        del self.hbm_fraction[self.count:]
        if self.limit_watts:
            self.limit_watts = _clamp(self.limit_watts, self.min_w, self.max_w)

    def failed_gpus(self, annotations: dict[str, str]) -> int:
        raw = annotations.get(FAILED_GPUS_ANNOTATION)
        n = self.default_failed
        if raw is not None:
            try:
                n = int(raw)
            except ValueError:
                log.warning("%s: annotation %s=%r is not a number, ignored",
                            self.name, FAILED_GPUS_ANNOTATION, raw)
        return int(_clamp(n, 0, self.count))

    # -- GPUBackend ------------------------------------------------------------------------------

    def read(self, spec: dict[str, Any], annotations: dict[str, str]) -> NodeReading:
        self._configure(spec)
        failed = self.failed_gpus(annotations)
        if failed != self.failed:
            log.info("%s: %d simulated GPU fault(s)", self.name, failed)
            self.failed = failed
        rng = self.rng
        maintenance = bool(self.spec.get("maintenance"))
        if maintenance:
            self.intensity = 0.02
        else:
            self.intensity = _clamp(self.intensity + 0.2 * (0.9 - self.intensity) + rng.gauss(0, 0.03),
                                    0.6, 1.0)
        idle = min(IDLE_FRACTION * self.max_w, self.limit_watts)
        mem = int(self.gpu.get("memoryBytes") or 0)
        gpus = []
        for i in range(self.count):
            healthy = i < self.count - failed
            if healthy:
                level = _clamp(self.intensity + rng.gauss(0, 0.02), 0.0, 1.0)
                power = min(self.limit_watts, idle + (self.limit_watts - idle) * level)
                f = self.hbm_fraction[i] = _clamp(self.hbm_fraction[i] + rng.gauss(0, 0.01), 0.5, 0.95)
                used = int(mem * (0.02 if maintenance else f))
            else:
                power, used = idle, 0
            gpus.append(GPUReading(
                index=i, uuid=f"{self.uuid_prefix}-{self.name}-{i}", name=str(self.gpu.get("model", "")),
                power_watts=round(power, 1), memory_used_bytes=used, memory_total_bytes=mem, healthy=healthy,
                problem="" if healthy else "simulated fault", limit_watts=self.limit_watts,
                limit_range_watts=(self.min_w, self.max_w), default_limit_watts=self.max_w,
                enforced_limit_watts=self.limit_watts,  # what it applied
            ))
        base = float(self.spec.get("basePowerWatts") or 0)
        other = base * (0.85 + 0.15 * self.intensity) if not maintenance else base * 0.8
        return NodeReading(tuple(gpus), other_power_watts=round(other, 1))

    def apply_power_limit(self, watts: int) -> LimitOutcome:
        target = _clamp(float(watts), self.min_w, self.max_w)
        problems: tuple[str, ...] = ()
        if target != watts:
            problems = tuple(
                f"GPU {i}: {watts} W is outside the device's range {self.min_w:.0f}-{self.max_w:.0f} W,"
                f" clamped to {target:.0f} W" for i in range(self.count)
            )
        changed = target != self.limit_watts
        if changed:
            log.debug("%s: power limit %.0f W -> %.0f W", self.name, self.limit_watts, target)
        self.limit_watts = target
        return LimitOutcome(requested_watts=int(watts), applied=dict.fromkeys(range(self.count), target),
                            problems=problems, changed=changed)

    def close(self) -> None:
        pass
