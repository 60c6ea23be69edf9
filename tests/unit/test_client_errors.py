"""How the clients' errors recognise a create refused because its namespace is going or gone."""

from __future__ import annotations

from stargate_operator.client import ApiError


def _status(code: int, details: dict[str, object]) -> ApiError:
    return ApiError(code, "refused", body={"kind": "Status", "code": code, "details": details})


def test_a_create_in_a_namespace_that_no_longer_exists_reads_as_gone() -> None:
    # What the API server answers for an Event posted into a deleted namespace.
    e = _status(404, {"name": "t-site", "kind": "namespaces"})
    assert e.namespace_gone and not e.namespace_terminating


def test_an_object_not_found_is_not_a_namespace_gone() -> None:
    assert not _status(404, {"name": "rack-a", "group": "stargate.dev", "kind": "racks"}).namespace_gone
    assert not ApiError(404, "not found").namespace_gone  # no Status body at all


def test_a_terminating_namespace_is_its_own_cause() -> None:
    e = _status(403, {"causes": [{"reason": "NamespaceTerminating"}]})
    assert e.namespace_terminating and not e.namespace_gone
