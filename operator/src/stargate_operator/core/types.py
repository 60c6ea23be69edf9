"""The contract between the core and its callers (the operator engine, `plan`, metrics).

Input: the wire-form objects (dicts as the API server returns them, camelCase, with metadata and
any status already present) of one namespace. Output: a `Plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

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
    # Earliest future time at which the result changes by time alone (telemetry going stale,
    # a curtailment's `until` passing); None when nothing is pending.
    next_change_at: datetime | None = None
