"""The power-unmanaged taint rule (core/taint.py), without an API server."""

from __future__ import annotations

from typing import Any

from stargate_operator.core.taint import TAINT_KEY, taint_patches

SITE = "stargate.dev/site"
OTHER = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
MINE = {"key": TAINT_KEY, "effect": "NoSchedule"}


def node(ready: str | None, taints: list[dict[str, Any]], *, gpus: bool = True) -> dict[str, Any]:
    labels = {SITE: "site-a", **({"nvidia.com/gpu.count": "8"} if gpus else {})}
    conds = [] if ready is None else [{"type": "Ready", "status": ready,
                                       "lastTransitionTime": "2026-01-01T12:00:00Z"}]
    return {"kind": "Node", "metadata": {"name": "n1", "labels": labels, "resourceVersion": "9"},
            "spec": {"taints": taints}, "status": {"conditions": conds}}


def gpunode(observed: str, enforced: int | None, limit: int = 500, observe: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"powerLimitWatts": limit, "telemetry": {"observedAt": observed}}
    if enforced is not None:
        status["telemetry"]["enforcedLimitWatts"] = enforced
    if observe:
        status["powerEnforcement"] = "Observe"
    return {"kind": "GPUNode", "metadata": {"name": "n1", "namespace": "site-a"}, "status": status}


def patches(*objs: dict[str, Any]) -> list[Any]:
    return [p for _, p in taint_patches(objs, SITE)]


def test_first_discovered_and_not_ready_nodes_are_tainted_keeping_other_taints() -> None:
    for ready in (None, "False", "Unknown", "True"):
        assert patches(node(ready, [OTHER])) == [
            {"spec": {"taints": [OTHER, MINE]}, "metadata": {"resourceVersion": "9"}}]
    assert patches(node("False", [OTHER, MINE])) == []  # already: nothing to write


def test_a_confirmation_after_ready_removes_only_our_taint() -> None:
    confirmed = gpunode("2026-01-01T12:00:05Z", enforced=500)
    assert patches(node("True", [OTHER, MINE]), confirmed) == [
        {"spec": {"taints": [OTHER]}, "metadata": {"resourceVersion": "9"}}]
    assert patches(node("True", [OTHER]), confirmed) == []
    assert patches(node("True", []), gpunode("2026-01-01T12:00:05Z", enforced=450)) == []  # below: holds


def test_what_does_not_confirm() -> None:
    tainted = node("True", [MINE])
    for g in (gpunode("2026-01-01T11:59:59Z", enforced=500),  # before the Node became Ready
              gpunode("2026-01-01T12:00:00.500Z", enforced=500),  # within its Ready second
              gpunode("2026-01-01T12:00:05Z", enforced=600),  # another limit in force
              gpunode("2026-01-01T12:00:05Z", enforced=None)):  # no enforced limit reported
        assert patches(tainted, g) == []
    assert patches(node("True", []), gpunode("2026-01-01T11:59:00Z", enforced=500))  # tainted again


def test_shadow_mode_confirms_on_any_report_and_non_gpu_nodes_are_left_alone() -> None:
    assert patches(node("True", [MINE]), gpunode("2026-01-01T12:00:05Z", None, observe=True)) == [
        {"spec": {"taints": []}, "metadata": {"resourceVersion": "9"}}]
    assert patches(node("False", [], gpus=False)) == []
