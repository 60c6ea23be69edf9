"""Measured figures at rest (controller/refresh.py): a patch of measured figures alone is held back
until its object's refresh is due; anything else goes at once, and restarts the clock."""

from __future__ import annotations

from stargate_operator.controller.refresh import MeasuredRefresh, only_measured


def test_only_measured_leaves_count() -> None:
    assert only_measured({"power": {"measuredWatts": 5}})
    assert only_measured({"power": {"measuredWatts": 5, "facilityWatts": 7}, "carbonGramsPerHour": 1.5})
    assert not only_measured({"power": {"measuredWatts": 5, "budgetWatts": 3}})
    assert not only_measured({"conditions": [], "power": {"measuredWatts": 5}})
    assert not only_measured({"power": {"capping": {"drawWatts": 1, "active": True}}})


def test_a_measured_patch_waits_for_its_refresh_and_a_condition_does_not() -> None:
    r = MeasuredRefresh(300)
    key = ("Rack", "ns", "r0")
    measured = {"power": {"measuredWatts": 1000}}
    assert r.allow(key, measured, 0.0)  # the first one goes
    assert not r.allow(key, measured, 10.0) and r.take_due() == 300.0
    assert r.take_due() is None
    assert r.allow(("Rack", "ns", "r1"), measured, 10.0)  # per object
    assert r.allow(key, {"conditions": [{"type": "OverBudget"}], **measured}, 20.0)  # at once
    assert not r.allow(key, measured, 319.0) and r.take_due() == 320.0
    assert r.allow(key, measured, 320.0)
    assert MeasuredRefresh(0).allow(key, measured, 1.0) and MeasuredRefresh(0).allow(key, measured, 1.1)
