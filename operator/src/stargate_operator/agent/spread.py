"""The fail-safe without a step: when a site's agents lose the operator's Lease together, each
enters the fail-safe (and leaves it once the Lease is renewed) at its own offset within
`--failsafe-spread` seconds, so a site moves by about 1/spread of its agents' change per second
instead of all of it in one instant.

The offset is a stable hash of the node name: every agent computes its own with no coordination
(a node's agent knows no other node), a restart keeps it, and over many nodes the offsets are
spread evenly (crc32 of distinct names). Pure.
"""

from __future__ import annotations

import zlib

DEFAULT_FAILSAFE_SPREAD_SECONDS = 10.0
_SLOTS = 100_000  # offsets in steps of spread / 100,000
_SALT = b"stargate-failsafe:"  # not the hash that spreads the agents' writes over their interval


def failsafe_offset(name: str, spread: float) -> float:
    """Seconds after the site-wide change at which this node's agent follows it: 0 <= x < spread."""
    if spread <= 0:
        return 0.0
    return (zlib.crc32(_SALT + name.encode()) % _SLOTS) / _SLOTS * spread


def follows(name: str, spread: float, since_change: float) -> bool:
    """Whether the agent of `name` has followed a change made `since_change` seconds ago."""
    return since_change >= failsafe_offset(name, spread)
