"""What one recomputation can hand the next, so that a site where little changed is cheap.

The engine recomputes a whole namespace on every coalesced change; on a 100,000-node site almost
every node is the same object (same uid, same resourceVersion) as last time. A PlanCache passed to
every call of `plan_namespace` for the same objects keeps, per GPU node:
- the parsed record (skips reading the wire form again),
- its health verdict and the window of time in which that verdict holds (skips telemetry parsing),
- its last status and what that status was built from, kept only when no condition changed in it
  (then `now` played no part in it), so an unchanged node is not built again.
Results are identical with and without a cache; the cache only saves work. Entries of objects that
did not come back in the last call are dropped. Not thread-safe: one cache per engine worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stargate_operator.core.objects import NodeIn


@dataclass(slots=True)
class PlanCache:
    nodes: dict[str, NodeIn] = field(default_factory=dict)  # by metadata.uid

    def __len__(self) -> int:
        return len(self.nodes)
