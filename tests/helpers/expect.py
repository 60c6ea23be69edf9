"""Waiting for what the running operator writes: statuses, conditions and Events, with what was seen
when the wait fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from helpers.api import Api, condition
from helpers.operator_process import wait_for

WAIT = 10.0  # seconds: the design says about a second; polling and a busy 2-core machine get slack


def _missing(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from ``expected`` (a nested subset: only the keys given count)."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [f"{path or '.'}: expected a mapping, got {actual!r}"]
        out = []
        for k, v in expected.items():
            out += _missing(v, actual.get(k), f"{path}.{k}")
        return out
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


def expect(api: Api, ns: str, kind: str, name: str, status: Mapping[str, Any],
           conditions: Mapping[str, tuple[str, str]] | None = None, timeout: float = WAIT) -> dict[str, Any]:
    """Wait until the object's status holds ``status`` (a nested subset) and each condition type has
    the given (status, reason); return the status. Fails with the differences of the last read."""
    last: list[str] = []

    def check() -> dict[str, Any] | None:
        nonlocal last
        got = api.status(kind, ns, name)
        diffs = _missing(status, got)
        for ctype, (cstatus, reason) in (conditions or {}).items():
            c = condition(got, ctype)
            if (c.get("status"), c.get("reason")) != (cstatus, reason):
                diffs.append(f"condition {ctype}: expected {cstatus}/{reason}, got "
                             f"{c.get('status')}/{c.get('reason')} ({c.get('message')})")
        last = diffs
        return None if diffs else got

    try:
        return wait_for(check, timeout, what=f"{kind} {ns}/{name}")
    except AssertionError:
        raise AssertionError(f"{kind} {ns}/{name} status after {timeout}s: " + "; ".join(last)) from None


def events_for(api: Api, ns: str, kind: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in api.events(ns)
            if e["involvedObject"].get("kind") == kind and e["involvedObject"].get("name") == name
            and e.get("reason") == reason]


def expect_event(api: Api, ns: str, kind: str, name: str, reason: str, type_: str = "Warning",
                 contains: str = "") -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for e in events_for(api, ns, kind, name, reason):
            if e.get("type") == type_ and contains in e.get("message", ""):
                return e
        return None

    return wait_for(found, WAIT, what=f"a {type_} Event {reason} on {kind} {name}")
