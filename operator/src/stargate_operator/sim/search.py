"""The most nodes a policy hosts under the tree, found by search.

A site *hosts* n nodes when a run of n nodes has no breaker trip and loses at most
`max_capped_percent` of its GPUs' wanted energy to capping (the same rule for every policy). More
nodes only add racks to the same tree, so hosting is taken to be monotone in n: the search grows
from the nameplate count by 25 % steps until a run fails, then bisects between the last success and
the first failure down to `resolution` nodes. Every run it made is returned (the report plots them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from stargate_operator.sim.run import RunResult

GROWTH = 1.25
MAX_FACTOR = 4.0


@dataclass(slots=True)
class Search:
    policy: str
    best: RunResult | None = None  # the most nodes hosted (None: not even the first run's few)
    tried: list[RunResult] = field(default_factory=list)


def most_nodes(policy: str, start: int, run: Callable[[int], RunResult], max_capped_percent: float,
               resolution: int = 1) -> Search:
    out = Search(policy)
    seen: dict[int, RunResult] = {}

    def hosts(n: int) -> bool:
        if n not in seen:
            seen[n] = run(n)
            out.tried.append(seen[n])
        return seen[n].hosts(max_capped_percent)

    start = max(start, 1)
    if hosts(start):
        lo, hi = start, None
        n = start
        while n < start * MAX_FACTOR:
            n = max(math.ceil(n * GROWTH), n + 1)
            if hosts(n):
                lo = n
            else:
                hi = n
                break
        if hi is None:
            out.best = seen[lo]
            return out
    else:
        hi = start
        lo = 0
        n = start
        while n > 1:
            n = max(n * 4 // 5, 1) if n > 1 else 1
            if hosts(n):
                lo = n
                break
            hi = n
        if lo == 0:
            return out
    while hi - lo > max(resolution, 1):
        mid = (lo + hi) // 2
        if hosts(mid):
            lo = mid
        else:
            hi = mid
    out.best = seen[lo]
    return out
