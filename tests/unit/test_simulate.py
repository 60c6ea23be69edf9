"""`stargate-operator simulate`: the operator's own core at every control step,
deterministic for a seed, the trip curve's standard points, the traces' documented shapes, the
search, the JSON summary and the report page. Small sites and short runs: seconds."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from stargate_operator import cli
from stargate_operator.controller import slot
from stargate_operator.controller.engine import Engine, EngineSettings
from stargate_operator.core import sliceplan
from stargate_operator.core.site import allocate_namespace
from stargate_operator.core.sliceplan import plan_campus
from stargate_operator.sim import run as sim_run
from stargate_operator.sim import site as sim_site
from stargate_operator.sim.breaker import Breakers, TripCurve
from stargate_operator.sim.run import SimSettings, simulate
from stargate_operator.sim.search import most_nodes
from stargate_operator.sim.traces import IDLE, INFERENCE, TRAINING, Mix, TraceBank, jobs_for

SHORT = SimSettings(duration_s=120, control_interval_s=5, stop_early=False)


def bank(settings: SimSettings = SHORT, mix: Mix | None = None, seed: int = 3) -> TraceBank:
    return TraceBank(mix or Mix(), seed, settings.start.timestamp(), settings.duration_s)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert cli.main(["simulate", *args, "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


# ---- the operator's own core ---------------------------------------------------------------------

def test_every_control_step_runs_the_planner_the_engine_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The engine's planner is the power controller's: the core's plan_namespace, and the
    # PowerLimitSlices that carry its limits to the agents (plan_campus); the simulator runs it
    # too, and its agents follow the slices.
    assert slot.power_controller().planner is plan_campus
    engine = Engine(cast(Any, None), EngineSettings())
    assert engine.controllers[0].planner is plan_campus
    calls: list[Any] = []

    def spy(objects: Any, now: Any, settings: Any, cache: Any = None) -> Any:
        calls.append(now)
        return plan_campus(objects, now, settings, cache)

    # Replace the function the simulator calls: every control step must go through it.
    monkeypatch.setattr(sim_run, "plan_campus", spy)
    template = sim_site.generated(36)
    result = simulate(template, 40, sim_site.MEASURED, SHORT, bank())
    assert len(calls) == result.plans == SHORT.duration_s // SHORT.control_interval_s  # t = 0, 5, ... 115
    assert [(c - calls[0]).total_seconds() for c in calls[:3]] == [0, 5, 10]
    # ... and without the spy the very same figures come out
    monkeypatch.undo()
    again = simulate(template, 40, sim_site.MEASURED, SHORT, bank())
    assert (again.energy_capped_percent, again.seconds_over_usable) == \
        (result.energy_capped_percent, result.seconds_over_usable)


def test_the_capping_state_travels_in_status_between_control_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def spy(objects: Any, now: Any, settings: Any, cache: Any = None) -> Any:
        site = next(o for o in objects if o["kind"] == "StargateCluster")
        seen.append((site.get("status") or {}).get("power", {}).get("capping"))
        return plan_campus(objects, now, settings, cache)

    monkeypatch.setattr(sim_run, "plan_campus", spy)
    simulate(sim_site.generated(36), 44, sim_site.MEASURED, SHORT, bank())
    assert seen[0] is None  # the first plan starts from no status
    assert all(s is not None and "active" in s for s in seen[1:])  # then each sees the last one's


# ---- determinism, traces, breakers ----------------------------------------------------------------

def test_a_run_is_deterministic_for_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--nodes", "36", "--duration", "240", "--seed", "7")
    first, second = run_cli(capsys, *args), run_cli(capsys, *args)
    assert first == second
    assert set(first) == {"policies", "gain"}
    assert set(first["policies"]) == {"static", "measured"}
    for p in first["policies"].values():
        assert set(p) == {"nodes", "nodes_per_mw", "trips", "seconds_over_usable", "energy_capped_percent"}
        assert p["trips"] == 0 and p["energy_capped_percent"] <= 5.0 and p["nodes"] >= 36
    nodes = {k: p["nodes"] for k, p in first["policies"].items()}
    assert first["gain"] == round(nodes["measured"] / nodes["static"], 3)
    other = run_cli(capsys, "--nodes", "36", "--duration", "240", "--seed", "8")
    assert other != first or other["policies"]["static"]["nodes"] == first["policies"]["static"]["nodes"]


def test_traces_have_the_documented_shapes() -> None:
    b = bank(SimSettings(duration_s=600), Mix(1, 1, 1), seed=5)
    kinds = b.kinds(30)
    assert {TRAINING, INFERENCE, IDLE} == set(kinds)
    racks = {k: kinds.index(k) for k in (TRAINING, INFERENCE, IDLE)}
    rows = {k: b.traces([(r, s) for s in range(18)]).astype(float) for k, r in racks.items()}
    train = rows[TRAINING]
    # synchronous: every GPU of the job swings together, between about 40 % and 100 % of TDP
    assert np.corrcoef(train[0], train[1])[0, 1] > 0.9
    assert 0.3 < np.percentile(train, 5) < 0.55 and 0.8 < np.percentile(train, 95) <= 1.0
    idle = rows[IDLE]
    assert abs(idle.mean() - 0.10) < 0.01
    inference = rows[INFERENCE]
    assert abs(np.corrcoef(inference[0], inference[1])[0, 1]) < 0.5  # servers on their own
    assert inference.max() >= 0.9  # bursts
    # a node's trace does not depend on what else is asked for, nor on the site's size
    assert np.array_equal(b.traces([(racks[TRAINING], 2)])[0], rows[TRAINING][2].astype(np.float32))
    few, many = jobs_for(10, Mix(), 5), jobs_for(40, Mix(), 5)
    assert few == many[:len(few)]


def test_inference_follows_the_day() -> None:
    night = bank(SimSettings(duration_s=600, start_hour=4), Mix(0, 1, 0)).traces([(0, s) for s in range(18)])
    day = bank(SimSettings(duration_s=600, start_hour=16), Mix(0, 1, 0)).traces([(0, s) for s in range(18)])
    assert night.mean() < 0.35 < 0.6 < day.mean()


def test_the_trip_curve_meets_the_standards_points() -> None:
    c = TripCurve()
    assert c.trip_after(1.13) == math.inf  # IEC 60898-1: 1.13 In must not trip (within 1 h)
    assert c.trip_after(1.0) == math.inf  # UL 489: 100 % holds indefinitely
    assert c.trip_after(1.45) < 3600  # IEC 60898-1: 1.45 In trips within 1 h
    assert c.trip_after(1.35) < 3600  # UL 489: 135 % trips within 1 h
    assert c.trip_after(2.55) == pytest.approx(1.0)  # the fastest IEC 60898-1 allows at 2.55 In
    assert c.trip_after(5.0) == 0.0  # magnetic: type C from 5 In
    # the stepped model agrees with the closed form
    b = Breakers(np.array([100.0]), c)
    seconds = next(t for t in range(1, 100) if b.step(np.array([200.0]))[0])
    assert seconds == math.ceil(c.trip_after(2.0))
    b = Breakers(np.array([100.0]), c)
    assert not any(b.step(np.array([113.0]))[0] for _ in range(3600))


# ---- the site, the physics, the search -------------------------------------------------------------

def test_the_generated_tree_is_sized_at_nameplate_and_grows_round_robin() -> None:
    t = sim_site.generated(72)  # 4 racks, 1 floor PDU, 1 switchboard, the feed
    objs = sim_site.build(t, 72, sim_site.STATIC, sim_site.Oversubscribe())
    feed = next(o for o in objs if o["metadata"]["name"] == "feed")
    rating = feed["spec"]["ratingWatts"]
    assert rating * 80 // 100 >= 72 * (1800 + 4 * 1200) > (rating - 2) * 80 // 100
    assert all("oversubscription" not in o["spec"] and "oversubscription" not in o["spec"].get("power", {})
               for o in objs)
    bigger = sim_site.build(t, 100, sim_site.MEASURED, sim_site.Oversubscribe(30))
    racks = [o for o in bigger if o["kind"] == "Rack"]
    assert [r["metadata"]["name"] for r in racks] == ["rack-000", "rack-001", "rack-002", "rack-003",
                                                      "rack-000-x1", "rack-001-x1"]
    assert sum(o["kind"] == "GPUNode" for o in bigger) == 100
    site = next(o for o in bigger if o["kind"] == "StargateCluster")
    assert site["spec"]["power"]["oversubscription"]["percent"] == 30


def test_limits_cap_the_draw_after_the_lag_and_the_lost_energy_is_counted() -> None:
    t = sim_site.generated(36)
    s = SimSettings(duration_s=120, stop_early=False)
    nameplate = simulate(t, 36, sim_site.STATIC, s, bank(s))
    assert nameplate.energy_capped_percent == 0.0 and not nameplate.trips
    assert not nameplate.seconds_over_usable
    crowded = simulate(t, 54, sim_site.STATIC, s, bank(s))  # 1.5 x nameplate: limits well below TDP
    assert crowded.energy_capped_percent > 10
    assert not crowded.trips  # static limits hold the feed: nothing to trip
    # a feed whose breaker is rated below the floors beneath it trips, on the curve's schedule
    weak = sim_site.generated(36)
    feed = next(o for o in weak.fixed if o["metadata"]["name"] == "feed")
    feed["spec"]["ratingWatts"] = 100_000  # 36 floors of 1800 + 4 x 400 W: 122.4 kW, 1.22 x rating
    tripped = simulate(weak, 36, sim_site.STATIC, replace(s, stop_early=True), bank(s))
    assert tripped.trips and tripped.trips[0][0] == "feed"
    assert tripped.trips[0][1] + 1 == math.ceil(TripCurve().trip_after(122_400 / 100_000))
    assert tripped.seconds < s.duration_s  # stopped at once, as a search run would be



@pytest.mark.parametrize("lag", [0, 3, 7.5])
def test_a_new_limit_reaches_the_gpus_after_the_enforcement_lag(monkeypatch: pytest.MonkeyPatch,
                                                                lag: float) -> None:
    s = SimSettings(duration_s=60, enforcement_lag_s=lag, stop_early=False)
    start = s.start

    def curtailing(objects: Any, now: Any, settings: Any, cache: Any = None) -> Any:
        allocated = allocate_namespace(objects, now, settings, cache)
        if (now - start).total_seconds() >= 30:  # from the plan at t = 30: every GPU at 400 W
            for ns, limits in allocated.limits.items():
                allocated.limits[ns] = dict.fromkeys(limits, 400)
                allocated.safe_limits[ns] = {n: w for n, w in allocated.safe_limits[ns].items() if w < 400}
        return allocated

    # The limits under the slices the simulator's planner writes (plan_campus allocates with it).
    monkeypatch.setattr(sliceplan, "allocate_namespace", curtailing)
    r = simulate(sim_site.generated(36), 36, sim_site.STATIC, s, bank(s), keep_series=True)
    assert r.series is not None
    capped = np.flatnonzero(r.series.capped_w > 0)
    assert capped[0] == 30 + math.ceil(lag)


def test_the_search_finds_the_edge_of_a_monotone_predicate() -> None:
    class Fake:
        def __init__(self, n: int) -> None:
            self.nodes = n
            self.trips: list[Any] = []
            self.energy_capped_percent = 0.0 if n <= 137 else 9.0

        def hosts(self, bound: float) -> bool:
            return self.energy_capped_percent <= bound

    s = most_nodes("static", 100, Fake, 5.0)  # type: ignore[arg-type]
    assert s.best is not None and s.best.nodes == 137
    assert len(s.tried) <= 12
    s = most_nodes("static", 200, Fake, 5.0)  # type: ignore[arg-type]
    assert s.best is not None and s.best.nodes == 137


def test_manifests_are_read_and_refused_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    import yaml

    t = sim_site.generated(36)
    objs = sim_site.build(t, 36, sim_site.STATIC, sim_site.Oversubscribe())
    for o in objs:
        o.pop("sim", None)
        o["metadata"] = {"name": o["metadata"]["name"], "namespace": "north"}
    (tmp_path / "site.yaml").write_text(yaml.safe_dump_all(objs))
    out = run_cli(capsys, "-f", str(tmp_path / "site.yaml"), "--duration", "120")
    assert out["policies"]["static"]["nodes"] >= 36
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**objs[0], "spec": {"site": {}}}))
    assert cli.main(["simulate", "-f", str(tmp_path / "bad.yaml")]) == 2
    assert "invalid input" in capsys.readouterr().err


def test_the_report_page_has_its_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["simulate", "--nodes", "36", "--duration", "120", "--report", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    for png in ("load.png", "search.png", "capped.png"):
        data = (tmp_path / "r" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f'src="{png}"' in page
    assert "measured / static" in page and "nodes per MW" in page
    assert "feed" in capsys.readouterr().out


def test_a_run_past_the_bound_by_less_than_the_rounding_does_not_host() -> None:
    from stargate_operator.sim.run import RunResult

    r = RunResult(nodes=10, policy="static", seconds=60, trips=[], seconds_over_usable={},
                  energy_capped_percent=5.0, plans=12, capped_share=0.0500004)
    assert not r.hosts(5.0)
    r.capped_share = 0.05
    assert r.hosts(5.0)
    r.stopped_early = True  # a run cut short never hosts
    assert not r.hosts(5.0)


def test_steps_split_the_workloads_and_the_operators_and_ramps_bound_the_operators(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`simulate --steps`: a 20 % event of the baseline, 700 s into a 1,000 s run (the baseline's 10
    minutes before it), without ramps and with 5 kW/s both ways. Without, the operator's 1 s step is
    the whole cut; with, it is the rate (plus the rounding of per-GPU limits); the workload's steps
    are nearly the same in both runs (its part is measured under each run's limits)."""
    out = run_cli(capsys, "--nodes", "36", "--steps", "--ramp-down", "5000", "--ramp-up", "5000",
                  "--duration", "1000", "--event-start", "700", "--event-duration", "150")["steps"]
    without, ramped = out["without_ramps"], out["with_ramps"]
    assert set(without) == set(ramped) == {"site", "feed"}
    for name in without:
        w0, w1 = without[name]["1s"]["workload"], ramped[name]["1s"]["workload"]
        assert w0 > 0 and abs(w0 - w1) <= 0.02 * w0  # measured under other limits: nearly the same
        assert without[name]["1s"]["operator"] > 4 * 5_000
        assert 0 < ramped[name]["1s"]["operator"] <= 5_000 * 1.05
        assert ramped[name]["5s"]["operator"] <= 5 * 5_000 * 1.05
