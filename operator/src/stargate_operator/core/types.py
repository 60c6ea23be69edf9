"""The contract between the core and its callers (the operator engine, `plan`, metrics).

Input: the wire-form objects (dicts as the API server returns them, camelCase, with metadata and
any status already present) of one namespace. Output: a `Plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from stargate_operator.kinds import DEFAULT_STALE_AFTER_SECONDS

# The name of a kind, as kinds.py registers it.
Kind = str
# (kind, namespace, name)
ObjectKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class CoreSettings:
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS


@dataclass(frozen=True, slots=True)
class PlanEvent:
    """A Kubernetes Event the caller should post: something a site operator must know."""

    key: ObjectKey
    type: Literal["Normal", "Warning"]
    reason: str  # CamelCase, e.g. PowerOvercommitted, OverBudget, Evicted, ClusterNotFound
    message: str


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """An object a plan deletes. `uid`, when given, pins the very object the plan saw: one
    re-created under the same name meanwhile is not deleted (the API server answers 409)."""

    kind: Kind
    namespace: str  # "" for a cluster-scoped object
    name: str
    uid: str | None = None

    @property
    def key(self) -> ObjectKey:
        return (self.kind, self.namespace, self.name)


@dataclass(slots=True)
class Plan:
    # The operator-owned part of `status` of every input object, in wire form (camelCase),
    # including observedGeneration and conditions. Never contains `telemetry` (the node agent's).
    # Equal to the input's status (operator-owned part) when nothing changed, so a diff is empty.
    statuses: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    events: list[PlanEvent] = field(default_factory=list)
    # Figures the core decided that no status field carries, by object (e.g. per rack: nodes in
    # maintenance, stale, capped). Metrics read them here instead of deriving them again.
    counts: dict[ObjectKey, dict[str, int]] = field(default_factory=dict)
    # Objects a controller keeps (a second controller's output, such as discovery's GPUNodes), in
    # wire form with apiVersion, kind and metadata.name (and namespace): the whole intent of the
    # controller's field manager, applied server-side. The caller skips those already as desired.
    applies: list[dict[str, Any]] = field(default_factory=list)
    # Objects to create (POST) when absent; wire form as for applies.
    creates: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[ObjectRef] = field(default_factory=list)
    # JSON merge patches of existing objects (a Node's taints), by key, with the resourceVersion
    # they were built from; listed only where the object differs from what they make it.
    patches: list[tuple[ObjectKey, dict[str, Any]]] = field(default_factory=list)
    # Earliest future time at which the result changes by time alone (telemetry going stale,
    # a curtailment's `until` passing); None when nothing is pending.
    next_change_at: datetime | None = None
    # Per namespace where an envelope moves now (ramps.py): the straight piece of every envelope
    # there that holds the planning instant, (from, to) in epoch seconds (sliceramp.py).
    ramp_pieces: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Per namespace, the piece after the next kink when it comes within a few seconds (written ahead).
    ramp_next: dict[str, tuple[float, float]] = field(default_factory=dict)


class Staged(Protocol):
    """A plan in two steps: `applies`, known first (what the agents act on, written before anything
    else), and `finish()`, the whole plan with them, called once."""

    @property
    def applies(self) -> list[dict[str, Any]]: ...

    def finish(self) -> Plan: ...


@dataclass(slots=True)
class Planned:
    """A plan computed at once, as a Staged: its applies first, then itself."""

    plan: Plan

    @property
    def applies(self) -> list[dict[str, Any]]:
        return self.plan.applies

    def finish(self) -> Plan:
        return self.plan
