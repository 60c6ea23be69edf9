"""The engine's pure pieces: the status merge patch and the store's echo handling (leader
election's rules are in test_leader.py)."""

from __future__ import annotations

from stargate_operator.controller.store import Store
from stargate_operator.core.statusdiff import apply_merge_patch, merge_patch


def test_merge_patch_is_empty_when_nothing_changed() -> None:
    status = {"power": {"budgetWatts": 10}, "conditions": [{"type": "Ready", "status": "True"}],
              "telemetry": {"powerWatts": 5}}
    desired = {"power": {"budgetWatts": 10}, "conditions": [{"type": "Ready", "status": "True"}]}
    assert merge_patch(status, desired) == {}


def test_merge_patch_changes_only_what_differs_and_never_touches_telemetry() -> None:
    status = {"power": {"budgetWatts": 10, "floorWatts": 4, "old": 1}, "stale": 3, "telemetry": {"x": 1}}
    desired = {"power": {"budgetWatts": 12, "floorWatts": 4}, "nodes": 2}
    patch = merge_patch(status, desired)
    assert patch == {"power": {"budgetWatts": 12, "old": None}, "nodes": 2, "stale": None}
    assert apply_merge_patch(status, patch) == {**desired, "telemetry": {"x": 1}}


def test_merge_patch_replaces_lists_whole() -> None:
    a = {"conditions": [{"type": "Ready", "status": "True"}]}
    b = {"conditions": [{"type": "Ready", "status": "False", "reason": "RackNotFound"}]}
    assert merge_patch(a, b) == b


def _obj(rv: str, budget: int) -> dict[str, object]:
    return {"kind": "Rack", "metadata": {"name": "r", "namespace": "ns", "resourceVersion": rv,
                                         "managedFields": [{"manager": "kubectl"}]},
            "status": {"power": {"budgetWatts": budget}}}


def test_store_ignores_the_echo_of_its_own_write_and_older_versions() -> None:
    store = Store()
    assert store.upsert(_obj("10", 1))
    assert not store.upsert(_obj("10", 1))  # the watch echo of a write already stored
    assert not store.upsert(_obj("9", 0))  # older
    assert store.upsert(_obj("11", 2))
    held = store.get(("Rack", "ns", "r"))
    assert held is not None and held["status"] == {"power": {"budgetWatts": 2}}
    assert "managedFields" not in held["metadata"]


def test_store_replace_kind_drops_vanished_objects() -> None:
    store = Store()
    store.upsert(_obj("1", 1))
    touched = store.replace_kind("Rack", None, [])
    assert touched == {"ns"} and store.count() == 0

