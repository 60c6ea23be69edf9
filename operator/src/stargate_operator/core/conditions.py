"""Conditions in the Kubernetes convention, and the transitions that deserve an Event.

The one rule that matters for the engine: a condition whose status did not change keeps its
`lastTransitionTime`, so an unchanged object produces a status equal to the one it already has and
the engine writes nothing. Messages are therefore built only from figures that are themselves part
of the status (never from an age or a clock), or they would change on every recomputation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# (type, status, reason, message); the first one is always Ready, the summary.
CondSpec = tuple[str, str, str, str]
OldConditions = dict[str, Mapping[str, Any]]

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"


def index_conditions(status: Mapping[str, Any]) -> OldConditions:
    """The input's existing conditions by type (later duplicates win, as a map-list would)."""
    out: OldConditions = {}
    conds = status.get("conditions")
    if isinstance(conds, list):
        for c in conds:
            # `type(c) is dict` first: what a JSON decoder gives, without the ABC's slower check.
            if type(c) is dict or isinstance(c, Mapping):
                t = c.get("type")
                if type(t) is str:
                    out[t] = c
    return out


# Conditions of this recomputation by content: objects that get the same condition share one
# dict instead of each building its own (a 100,000-node site has a handful of distinct ones).
ConditionMemo = dict[tuple[str, str, str, str, Any, "int | None"], dict[str, Any]]


def build_conditions(
    old: OldConditions,
    specs: tuple[CondSpec, ...],
    ours: frozenset[str],
    now: str,
    generation: int | None,
    memo: ConditionMemo,
) -> list[Mapping[str, Any]]:
    """Our conditions in a fixed order, then any other controller's conditions, untouched.

    `ours` is the set of types in `specs` (a constant of the caller, so it is not rebuilt per
    object). A condition equal to the existing one is that very object, and equal new ones are
    one shared object: the result is read-only, like the input.
    """
    out: list[Mapping[str, Any]] = []
    size = 5 if generation is None else 6
    for ctype, status, reason, message in specs:
        prev = old.get(ctype)
        ltt: Any = now
        if prev is not None and prev.get("status") == status:
            kept = prev.get("lastTransitionTime")
            if kept:
                ltt = kept
                if (
                    prev.get("reason") == reason
                    and prev.get("message") == message
                    and prev.get("observedGeneration") == generation
                    and len(prev) == size
                ):
                    out.append(prev)  # unchanged: the steady state of a big site
                    continue
        key = (ctype, status, reason, message, ltt, generation)
        cond = memo.get(key)
        if cond is None:
            cond = {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": ltt,
            }
            if generation is not None:
                cond["observedGeneration"] = generation
            memo[key] = cond
        out.append(cond)
    for t in old:
        if t not in ours:
            out.extend(c for t2, c in sorted(old.items()) if t2 not in ours)
            break
    return out


def turned(old: OldConditions, ctype: str, status: str) -> bool:
    """The condition now has `status` and did not have it before (or did not exist)."""
    prev = old.get(ctype)
    return prev is None or prev.get("status") != status


def recovered(old: OldConditions, ctype: str) -> bool:
    """The condition was True before (it is False now: the caller knows)."""
    prev = old.get(ctype)
    return prev is not None and prev.get("status") == TRUE


def ready_reason_changed_to(old: OldConditions, reason: str) -> bool:
    prev = old.get("Ready")
    return prev is None or prev.get("reason") != reason
