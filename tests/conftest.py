"""Shared fixtures. Integration tests run against a real kube-apiserver and etcd.

Fixtures (use them by name; mark the test module ``pytestmark = pytest.mark.integration``):

``control_plane`` (session)
    A started :class:`stargate_operator.localcp.controlplane.LocalControlPlane` with the CRDs of
    ``crds/`` installed and Established. One per test session. Useful members: ``kubeconfig``
    (admin, ``system:masters``), ``server``, ``ca_file``, ``env()`` (environment with KUBECONFIG for a
    subprocess such as the operator), ``create_token(sa, namespace)`` and
    ``write_token_kubeconfig(path, token)`` (run something with a ServiceAccount's RBAC),
    ``restart_apiserver(downtime=0, kill=False)``, ``stop_apiserver()``/``start_apiserver()``.
    If kube-apiserver or etcd cannot be provided (no cache, no ``KUBEBUILDER_ASSETS``, no Go to build
    them), the fixture FAILS and says what is missing: these tests are never silently skipped.

``kubectl`` (session)
    A :class:`helpers.kube.Kubectl`: ``kubectl("get", "racks", "-n", ns)`` returns a
    ``CompletedProcess[str]`` and raises ``KubectlError`` (message includes stderr) on failure unless
    ``check=False``. Also ``kubectl.json(...)``, ``kubectl.apply(manifest, namespace=ns,
    check=False)`` (server-side, ``--validate=strict``; manifest as dict, list or YAML) and
    ``kubectl.as_user(kubeconfig)``.

``namespace`` (function)
    Name of a fresh namespace for this test; emptied and deleted afterwards (finalizers removed:
    nothing else would, as the local control plane has no controller manager).

Helpers for other tests: ``from helpers.kube import Kubectl, create_namespace, purge_namespace,
namespace_name, to_yaml``; ``control_plane.api(method, path, body)`` for a REST call without kubectl
(``tests/`` is on ``sys.path`` because this conftest lives there).

``real_node`` (session)
    A single-node Kubernetes on this machine (``helpers.node.RealNode``: ``cp``, ``node``,
    ``kubectl(...)``, ``helm(...)``); ``helpers.node.real_node_cluster`` starts one with other labels
    or taints. Tests using it are marked ``node``; ``make test E2E=0`` deselects them.

A first run builds kube-apiserver and etcd from their Go modules (minutes, once; cached under
``~/.cache/stargate-operator``; progress shown even under capture). ``make tools`` does that ahead of
time. The servers' logs, certificates and kubeconfig of a session stay under pytest's temporary
folder (``.../pytest-of-<user>/pytest-<n>/control-plane0/``) for debugging.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.kube import Kubectl, create_namespace, namespace_name, purge_namespace
from stargate_operator.localcp.binaries import BinaryError, ensure_control_plane, ensure_kubectl
from stargate_operator.localcp.controlplane import LocalControlPlane


@pytest.fixture(scope="session")
def control_plane(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalControlPlane]:
    # A first run builds the binaries for minutes; show its progress instead of capturing it.
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    uncaptured = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    try:
        with uncaptured:
            binaries = ensure_control_plane()
        kubectl = ensure_kubectl()
    except BinaryError as e:
        pytest.fail(f"the local control plane's binaries are missing: {e}", pytrace=False)
    # Under pytest's temporary folder (kept for the last few runs), so that the servers' logs are
    # still there to read after a failure.
    workdir = tmp_path_factory.mktemp("control-plane")
    with LocalControlPlane(workdir, binaries=binaries, kubectl=kubectl) as cp:
        cp.apply_crds()
        yield cp


@pytest.fixture(scope="session")
def kubectl(control_plane: LocalControlPlane) -> Kubectl:
    return Kubectl(control_plane)


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = namespace_name(request.node.name)
    create_namespace(kubectl, name)
    yield name
    purge_namespace(kubectl, name)


# --------------------------------------------------------------------------- the real node (e2e)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked `node` run last, so that the session's node (about 850 MiB and a kubelet's
    housekeeping) is up only while they run; `make test E2E=0` (STARGATE_E2E=0) deselects them,
    visibly."""
    from helpers.node import OPT_OUT_VARIABLE, opted_out

    kept = [i for i in items if i.get_closest_marker("node") is None]
    dropped = [i for i in items if i.get_closest_marker("node") is not None]
    if not opted_out():
        items[:] = kept + dropped
        return
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        print(f"\n{OPT_OUT_VARIABLE}=0: {len(dropped)} tests on the real node deselected")


@pytest.fixture(scope="session")
def real_node(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A single-node Kubernetes on this machine (helpers.node.RealNode): control plane in node mode,
    containerd, kubelet, controller manager, scheduler, cluster DNS, the operator image imported.
    Fails, saying what is missing, on a machine that cannot host it (opt out: `make test E2E=0`)."""
    from helpers.node import real_node_cluster
    from stargate_operator.localcp.images import ImageError
    from stargate_operator.localcp.node import NodeUnavailable

    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    uncaptured = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    try:
        with uncaptured:
            cm = real_node_cluster(tmp_path_factory.mktemp("real-node"))
            rn = cm.__enter__()
    except (NodeUnavailable, BinaryError, ImageError) as e:
        pytest.fail(f"{e}\n(opt out of the tests on a real node with `make test E2E=0`)", pytrace=False)
    try:
        yield rn
    finally:
        cm.__exit__(None, None, None)
