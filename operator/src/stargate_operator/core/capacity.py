"""Node health from telemetry, and the capacity rollups node -> rack -> site.

Health, with the cases the design leaves open decided here:
- maintenance (spec.maintenance, or a cordoned Node: spec.cordoned): 0 healthy GPUs, whatever the
  telemetry says; likewise a Node that is not Ready (spec.nodeReady false, set by discovery);
- no telemetry at all (absent or empty): every GPU healthy, so sites without agents still plan;
- fresh telemetry (age below the stale threshold): `telemetry.healthyGPUs`, clamped to 0..count;
  when the agent did not report the figure, every GPU counts as healthy;
- stale telemetry (age at or above the threshold; "at" so that the instant reported in
  `next_change_at` really is a change): 0 healthy, `TelemetryStale=True`, reason `Stale`;
- `observedAt` missing or unreadable: the reading cannot be placed in time, so it is treated as
  stale (reason `MissingTimestamp` / `InvalidTimestamp`): a broken agent must not keep GPUs healthy;
- `observedAt` in the future by less than the threshold: fresh (small clock skew between the agent
  and the operator is normal); by more: treated as stale with reason `ClockSkew` until the
  operator's clock is within the threshold of it (a reading dated tomorrow must not keep a dead
  node healthy until tomorrow).
Measured power counts only from fresh telemetry, and so does the enforced limit the agent reports
(`telemetry.enforcedLimitWatts`, the proof behind PowerLimitApplied): a stale report proves nothing.
"""

from __future__ import annotations

from stargate_operator.core.objects import NodeIn
from stargate_operator.core.wire import EpochMemo, int_or_none, parse_epoch


def assess_node(node: NodeIn, now: float, stale_after: float, memo: EpochMemo) -> float | None:
    """Set healthy, measured, stale and stale_reason (every one of them: a cached record is
    assessed again); return when the verdict changes by time alone, if it ever does."""
    tel = node.telemetry
    count = node.count if node.count > 0 else 0
    node.measured_w = None
    node.enforced_w = None
    if not tel:
        node.stale = False
        node.stale_reason = "NoTelemetry"
        node.healthy = 0 if node.maintenance or not node.node_ready else count
        return None
    raw = tel.get("observedAt")
    observed = memo[raw] if type(raw) is str else parse_epoch(raw)
    node.stale = True
    node.healthy = 0
    if observed is None:
        node.stale_reason = "MissingTimestamp" if raw is None else "InvalidTimestamp"
        return None
    age = now - observed
    if age >= stale_after:
        node.stale_reason = "Stale"
        return None
    if age < -stale_after:
        node.stale_reason = "ClockSkew"
        return observed - stale_after
    node.stale = False
    node.stale_reason = "Fresh"
    if not node.maintenance and node.node_ready:
        reported = tel.get("healthyGPUs")
        if type(reported) is not int:
            reported = int_or_none(reported)
        node.healthy = count if reported is None else min(max(reported, 0), count)
    watts = tel.get("powerWatts")
    if type(watts) is not int:
        watts = int_or_none(watts)
    node.measured_w = watts if watts is not None and watts >= 0 else None
    enforced = tel.get("enforcedLimitWatts")
    if enforced is not None:
        if type(enforced) is not int:
            enforced = int_or_none(enforced)
        node.enforced_w = enforced if enforced is not None and enforced >= 0 else None
    return observed + stale_after
