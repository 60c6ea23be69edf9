"""The operator's writes at rest: figures that move with every reading are written seldom.

A status patch that changes nothing but measured figures (a rack's or site's `measuredWatts`, its
facility power and carbon, a capping constraint's draw, a grid event's shed) is written at most once
per `refresh` seconds per object; a patch that changes anything else with it (a condition, a
budget, a count) goes at once, the measured figures with it. The live figures are Prometheus's and
Grafana's; status is the record. Without this, a site's status writes follow every agent report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Status fields whose values move with measurements alone.
MEASURED_FIELDS = frozenset({
    "measuredWatts", "facilityWatts", "carbonGramsPerHour", "drawWatts", "shedWatts", "peakPowerWatts",
})


def only_measured(patch: Mapping[str, Any]) -> bool:
    """True when every leaf the merge patch sets is a measured figure."""
    for key, value in patch.items():
        if isinstance(value, Mapping) and value:
            if not only_measured(value):
                return False
        elif key not in MEASURED_FIELDS:
            return False
    return True


class MeasuredRefresh:
    """Which status patches to hold back, by object key and the monotonic time."""

    def __init__(self, refresh_seconds: float) -> None:
        self.refresh = refresh_seconds
        self._written: dict[Any, float] = {}  # key -> when its measured figures were last written
        self.next_due: float | None = None  # the earliest time a held-back patch may go

    def allow(self, key: Any, patch: Mapping[str, Any], now: float) -> bool:
        if self.refresh <= 0:
            return True
        if not only_measured(patch):
            self._written[key] = now
            return True
        last = self._written.get(key)
        if last is None or now - last >= self.refresh:
            self._written[key] = now
            return True
        due = last + self.refresh
        if self.next_due is None or due < self.next_due:
            self.next_due = due
        return False

    def take_due(self) -> float | None:
        """The earliest time a patch held back since the last call may go (None: none held)."""
        due, self.next_due = self.next_due, None
        return due

    def forget(self, key: Any) -> None:
        self._written.pop(key, None)
