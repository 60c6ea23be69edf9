"""Ramp rates: how fast the power assigned beneath a site or a PowerDomain may move.

Shared by StargateCluster (`spec.power`) and PowerDomain (`spec`), so both carry the same two
optional fields with the same bounds and words. Absent: no limit (every change applies at once).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from stargate_operator.api.common import MAX_SITE_WATTS


def ramp_field(direction: str, moves: str) -> Any:
    """An optional rate in watts per second, > 0."""
    return Field(
        default=None,
        gt=0,
        le=MAX_SITE_WATTS,
        description=f"Watts per second, > 0: the fastest the power assigned beneath may {direction} "
        f"({moves}); a site's rate also bounds every domain beneath it. No limit when unset.",
    )


DOWN = ("fall", "grid events and curtailment descend along it; protection never waits")
UP = ("rise", "an event's end and leaving capping rise along it")
