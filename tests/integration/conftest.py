"""Fixtures of the modules that drive one `stargate-operator run` process per module (their
`operator` fixture says how it is started)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.api import Api
from helpers.operator_process import OperatorProcess
from stargate_operator.localcp.controlplane import LocalControlPlane


@pytest.fixture(scope="module")
def api(control_plane: LocalControlPlane) -> Iterator[Api]:
    client = Api(control_plane)
    yield client
    client.close()


@pytest.fixture
def operator_survives(operator: OperatorProcess) -> Iterator[None]:
    """Whatever a test feeds it, the operator neither dies nor fails a recomputation or a write
    (a module turns it on for every test with `pytest.mark.usefixtures`)."""
    before = operator.log_text().count("failed")
    yield
    assert operator.alive, f"the operator died:\n{operator.log_tail()}"
    log = operator.log_text()
    assert log.count("failed") == before, f"the operator logged failures:\n{operator.log_tail()}"
    assert "Traceback" not in log, operator.log_tail(80)
