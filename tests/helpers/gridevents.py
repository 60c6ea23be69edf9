"""GridEvent objects for tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from helpers.core_objects import NOW, _obj, ts

H = timedelta(hours=1)


def gev(name: str, *, cluster_ref: str = "site", domain_ref: str | None = None,
        start: datetime = NOW - H, end: datetime | None = None, percent: int | None = None,
        limit: int | None = None, **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterRef": cluster_ref, "start": ts(start), "reason": "peak",
                            "source": "openadr3:vtn-1/event-7"}
    if domain_ref is not None:
        spec["powerDomainRef"] = domain_ref
    if end is not None:
        spec["end"] = ts(end)
    if percent is not None:
        spec["reducePercent"] = percent
    if limit is not None:
        spec["limitWatts"] = limit
    return _obj("GridEvent", name, spec, **kw)
