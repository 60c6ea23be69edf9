"""Memory pools: capacity per tier, and binding claims to them.

Bindings live in the claims' status only (`phase: Bound`), so a restarted operator reads them back
and neither loses nor duplicates one. Each claim is in exactly one pool's list, and each claim is
either kept, evicted, or considered once for binding, so no claim is ever bound twice.

Decisions the design leaves open:
- a bound claim holds `spec.sizeBytes` as it is now: growing a bound claim can overflow the pool,
  and the eviction step then settles it like any shrink of capacity;
- a pool that cannot hold memory (its cluster or rack is missing, a CXL pool without a size) has
  capacity 0: its claims go Pending (reason PoolNotReady) and get their memory back, in binding
  order, once the pool is whole again.
"""

from __future__ import annotations

from stargate_operator.core.objects import ClaimIn, PoolIn


def derived_capacity(tier: str, hbm_bytes: int, host_bytes: int, share_percent: int) -> int:
    """sharePercent of the members' memory of the tier; 0 for a tier nodes do not hold (CXL)."""
    if tier == "HBM":
        base = hbm_bytes
    elif tier == "DRAM":
        base = host_bytes
    else:
        return 0
    return base * share_percent // 100


def binding_order(claim: ClaimIn) -> tuple[int, float, str]:
    """Priority high first, then creation time old first, then name."""
    return (-claim.priority, claim.created, claim.name)


def bind_claims(pool: PoolIn) -> None:
    """Step one: evict until the bound claims fit; step two: bind what fits, in binding order."""
    capacity = pool.capacity
    bound = [c for c in pool.claims if c.was_bound]
    used = sum(c.size for c in bound)
    if used > capacity:
        # Lowest priority first, among equals newest first; names (reverse of the binding order)
        # only break exact ties, so the result does not depend on the order objects came in.
        victims = sorted(bound, key=lambda c: c.name, reverse=True)
        victims.sort(key=lambda c: (c.priority, -c.created))
        for claim in victims:
            if used <= capacity:
                break
            claim.evicted = True
            used -= claim.size
    for claim in bound:
        if not claim.evicted:
            claim.bound = True
    waiting = sorted((c for c in pool.claims if not c.bound), key=binding_order)
    pending = 0
    smallest = 0
    for claim in waiting:
        if used + claim.size <= capacity:
            claim.bound = True
            claim.evicted = False  # evicted and bound again at once: it never lost its memory
            used += claim.size
        else:
            pending += 1
            smallest = claim.size if pending == 1 else min(smallest, claim.size)
    pool.allocated = used
    pool.bound = len(pool.claims) - pending
    pool.pending = pending
    pool.smallest_pending = smallest
