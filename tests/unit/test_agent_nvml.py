"""The NVML path of the node agent, against the real `pynvml` module with its calls replaced at the
library boundary by a fake device table (so it runs without a GPU). `monkeypatch.setattr` refuses a
name the real module does not have, so every NVML function the agent calls is checked to exist."""

from __future__ import annotations

import pynvml
import pytest

from helpers.fake_nvml import FakeGPU, FakeNvml
from stargate_operator.agent.nvml import NvmlBackend, NvmlUnavailable

GiB = 2**30


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


def test_power_range_every_gpu_accepts(fake: FakeNvml) -> None:
    """The range reported with the telemetry is one every GPU of the node accepts: the highest of
    the minimums, the lowest of the maximums, the lowest default; whole watts, inside the range."""
    fake.gpus[0].min_mw = 250_400  # rounded up: 250 W would be refused by this GPU
    fake.gpus[3].max_mw = 650_600  # rounded down
    fake.gpus[5].default_mw = 600_000
    r = NvmlBackend().read({}, {})
    assert r.gpus[0].limit_range_watts == (250.4, 700.0)
    assert r.gpus[5].default_limit_watts == 600.0 and r.gpus[4].default_limit_watts == 700.0
    assert r.power_range_watts == (251, 650)
    assert r.default_power_watts == 600
    assert r.power_range_telemetry() == {"minPowerWatts": 251, "maxPowerWatts": 650, "defaultPowerWatts": 600}
    assert "nvmlDeviceGetPowerManagementDefaultLimit" in fake.calls


def test_power_range_without_answers(fake: FakeNvml) -> None:
    """A GPU that is lost, or does not support the default limit, still leaves the others' range;
    an unsupported default is no health problem."""
    fake.gpus[1].lost = True
    fake.gpus[2].default_supported = False
    r = NvmlBackend().read({}, {})
    assert r.gpus[1].limit_range_watts is None and r.gpus[2].default_limit_watts is None
    assert r.gpus[2].healthy and r.healthy_gpus == 7
    assert r.power_range_telemetry() == {"minPowerWatts": 200, "maxPowerWatts": 700, "defaultPowerWatts": 700}


def test_no_power_range_when_the_gpus_disagree_or_say_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    apart = FakeNvml([FakeGPU(min_mw=500_000, max_mw=700_000), FakeGPU(min_mw=100_000, max_mw=400_000)])
    apart.install(monkeypatch)
    r = NvmlBackend().read({}, {})
    assert r.power_range_watts is None  # no single limit suits both
    assert set(r.power_range_telemetry()) == {"defaultPowerWatts"}
    silent = FakeNvml([FakeGPU(default_supported=False)])
    silent.install(monkeypatch)
    silent.gpus[0].lost = True
    assert NvmlBackend().read({}, {}).power_range_telemetry() == {}


def test_enforced_limit_is_the_highest_of_the_gpus_in_whole_watts(fake: FakeNvml) -> None:
    """telemetry.enforcedLimitWatts: nvmlDeviceGetEnforcedPowerLimit, which counts every limiter
    (another one, a BMC's, may hold a GPU lower than the agent's limit); the node's is its highest
    GPU's, since the limit holds on the node only where it holds on every GPU."""
    b = NvmlBackend()
    b.apply_power_limit(450)
    r = b.read({}, {})
    assert "nvmlDeviceGetEnforcedPowerLimit" in fake.calls
    assert all(g.enforced_limit_watts == 450.0 for g in r.gpus)
    assert r.enforced_limit_watts == 450
    fake.gpus[6].enforced_mw = 399_600  # held lower by another limiter: the limit still holds
    assert b.read({}, {}).enforced_limit_watts == 450
    fake.gpus[6].enforced_mw = 500_400  # one GPU above it (refused, clamped): rounded to the watt
    assert b.read({}, {}).enforced_limit_watts == 500
    # A GPU that cannot say leaves the others' figure, and is no health problem.
    fake.gpus[6].enforced_supported = False
    r = b.read({}, {})
    assert r.gpus[6].enforced_limit_watts is None and r.gpus[6].healthy
    assert r.enforced_limit_watts == 450


def test_no_enforced_limit_when_no_gpu_says(monkeypatch: pytest.MonkeyPatch) -> None:
    silent = FakeNvml([FakeGPU(enforced_supported=False)])
    silent.install(monkeypatch)
    assert NvmlBackend().read({}, {}).enforced_limit_watts is None
