"""The smallest JSON merge patch that turns the current status into the desired one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Status fields owned by someone else (the node agent): never touched by the operator's patches.
FOREIGN_FIELDS = frozenset({"telemetry"})


def merge_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any],
                foreign: frozenset[str] = FOREIGN_FIELDS) -> dict[str, Any]:
    """RFC 7386 merge patch from `current` to `desired`; empty when nothing differs.

    Keys in `current` that `desired` lacks are removed (null), except the `foreign` ones at the top
    level. Lists (conditions) are replaced whole, as merge patch requires.
    """
    current = current or {}
    patch: dict[str, Any] = {}
    for key, want in desired.items():
        have = current.get(key)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            sub = merge_patch(have, want, frozenset())
            if sub:
                patch[key] = sub
        elif have != want or key not in current:
            patch[key] = want
    for key in current:
        if key not in desired and key not in foreign and current[key] is not None:
            patch[key] = None
    return patch


def apply_merge_patch(target: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: `patch` applied to `target` (RFC 7386), `target` left untouched."""
    out = dict(target or {})
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            existing = out.get(key)
            out[key] = apply_merge_patch(existing if isinstance(existing, Mapping) else None, value)
        else:
            out[key] = value
    return out
