"""Lower before raise (core/staging.py), against a model of agents that apply what they read at
random moments: at every step, for every constraint, the sum of the limits its agents enforce is at
most the larger of its old and its new allowance; and every node converges to its new limit."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stargate_operator.core.staging import stage

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RAISE_AFTER = 30.0


Change = tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, tuple[str, ...]]]


@st.composite
def changes(draw: st.DrawFn) -> Change:
    """Old and new limits, GPU counts, and the constraints above each node (the site, a PDU, a CDU)."""
    n = draw(st.integers(1, 12))
    nodes = [f"n{i}" for i in range(n)]
    old = {x: draw(st.integers(100, 700)) for x in nodes}
    new = {x: draw(st.integers(100, 700)) for x in nodes}
    gpus = {x: draw(st.integers(1, 8)) for x in nodes}
    above = {x: ("site", f"pdu{draw(st.integers(0, 2))}",
                 *((f"cdu{draw(st.integers(0, 1))}",) if draw(st.booleans()) else ())) for x in nodes}
    return old, new, gpus, above


def allowance(limits: dict[str, int], gpus: dict[str, int],
              above: dict[str, tuple[str, ...]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for node, limit in limits.items():
        for c in above[node]:
            out[c] = out.get(c, 0) + gpus[node] * limit
    return out


@PROPS
@given(changes(), st.lists(st.lists(st.booleans(), min_size=12, max_size=12), max_size=8))
def test_no_constraint_is_overdrawn_on_the_way(change: Change, rounds: list[list[bool]]) -> None:
    old, new, gpus, above = change
    bound = {c: max(a, b) for (c, a), b in zip(allowance(old, gpus, above).items(),
                                               allowance(new, gpus, above).values(), strict=True)}
    held = dict(old)  # what the slices hold
    applied = dict(old)  # what each agent enforces
    nodes = sorted(old)
    pending: dict[str, int] = {}
    since = None
    now = 0.0
    for step in range(len(rounds) + 4):
        enforced = dict(applied)  # every agent reports what it enforces
        staged = stage(new, held, enforced, gpus, above, pending, since, now, RAISE_AFTER)
        assert not staged.forced  # the clock never reaches raise_after here
        held, pending, since = staged.limits, staged.pending, staged.waiting_since
        for x in nodes:
            assert held[x] <= max(old[x], new[x])
        # the worst instant: every agent that may apply the new value has, none of the others
        worst = {x: max(applied[x], held[x]) for x in nodes}
        for c, total in allowance(worst, gpus, above).items():
            assert total <= bound[c], (c, total, bound[c], step)
        # agents apply: some now (per the round), all after the rounds run out
        choice = rounds[step] if step < len(rounds) else [True] * 12
        for i, x in enumerate(nodes):
            if choice[i]:
                applied[x] = held[x]
        now += 1.0
    assert held == new and applied == new


@PROPS
@given(changes())
def test_raises_go_after_raise_after_when_nothing_confirms(change: Change) -> None:
    old, new, gpus, above = change
    enforced = dict(old)  # agents that never apply anything
    first = stage(new, old, enforced, gpus, above, {}, None, 0.0, RAISE_AFTER)
    for x in old:
        assert first.limits[x] == min(old[x], new[x]) or first.limits[x] == new[x]
    later = stage(new, first.limits, enforced, gpus, above, first.pending, first.waiting_since, 10.0,
                  RAISE_AFTER)
    if first.held_back:
        assert first.next_at == RAISE_AFTER and later.held_back == first.held_back
    last = stage(new, later.limits, enforced, gpus, above, later.pending, later.waiting_since, RAISE_AFTER,
                 RAISE_AFTER)
    assert last.limits == new
    assert bool(last.forced) == bool(first.held_back)


def test_a_rebalance_beneath_one_pdu_waits_for_the_lowered_node() -> None:
    old, new = {"a": 700, "b": 300}, {"a": 300, "b": 700}
    gpus = {"a": 8, "b": 8}
    above = {"a": ("site", "pdu"), "b": ("site", "pdu")}
    s = stage(new, old, {"a": 700, "b": 300}, gpus, above, {}, None, 0.0, RAISE_AFTER)
    assert s.limits == {"a": 300, "b": 300} and s.pending == {"a": 700} and s.held_back == 1
    assert s.blocked == {"site": 1, "pdu": 1}
    s = stage(new, s.limits, {"a": 700, "b": 300}, gpus, above, s.pending, s.waiting_since, 5.0, RAISE_AFTER)
    assert s.limits == {"a": 300, "b": 300}
    s = stage(new, s.limits, {"a": 300, "b": 300}, gpus, above, s.pending, s.waiting_since, 6.0, RAISE_AFTER)
    assert s.limits == new and not s.pending and s.waiting_since is None


def test_raises_beneath_another_pdu_do_not_wait_when_the_site_has_room() -> None:
    # a is lowered beneath pdu1; b raised beneath pdu2: the site's old allowance covers a at its old
    # limit and b at its new one, so b need not wait.
    old, new = {"a": 700, "b": 300, "c": 700}, {"a": 500, "b": 400, "c": 500}
    gpus = {"a": 1, "b": 1, "c": 1}
    above = {"a": ("site", "pdu1"), "b": ("site", "pdu2"), "c": ("site", "pdu2")}
    s = stage(new, old, {"a": 700, "b": 300, "c": 700}, gpus, above, {}, None, 0.0, RAISE_AFTER)
    # pdu2: c unconfirmed at 700 plus b at 400 = 1100 > max(1000, 900): b waits for c
    assert s.limits == {"a": 500, "b": 300, "c": 500} and s.held_back == 1
    s = stage(new, s.limits, {"a": 700, "b": 300, "c": 500}, gpus, above, s.pending, s.waiting_since, 1.0,
              RAISE_AFTER)
    assert s.limits == new  # c confirmed: pdu2 is clear, and the site has room for a at 700
