"""Process-wide settings that the shell decides, never the core: the cyclic garbage collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused for the block (and restored as it was).

    Around the core's planner: it allocates no reference cycles, and on a 100,000-node site the
    collections its allocations would trigger cost as much as the recomputation and grow faster
    than linearly. A process that holds a large site's objects does well to `gc.freeze()` them once
    listed too.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
