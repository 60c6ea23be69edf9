"""Leader election's pure rules (controller/leader.py), as client-go's: who may take the Lease,
what a take, a renewal and a release write, and the configuration's checks. The loop itself runs
against the real API server in tests/integration/test_operator_faults.py."""

from __future__ import annotations

import pytest

from stargate_operator import kinds
from stargate_operator.controller.leader import (
    JITTER_FACTOR,
    ElectionConfig,
    LeaderRecord,
    claimed,
    held_by_another,
    released,
)

T0, T1 = "2026-01-01T12:00:00.000000Z", "2026-01-01T12:00:02.000000Z"


def test_record_round_trips_the_lease_spec() -> None:
    spec = {"holderIdentity": "a", "leaseDurationSeconds": 15, "acquireTime": T0, "renewTime": T1,
            "leaseTransitions": 3}
    assert LeaderRecord.of(spec).spec() == spec
    assert LeaderRecord.of(None) == LeaderRecord()


def test_another_holder_counts_until_its_duration_has_passed_on_our_clock() -> None:
    other = LeaderRecord("b", 15, T0, T0, 0)
    assert held_by_another(other, "a", observed_at=100.0, now=114.9)
    assert not held_by_another(other, "a", observed_at=100.0, now=115.0)
    assert not held_by_another(other, "b", observed_at=100.0, now=101.0)  # our own claim
    assert not held_by_another(LeaderRecord("", 15, T0, T0, 1), "a", 100.0, 101.0)  # released


def test_a_take_sets_acquire_time_and_counts_a_transition_a_renewal_keeps_them() -> None:
    first = claimed(None, "a", 15, T0)
    assert first == LeaderRecord("a", 15, T0, T0, 0)
    renewed = claimed(first, "a", 15, T1)
    assert renewed == LeaderRecord("a", 15, T0, T1, 0)
    taken = claimed(renewed, "b", 15, T1)
    assert taken == LeaderRecord("b", 15, T1, T1, 1)
    # Taking a released Lease is a transition too (client-go counts every take of an existing one).
    assert claimed(released(taken, T1), "a", 15, T1).transitions == 2


def test_release_is_client_gos() -> None:
    assert released(LeaderRecord("a", 15, T0, T0, 4), T1) == LeaderRecord("", 1, T1, T1, 4)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lease_duration": 10, "renew_deadline": 10}, "greater than the renew deadline"),
    ({"renew_deadline": 2, "retry_period": 2}, "1.2 x the retry period"),
    ({"name": kinds.FAILSAFE_LEASE_NAME}, "fail-safe Lease"),
    ({"name": ""}, "needs a Lease name"),
    ({"identity": ""}, "needs an identity"),
])
def test_bad_configuration_is_refused_with_the_reason(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "sg", "namespace": "ops", "identity": "a"}
    with pytest.raises(ValueError, match=message):
        ElectionConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_defaults_let_a_failover_beat_the_agents_failsafe_with_room_to_spare() -> None:
    """The worst takeover (the election's lease, two tries jittered up to 2.2 x the retry period,
    and the fail-safe Lease's renewal period before the kill) stays 8 s or more below the agents'
    fail-safe; client-go's 15 s, 10 s and 2 s left 1.2 s."""
    cfg = ElectionConfig("sg", "ops", "a")
    assert (cfg.lease_duration, cfg.renew_deadline, cfg.retry_period) == (10, 7, 1)
    takeover = (cfg.lease_duration + 2 * (1 + JITTER_FACTOR) * cfg.retry_period
                + kinds.DEFAULT_LEASE_DURATION_SECONDS / 3)
    assert takeover == pytest.approx(19.4)
    assert kinds.DEFAULT_FAILSAFE_AFTER_SECONDS - takeover >= 8
