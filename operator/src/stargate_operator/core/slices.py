"""Packing racks into PowerLimitSlices: whole racks, in power-tree order, each kept where it is.

A slice holds at most `size` nodes. Racks are never split, so that a rack's nodes change their limits
with one write; a rack with more nodes than `size` gets a slice of its own. Racks are packed in the
order of the power tree (racks beneath one PDU side by side), so that a change beneath one domain
touches few slices. A rack keeps the slice it had while it still fits there: a slice's name is what
its agents watch, and moving a rack costs two writes and a re-watch by each of its agents.

Pure: the previous assignment is an input, the new one the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SLICE_PREFIX = "limits"


def slice_name(index: int) -> str:
    return f"{SLICE_PREFIX}-{index}"


def pack(racks: Sequence[tuple[str, int]], previous: Mapping[str, str], size: int) -> dict[str, str]:
    """Rack name -> slice name, for `racks` as (name, nodes) in power-tree order.

    First every rack whose previous slice still has room for it (in tree order) stays there; then each
    rack left goes, in tree order, to the slice of the rack before it when it fits, else of the rack
    after it, else to a new slice (the lowest free index)."""
    if size < 1:
        raise ValueError(f"slice size must be at least 1, not {size}")
    out: dict[str, str] = {}
    load: dict[str, int] = {}
    for name, nodes in racks:
        held = previous.get(name)
        # A rack larger than a slice keeps a slice of its own.
        if held is not None and (load.get(held, 0) + nodes <= size or held not in load):
            out[name] = held
            load[held] = load.get(held, 0) + nodes
    taken = {*load}
    free = 0
    order = [name for name, _ in racks]
    sizes = dict(racks)
    for i, (name, nodes) in enumerate(racks):
        if name in out:
            continue
        target = None
        for j in (i - 1, i + 1):
            if 0 <= j < len(order):
                near = out.get(order[j])
                if near is not None and load[near] + nodes <= size:
                    target = near
                    break
        if target is None:
            while slice_name(free) in taken:
                free += 1
            target = slice_name(free)
            taken.add(target)
        out[name] = target
        load[target] = load.get(target, 0) + nodes
    assert len(out) == len(sizes)
    return out
