"""The NVML path of the node agent, against the real `pynvml` module with its calls replaced at the
library boundary by a fake device table (so it runs without a GPU). `monkeypatch.setattr` refuses a
name the real module does not have, so every NVML function the agent calls is checked to exist."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from stargate_operator.agent.nvml import NvmlBackend, NvmlUnavailable

GiB = 2**30


@dataclass
class FakeGPU:
    power_mw: int = 650_000
    used: int = 60 * GiB
    total: int = 80 * GiB
    limit_mw: int = 700_000
    min_mw: int = 200_000
    max_mw: int = 700_000
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
            "nvmlDeviceGetPowerManagementDefaultLimit": lambda h: gpu(h).max_mw,
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


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    f = FakeNvml([FakeGPU(power_mw=600_000 + 10_000 * i, used=(40 + i) * GiB) for i in range(8)])
    f.install(monkeypatch)
    return f


def test_reads_every_device(fake: FakeNvml) -> None:
    b = NvmlBackend()
    r = b.read({}, {})
    assert len(r.gpus) == 8
    assert r.healthy_gpus == 8
    assert r.gpu_power_watts == pytest.approx(sum(600 + 10 * i for i in range(8)))
    assert r.hbm_used_bytes == sum((40 + i) * GiB for i in range(8))
    assert r.other_power_watts is None  # NVML sees only the GPUs
    g0 = r.gpus[0]
    assert (g0.uuid, g0.name, g0.limit_watts, g0.limit_range_watts) == (
        "GPU-fake-0", "NVIDIA H100 80GB HBM3", 700.0, (200.0, 700.0))
    b.close()
    assert fake.initialised == 0


def test_applies_limit_in_milliwatts_once(fake: FakeNvml) -> None:
    b = NvmlBackend()
    out = b.apply_power_limit(450)
    assert out.ok and out.changed
    assert all(g.limit_mw == 450_000 for g in fake.gpus)
    assert out.applied == dict.fromkeys(range(8), 450.0)
    # Idempotent: applying the same limit again sets nothing.
    again = b.apply_power_limit(450)
    assert again.ok and not again.changed
    assert all(g.sets == [450_000] for g in fake.gpus)
    # A change behind the agent's back (nvidia-smi -pl) is undone on the next pass.
    fake.gpus[3].limit_mw = 700_000
    fixed = b.apply_power_limit(450)
    assert fixed.changed and fake.gpus[3].limit_mw == 450_000
    assert fake.gpus[0].sets == [450_000]


def test_limit_clamped_to_device_range_and_reported(fake: FakeNvml) -> None:
    fake.gpus[0].min_mw = 300_000  # one device allows less than the others
    b = NvmlBackend()
    low = b.apply_power_limit(250)
    assert fake.gpus[0].limit_mw == 300_000
    assert all(g.limit_mw == 250_000 for g in fake.gpus[1:])
    assert len(low.problems) == 1 and "GPU 0" in low.problems[0] and "clamped to 300 W" in low.problems[0]
    high = b.apply_power_limit(900)
    assert all(g.limit_mw == 700_000 for g in fake.gpus)
    assert len(high.problems) == 8
    assert all("outside the device's range" in p for p in high.problems)


def test_limit_not_permitted_is_reported_not_raised(fake: FakeNvml) -> None:
    fake.gpus[5].set_error = pynvml.NVML_ERROR_NO_PERMISSION
    fake.gpus[6].set_error = pynvml.NVML_ERROR_NOT_SUPPORTED
    b = NvmlBackend()
    out = b.apply_power_limit(500)
    assert not out.ok
    assert [p.split(":")[0] for p in out.problems] == ["GPU 5", "GPU 6"]
    assert "needs root" in out.problems[0]
    assert out.applied[5] == 700.0 and out.applied[0] == 500.0  # what is actually in force


def test_dry_run_sets_nothing(fake: FakeNvml) -> None:
    out = NvmlBackend().apply_power_limit(300, dry_run=True)
    assert out.ok and not out.changed
    assert all(g.sets == [] and g.limit_mw == 700_000 for g in fake.gpus)


def test_health_from_nvml(fake: FakeNvml) -> None:
    fake.gpus[1].lost = True
    fake.gpus[2].retired_pending = pynvml.NVML_FEATURE_ENABLED
    fake.gpus[3].remap_failure = 1
    fake.gpus[4].remap_pending = 1
    fake.gpus[5].remap_supported = False  # older GPUs: not supported is not a fault
    r = NvmlBackend().read({}, {})
    assert r.healthy_gpus == 4
    problems = {g.index: g.problem for g in r.gpus if not g.healthy}
    assert set(problems) == {1, 2, 3, 4}
    assert "GPU is lost" in problems[1]
    assert "retired pages" in problems[2]
    assert "failed" in problems[3] and "pending" in problems[4]
    assert r.gpus[1].power_watts == 0.0 and r.gpus[1].memory_used_bytes == 0


def test_critical_xid_marks_device_unhealthy_until_restart(fake: FakeNvml) -> None:
    b = NvmlBackend()
    fake.events += [(2, 13), (3, 79), (None, 48)]  # app XID ignored; XID 79 on GPU 3; unknown device
    r = b.read({}, {})
    # XID 48 with an unknown device marks all: the agent cannot tell which GPU is hurt.
    assert r.healthy_gpus == 0
    b2 = NvmlBackend()  # a restarted agent (after the node was drained and reset) starts clean
    fake.events += [(6, 31), (6, 94)]
    r2 = b2.read({}, {})
    assert [g.index for g in r2.gpus if not g.healthy] == [6]
    assert r2.gpus[6].problem == "XID 94"
    assert b2.read({}, {}).healthy_gpus == 7  # sticky


def test_no_nvml_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    f = FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    f.install(monkeypatch)
    with pytest.raises(NvmlUnavailable, match="NVML could not start"):
        NvmlBackend()


def test_real_library_without_gpu_raises_nvml_unavailable() -> None:
    """Unpatched: on a machine without the driver, the real pynvml fails and the agent says why."""
    try:
        b = NvmlBackend()
    except NvmlUnavailable as e:
        assert "NVML could not start" in str(e)
    else:  # a machine with a GPU: the real thing works through the same path
        try:
            assert len(b.read({}, {}).gpus) >= 1
        finally:
            b.close()


def test_check_script_reads_through_same_path(fake: FakeNvml, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "hack" / "check-nvml.py"
    spec = importlib.util.spec_from_file_location("check_nvml", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([]) == 0
    out = capsys.readouterr().out
    assert "GPU 7" in out and "GPU-fake-7" in out and "200-700 W" in out
    assert all(g.sets == [] for g in fake.gpus)  # read-only by default
    assert mod.main(["--set-limit", "400"]) == 0
    assert all(g.limit_mw == 400_000 for g in fake.gpus)
    assert mod.main(["--restore-default"]) == 0
    assert all(g.limit_mw == 700_000 for g in fake.gpus)
    fake.gpus[2].set_error = pynvml.NVML_ERROR_NO_PERMISSION
    assert mod.main(["--set-limit", "300"]) == 1
    assert "NOT APPLIED: GPU 2" in capsys.readouterr().out
