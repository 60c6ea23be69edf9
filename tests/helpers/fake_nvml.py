"""A fake NVML device table installed at the `pynvml` boundary: the real module's functions are
replaced (monkeypatch, which refuses names the real module lacks), so the agent's NVML code runs
unchanged without a GPU. Used by tests/unit/test_agent_nvml.py and tests/integration/test_agent.py.

    fake = FakeNvml([FakeGPU() for _ in range(8)])
    fake.install(monkeypatch)
    backend = NvmlBackend()   # sees eight H100s
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

GiB = 2**30


@dataclass
class FakeGPU:
    power_mw: int = 650_000
    used: int = 60 * GiB
    total: int = 80 * GiB
    limit_mw: int = 700_000
    min_mw: int = 200_000
    max_mw: int = 700_000
    default_mw: int | None = None  # nvmlDeviceGetPowerManagementDefaultLimit; None: max_mw
    default_supported: bool = True
    enforced_mw: int | None = None  # nvmlDeviceGetEnforcedPowerLimit; None: limit_mw (no other limiter)
    enforced_supported: bool = True
    retired_pending: int = 0
    remap_pending: int = 0
    remap_failure: int = 0
    lost: bool = False
    set_error: int | None = None  # an NVML error code nvmlDeviceSetPowerManagementLimit raises
    remap_supported: bool = True
    sets: list[int] = field(default_factory=list)


@dataclass
class FakeNvml:
    gpus: list[FakeGPU]
    events: list[tuple[int | None, int]] = field(default_factory=list)  # (device index, xid)
    init_error: int | None = None
    calls: list[str] = field(default_factory=list)
    initialised: int = 0

    def install(self, mp: pytest.MonkeyPatch) -> None:
        def err(code: int) -> pynvml.NVMLError:
            return pynvml.NVMLError(code)

        def gpu(h: Any) -> FakeGPU:
            g = self.gpus[h.index]
            if g.lost:
                raise err(pynvml.NVML_ERROR_GPU_IS_LOST)
            return g

        def init() -> None:
            if self.init_error is not None:
                raise err(self.init_error)
            self.initialised += 1

        def shutdown() -> None:
            self.initialised -= 1

        def set_limit(h: Any, mw: int) -> None:
            g = gpu(h)
            if g.set_error is not None:
                raise err(g.set_error)
            if not g.min_mw <= mw <= g.max_mw:
                raise err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            g.sets.append(mw)
            g.limit_mw = mw

        def default_limit(h: Any) -> int:
            g = gpu(h)
            if not g.default_supported:
                raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return g.max_mw if g.default_mw is None else g.default_mw

        def enforced_limit(h: Any) -> int:
            g = gpu(h)
            if not g.enforced_supported:
                raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return g.limit_mw if g.enforced_mw is None else g.enforced_mw

        def remapped(h: Any) -> tuple[int, int, int, int]:
            g = gpu(h)
            if not g.remap_supported:
                raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return (0, 0, g.remap_pending, g.remap_failure)

        def wait(es: Any, timeout_ms: int) -> Any:
            assert timeout_ms == 0, "the agent must never block on NVML events"
            if not self.events:
                raise err(pynvml.NVML_ERROR_TIMEOUT)
            idx, xid = self.events.pop(0)
            return SimpleNamespace(device=SimpleNamespace(index=idx),
                                   eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=xid)

        def get_index(h: Any) -> int:
            if h.index is None:
                raise err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            return int(h.index)

        fns: dict[str, Any] = {
            "nvmlInit": init,
            "nvmlShutdown": shutdown,
            "nvmlDeviceGetCount": lambda: len(self.gpus),
            "nvmlDeviceGetHandleByIndex": lambda i: SimpleNamespace(index=i),
            "nvmlDeviceGetUUID": lambda h: f"GPU-fake-{h.index}",
            "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",
            "nvmlDeviceGetIndex": get_index,
            "nvmlDeviceGetPowerUsage": lambda h: gpu(h).power_mw,
            "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(used=gpu(h).used, total=gpu(h).total,
                                                                 free=gpu(h).total - gpu(h).used),
            "nvmlDeviceGetPowerManagementLimit": lambda h: gpu(h).limit_mw,
            "nvmlDeviceGetPowerManagementLimitConstraints": lambda h: [gpu(h).min_mw, gpu(h).max_mw],
            "nvmlDeviceSetPowerManagementLimit": set_limit,
            "nvmlDeviceGetPowerManagementDefaultLimit": default_limit,
            "nvmlDeviceGetEnforcedPowerLimit": enforced_limit,
            "nvmlDeviceGetRetiredPagesPendingStatus": lambda h: gpu(h).retired_pending,
            "nvmlDeviceGetRemappedRows": remapped,
            "nvmlEventSetCreate": lambda: object(),
            "nvmlEventSetFree": lambda es: None,
            "nvmlDeviceGetSupportedEventTypes": lambda h: pynvml.nvmlEventTypeXidCriticalError,
            "nvmlDeviceRegisterEvents": lambda h, types, es: None,
            "nvmlEventSetWait": wait,
        }
        for name, fn in fns.items():
            def recorded(*a: Any, _fn: Any = fn, _name: str = name) -> Any:
                self.calls.append(_name)
                return _fn(*a)
            mp.setattr(pynvml, name, recorded)  # raising=True: the real module must have it
