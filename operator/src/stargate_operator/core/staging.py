"""Lower before raise: how a change of limits is staged so that no constraint is overdrawn on the way.

Agents apply a new limit when they read it, each at its own moment. Were a change written at once,
a node raised beneath a PDU could draw its new limit while a node lowered beneath the same PDU still
draws its old one, and the two together exceed both the old and the new allowance. So a change goes
in two phases:

1. every node whose limit goes down is written its new limit at once (`min(old, new)` for every
   node of every changed slice: a node going up keeps its old limit for now);
2. the raises beneath a constraint are written once every lowered node beneath it is confirmed (its
   agent reports an enforced limit at or below the new one), or once the raises would keep the
   constraint within its allowance even with every unconfirmed node at its old limit, or after
   `raise_after` seconds (the caller posts an Event naming the constraints it overrode).

Until then an unconfirmed lowered node counts at its old limit. The invariant, for every constraint
and at every instant: the sum of the limits its agents enforce is at most the larger of its old and
its new allowance (raises forced by `raise_after` aside).

Watts here are per node, `gpus * limit`; a node's base power is the same on both sides and cancels.
A node without an agent's report (`enforced` has no entry) enforces nothing that could be waited
for, and is not waited for. Pure: the pending lowerings and the time raises started waiting are
inputs and outputs, kept by the caller between calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Staged:
    # Node -> the limit to hold now (to write where it differs from what is held).
    limits: dict[str, int]
    # Lowered nodes -> their limit before the lowering (the caller passes it back): those not confirmed
    # yet, and while raises wait every node lowered in the change.
    pending: dict[str, int]
    # When raises started waiting (None: none waits); the caller passes it back.
    waiting_since: float | None
    # Nodes whose raise waits.
    held_back: int = 0
    # Constraints whose raises went after `raise_after` although lowered nodes beneath them were
    # not confirmed (for an Event).
    forced: tuple[str, ...] = ()
    # When time alone changes the result (raise_after passing); None: nothing waits.
    next_at: float | None = None
    # Constraint -> its unconfirmed lowered nodes, where raises wait on them.
    blocked: dict[str, int] = field(default_factory=dict)


def confirmed(limit: int, enforced: int | None) -> bool:
    """A node is confirmed at `limit` when its agent reports it enforces no more (or has no agent)."""
    return enforced is None or enforced <= limit


def stage(
    target: Mapping[str, int],
    held: Mapping[str, int],
    enforced: Mapping[str, int],
    gpus: Mapping[str, int],
    above: Mapping[str, Sequence[str]],
    pending: Mapping[str, int],
    waiting_since: float | None,
    now: float,
    raise_after: float,
) -> Staged:
    """The limits to hold now, per node, for the `target` limits.

    `held`: what the nodes' slices hold now (a node absent there is new: its target goes at once).
    `enforced`: per node, the limit its agent reports in force (absent: no agent report).
    `gpus`: per node, its GPU count. `above`: per node, the names of the constraints above it (the
    site, every power or cooling domain on its rack's path, its rack). `pending`: the last call's."""
    out: dict[str, int] = {}
    olds: dict[str, int] = {}  # nodes lowered in this change -> their limit before it
    raising: list[str] = []
    for node, new in target.items():
        now_held = held.get(node)
        if now_held is None:
            out[node] = new
            continue
        was = pending.get(node)
        if new < now_held:
            out[node] = new
            olds[node] = now_held if was is None else max(was, now_held)
        else:
            out[node] = now_held
            if new > now_held:
                raising.append(node)
            if was is not None and was > now_held:
                olds[node] = was  # lowered earlier in this change
    # Unconfirmed lowered nodes: their agents may still enforce their old limit.
    still = {n: old for n, old in olds.items() if not confirmed(out[n], enforced.get(n))}
    if not raising or not still:
        for node in raising:
            out[node] = target[node]
        return Staged(out, still, None)
    # Per constraint: the worst case with every raise beneath it written (each unconfirmed lowered
    # node at its old limit), against the larger of its old and new allowance.
    worst: dict[str, int] = {}
    old_sum: dict[str, int] = {}
    new_sum: dict[str, int] = {}
    unconfirmed: dict[str, int] = {}
    raise_set = set(raising)
    for node, new in target.items():
        g = gpus.get(node, 1)
        was = olds.get(node)
        now_held = out[node]
        if node in still:
            w_worst = w_old = still[node]
        elif was is not None:
            w_worst, w_old = now_held, was  # lowered and confirmed
        elif node in raise_set:
            w_worst, w_old = new, now_held
        else:
            w_worst = w_old = now_held
        for c in above.get(node, ()):
            worst[c] = worst.get(c, 0) + g * w_worst
            old_sum[c] = old_sum.get(c, 0) + g * w_old
            new_sum[c] = new_sum.get(c, 0) + g * new
            if node in still:
                unconfirmed[c] = unconfirmed.get(c, 0) + 1
    blocked = {c: n for c, n in unconfirmed.items() if worst[c] > max(old_sum[c], new_sum[c])}
    if not blocked:
        for node in raising:
            out[node] = target[node]
        return Staged(out, still, None)
    since = now if waiting_since is None else waiting_since
    if now - since >= raise_after:
        for node in raising:
            out[node] = target[node]
        return Staged(out, still, None, forced=tuple(sorted(blocked)), blocked=blocked)
    # Raises still wait: every node lowered in this change keeps its old limit on record, so that the
    # old allowance of each constraint stays what it was.
    waiting = 0
    for node in raising:
        if any(c in blocked for c in above.get(node, ())):
            waiting += 1
        else:
            out[node] = target[node]
    return Staged(out, olds, since, held_back=waiting, next_at=since + raise_after, blocked=blocked)
