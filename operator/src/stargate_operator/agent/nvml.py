"""The real GPU source: NVML through nvidia-ml-py (`import pynvml`).

Every NVML call goes through the `pynvml` module's functions, looked up at call time, so the tests can
replace them at the library boundary (a fake device table) and run without a GPU; `hack/check-nvml.py`
runs this same code against the real library on a machine that has GPUs.

What is read, per device: power draw (`nvmlDeviceGetPowerUsage`, mW), HBM in use
(`nvmlDeviceGetMemoryInfo`), the power limit in force and the range the device allows
(`nvmlDeviceGetPowerManagementLimit`, `...LimitConstraints`: min and max in mW), and the limit it
boots with (`nvmlDeviceGetPowerManagementDefaultLimit`), and the limit it enforces
(`nvmlDeviceGetEnforcedPowerLimit`: the lowest of every limiter, ours included, reported as
`telemetry.enforcedLimitWatts`, the highest of the node's GPUs: the operator's proof that the limit
it assigned is in force, condition PowerLimitApplied). The range and the default are reported with
the telemetry (`minPowerWatts`, `maxPowerWatts`, `defaultPowerWatts`: what every GPU of the node
accepts), and node discovery takes them over the product table. A device counts as unhealthy when
- reading it fails (other than "not supported"), e.g. `GPU is lost` (fallen off the bus);
- it has retired pages pending (`nvmlDeviceGetRetiredPagesPendingStatus`: needs a reset);
- row remapping failed or is pending (`nvmlDeviceGetRemappedRows`: A100 and later);
- a critical XID was reported since the agent started (`nvmlEventTypeXidCriticalError` events),
  other than the XIDs an application causes (13, 31, 43, 45, 68, 109), the same list NVIDIA's
  Kubernetes device plugin ignores. Like the device plugin, an XID marks the device unhealthy until
  the agent restarts (after the node was drained and the GPU reset).

Power limits are set with `nvmlDeviceSetPowerManagementLimit` (mW), clamped to the device's
constraints. Setting needs CAP_SYS_ADMIN, not just uid 0: the driver's administrator test is
`NV_IS_SUSER()`, `capable(CAP_SYS_ADMIN)` (NVIDIA/open-gpu-kernel-modules,
kernel-open/common/inc/nv-linux.h); reading needs only the device nodes. A limit is set only where
the one in force differs, so applying every interval is cheap and undoes changes made behind the
agent's back (`nvidia-smi -pl`).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from stargate_operator.agent.backend import GPUReading, LimitOutcome, NodeReading

log = logging.getLogger(__name__)

# XIDs caused by applications rather than the hardware (NVIDIA k8s-device-plugin's default list).
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
# A limit within this many milliwatts of the target counts as the target (NVML may round).
LIMIT_TOLERANCE_MW = 1000


class NvmlUnavailable(RuntimeError):
    """nvidia-ml-py is not installed or NVML cannot start (no driver, no GPU)."""


def load_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        raise NvmlUnavailable(
            "nvidia-ml-py is not installed: pip install 'stargate-operator[nvml]' (or use --simulate)"
        ) from e


@dataclass
class _Device:
    index: int
    handle: Any
    uuid: str
    name: str


class NvmlBackend:
    """All GPUs NVML sees on this machine. Blocking calls: the runner uses a worker thread."""

    blocking = True

    def __init__(self, nv: ModuleType | None = None, *, watch_xids: bool = True) -> None:
        self.nv = nv or load_pynvml()
        try:
            self.nv.nvmlInit()
        except self.nv.NVMLError as e:
            raise NvmlUnavailable(f"NVML could not start: {e}") from e
        self.devices: list[_Device] = []
        for i in range(int(self.nv.nvmlDeviceGetCount())):
            h = self.nv.nvmlDeviceGetHandleByIndex(i)
            self.devices.append(_Device(i, h, self._str(self.nv.nvmlDeviceGetUUID, h),
                                        self._str(self.nv.nvmlDeviceGetName, h)))
        # GPU index -> the XID that made it unhealthy (sticky until restart).
        self.xid_failed: dict[int, int] = {}
        self._events: Any = None
        if watch_xids and self.devices:
            self._register_xid_events()

    # -- helpers -------------------------------------------------------------------------------

    def _str(self, fn: Any, handle: Any) -> str:
        try:
            v = fn(handle)
        except self.nv.NVMLError:
            return ""
        return v.decode() if isinstance(v, bytes) else str(v)

    def _is(self, err: BaseException, code_name: str) -> bool:
        return getattr(err, "value", None) == getattr(self.nv, code_name, object())

    def _register_xid_events(self) -> None:
        nv = self.nv
        try:
            self._events = nv.nvmlEventSetCreate()
        except nv.NVMLError as e:
            log.warning("NVML events unavailable, XIDs will not be watched: %s", e)
            return
        for d in self.devices:
            try:
                supported = int(nv.nvmlDeviceGetSupportedEventTypes(d.handle))
                if supported & nv.nvmlEventTypeXidCriticalError:
                    nv.nvmlDeviceRegisterEvents(d.handle, nv.nvmlEventTypeXidCriticalError, self._events)
            except nv.NVMLError as e:
                log.warning("GPU %d: cannot watch XID events: %s", d.index, e)

    def _drain_xid_events(self) -> None:
        """Take every pending XID event without waiting (timeout 0)."""
        nv = self.nv
        if self._events is None:
            return
        for _ in range(1000):  # bounded: a storm of events must not stall a reading
            try:
                data = nv.nvmlEventSetWait(self._events, 0)
            except nv.NVMLError as e:
                if not self._is(e, "NVML_ERROR_TIMEOUT"):
                    log.warning("NVML event wait failed: %s", e)
                return
            if not int(data.eventType) & nv.nvmlEventTypeXidCriticalError:
                continue
            xid = int(data.eventData)
            if xid in APPLICATION_XIDS:
                log.info("XID %d (caused by an application) ignored", xid)
                continue
            try:
                indexes = [int(nv.nvmlDeviceGetIndex(data.device))]
            except (nv.NVMLError, TypeError, ValueError):
                indexes = [d.index for d in self.devices]  # unknown device: all of them are suspect
            for i in indexes:
                if i not in self.xid_failed:
                    log.error("GPU %d: critical XID %d, counted unhealthy until the agent restarts", i, xid)
                self.xid_failed.setdefault(i, xid)

    def _health_problem(self, d: _Device) -> str:
        nv = self.nv
        if d.index in self.xid_failed:
            return f"XID {self.xid_failed[d.index]}"
        try:
            if int(nv.nvmlDeviceGetRetiredPagesPendingStatus(d.handle)) == nv.NVML_FEATURE_ENABLED:
                return "retired pages pending (reset required)"
        except nv.NVMLError as e:
            if not self._is(e, "NVML_ERROR_NOT_SUPPORTED"):
                return f"retired pages unreadable: {e}"
        try:
            _corr, _unc, pending, failure = nv.nvmlDeviceGetRemappedRows(d.handle)
            if failure:
                return "row remapping failed"
            if pending:
                return "row remapping pending (reset required)"
        except nv.NVMLError as e:
            if not self._is(e, "NVML_ERROR_NOT_SUPPORTED"):
                return f"remapped rows unreadable: {e}"
        return ""

    # -- GPUBackend ------------------------------------------------------------------------------

    def read(self, spec: dict[str, Any] | None = None,
             annotations: dict[str, str] | None = None) -> NodeReading:
        del spec, annotations  # the hardware is what it is
        nv = self.nv
        self._drain_xid_events()
        gpus: list[GPUReading] = []
        for d in self.devices:
            problem = ""
            power_w = 0.0
            used = total = 0
            limit: float | None = None
            rng: tuple[float, float] | None = None
            try:
                power_w = int(nv.nvmlDeviceGetPowerUsage(d.handle)) / 1000.0
            except nv.NVMLError as e:
                if not self._is(e, "NVML_ERROR_NOT_SUPPORTED"):
                    problem = f"power unreadable: {e}"
            try:
                mem = nv.nvmlDeviceGetMemoryInfo(d.handle)
                used, total = int(mem.used), int(mem.total)
            except nv.NVMLError as e:
                problem = problem or f"memory unreadable: {e}"
            try:
                limit = int(nv.nvmlDeviceGetPowerManagementLimit(d.handle)) / 1000.0
                lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(d.handle)
                rng = (int(lo) / 1000.0, int(hi) / 1000.0)
            except nv.NVMLError as e:
                if not self._is(e, "NVML_ERROR_NOT_SUPPORTED"):
                    problem = problem or f"power limit unreadable: {e}"
            default: float | None = None
            try:
                default = int(nv.nvmlDeviceGetPowerManagementDefaultLimit(d.handle)) / 1000.0
            except nv.NVMLError as e:
                # Informative only (the range is what limits are clamped to): never a health problem.
                if not self._is(e, "NVML_ERROR_NOT_SUPPORTED"):
                    log.debug("GPU %d: default power limit unreadable: %s", d.index, e)
            enforced: float | None = None
            try:
                enforced = int(nv.nvmlDeviceGetEnforcedPowerLimit(d.handle)) / 1000.0
            except nv.NVMLError as e:
                # No proof then (PowerLimitApplied stays Unknown), but not a health problem either.
                if not self._is(e, "NVML_ERROR_NOT_SUPPORTED"):
                    log.debug("GPU %d: enforced power limit unreadable: %s", d.index, e)
            problem = problem or self._health_problem(d)
            gpus.append(GPUReading(
                index=d.index, uuid=d.uuid, name=d.name, power_watts=power_w,
                memory_used_bytes=used, memory_total_bytes=total, healthy=not problem, problem=problem,
                limit_watts=limit, limit_range_watts=rng, default_limit_watts=default,
                enforced_limit_watts=enforced,
            ))
        return NodeReading(tuple(gpus))

    def apply_power_limit(self, watts: int, *, dry_run: bool = False) -> LimitOutcome:
        """Set every GPU's limit to `watts` (clamped to the device's range). `dry_run` reports what
        would be set without setting anything (hack/check-nvml.py's default)."""
        nv = self.nv
        applied: dict[int, float] = {}
        problems: list[str] = []
        changed = False
        want_mw = int(watts) * 1000
        for d in self.devices:
            try:
                lo, hi = (int(x) for x in nv.nvmlDeviceGetPowerManagementLimitConstraints(d.handle))
                current = int(nv.nvmlDeviceGetPowerManagementLimit(d.handle))
            except nv.NVMLError as e:
                problems.append(f"GPU {d.index}: power limit unreadable ({e})")
                continue
            target = min(max(want_mw, lo), hi)
            if target != want_mw:
                problems.append(
                    f"GPU {d.index}: {watts} W is outside the device's range {lo // 1000}-{hi // 1000} W,"
                    f" clamped to {target // 1000} W"
                )
            if abs(current - target) <= LIMIT_TOLERANCE_MW:
                applied[d.index] = current / 1000.0
                continue
            if dry_run:
                applied[d.index] = current / 1000.0
                continue
            try:
                nv.nvmlDeviceSetPowerManagementLimit(d.handle, target)
            except nv.NVMLError as e:
                why = str(e)
                if self._is(e, "NVML_ERROR_NO_PERMISSION"):
                    why += " (setting power limits needs root with CAP_SYS_ADMIN)"
                problems.append(f"GPU {d.index}: cannot set {target // 1000} W: {why}")
                applied[d.index] = current / 1000.0
                continue
            changed = True
            applied[d.index] = target / 1000.0
            log.info("GPU %d: power limit %.0f W -> %.0f W", d.index, current / 1000.0, target / 1000.0)
        return LimitOutcome(requested_watts=int(watts), applied=applied, problems=tuple(problems),
                            changed=changed)

    def close(self) -> None:
        nv = self.nv
        try:
            if self._events is not None:
                nv.nvmlEventSetFree(self._events)
                self._events = None
            nv.nvmlShutdown()
        except nv.NVMLError as e:  # pragma: no cover - nothing to do about it on the way out
            log.debug("NVML shutdown: %s", e)
