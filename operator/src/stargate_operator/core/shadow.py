"""Shadow mode (a site's spec.power.enforcement Observe): the limits are computed and written as
always, the agents apply none, and the statuses say what enforcing them would cap.

A node would be capped by what it measures above its allocation (base power plus its GPUs at the
limit): that is the power enforcing would take away at this reading. Pure.
"""

from __future__ import annotations

from stargate_operator.core.objects import RackIn


def shadow(rack: RackIn) -> None:
    """Mark the rack's nodes as observed and sum what their limits would cap."""
    over_nodes = over_w = 0
    for n in rack.nodes:
        n.observe = True
        measured = n.measured_w
        if measured is not None and n.powered and measured > n.allocated_w:
            over_nodes += 1
            over_w += measured - n.allocated_w
    rack.over_nodes = over_nodes
    rack.over_w = over_w
