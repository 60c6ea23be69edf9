"""The binary provider's pure parts (no Go, no network) and the control plane's certificates."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from stargate_operator.localcp import binaries, pki
from stargate_operator.localcp.binaries import BinaryError, kubernetes_gomod
from stargate_operator.localcp.versions import ETCD_VERSION, KUBERNETES_VERSION

UPSTREAM = """module k8s.io/kubernetes

go 1.25.0

godebug default=go1.25

require (
\tgithub.com/spf13/cobra v1.9.1
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/cri-client => ./staging/src/k8s.io/cri-client
\tgithub.com/some/fork => github.com/other/fork v1.2.3
)
"""


def test_kubernetes_gomod_pins_every_staging_module_to_its_published_version() -> None:
    out = kubernetes_gomod("v1.37.2", UPSTREAM)
    assert "require k8s.io/kubernetes v1.37.2" in out
    assert "go 1.25.0" in out
    for mod in ("k8s.io/api", "k8s.io/apiserver", "k8s.io/client-go", "k8s.io/cri-client"):
        assert f"\t{mod} => {mod} v0.37.2" in out
    assert "github.com/some/fork" not in out, "only staging replaces are carried over"
    assert "./staging" not in out


@pytest.mark.parametrize("version", ["1.37.2", "v2.0.0", "v1.37", "v1.37.2-rc.0", ""])
def test_kubernetes_gomod_refuses_odd_versions(version: str) -> None:
    with pytest.raises(ValueError, match=r"v1\.X\.Y"):
        kubernetes_gomod(version, UPSTREAM)


def test_kube_apiserver_is_stamped_with_its_real_version() -> None:
    flags = binaries.kubernetes_ldflags("v1.37.2")
    assert "-X k8s.io/component-base/version.gitVersion=v1.37.2" in flags
    assert "-X k8s.io/component-base/version.gitMinor=37" in flags
    with pytest.raises(ValueError):
        binaries.kubernetes_ldflags("1.37")


def test_helm_is_stamped_with_its_release_and_the_kubernetes_version_it_assumes_offline() -> None:
    gomod = ("module helm.sh/helm/v3\n\ngo 1.24\n\n"
             "require (\n\tk8s.io/api v0.34.0\n\tk8s.io/client-go v0.34.0\n)\n")
    assert binaries.client_go_version(gomod) == "v0.34.0"
    flags = binaries.helm_ldflags("v3.19.0", binaries.client_go_version(gomod)).split(" -X ")
    assert "helm.sh/helm/v3/internal/version.version=v3.19.0" in flags
    # What helm's own Makefile sets from its client-go: template and lint assume Kubernetes 1.34.
    for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        assert f"{pkg}.k8sVersionMajor=1" in flags and f"{pkg}.k8sVersionMinor=34" in flags
    with pytest.raises(ValueError):
        binaries.helm_ldflags("v3.19.0", "1.34")
    with pytest.raises(ValueError, match="client-go"):
        binaries.client_go_version("module x\n")


def test_kubernetes_gomod_notices_a_changed_layout() -> None:
    with pytest.raises(ValueError, match="staging"):
        kubernetes_gomod("v1.37.2", "module k8s.io/kubernetes\n\ngo 1.25\n")


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_kubebuilder_assets_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api, etcd = _exe(tmp_path / "kube-apiserver"), _exe(tmp_path / "etcd")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    assert binaries.ensure_control_plane() == binaries.Binaries(api, etcd)


def test_incomplete_kubebuilder_assets_say_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _exe(tmp_path / "etcd")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(BinaryError, match="kube-apiserver"):
        binaries.ensure_control_plane()


def test_cached_binaries_are_used_without_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("STARGATE_CACHE_DIR", str(tmp_path))
    rev = binaries.BUILD_REVISION
    api = _exe(tmp_path / "bin" / f"kube-apiserver-{KUBERNETES_VERSION}-b{rev}" / "kube-apiserver")
    etcd = _exe(tmp_path / "bin" / f"etcd-{ETCD_VERSION}-b{rev}" / "etcd")

    def no_build(*args: object) -> None:
        raise AssertionError("must not build when the cache has the binary")

    monkeypatch.setattr(binaries, "_build_kube_apiserver", no_build)
    monkeypatch.setattr(binaries, "_build_plain", no_build)
    assert binaries.ensure_control_plane() == binaries.Binaries(api, etcd)


def test_the_nodes_binaries_are_cached_beside_kube_apiserver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARGATE_CACHE_DIR", str(tmp_path))
    rev = binaries.BUILD_REVISION
    built: list[list[str]] = []

    def build(commands: list[str], out: Path, note: str) -> None:
        built.append(commands)
        for c in commands:
            _exe(out / c)

    monkeypatch.setattr(binaries, "_build_kubernetes", build)
    # kubelet cached already: only the other two are built, in one go.
    kubelet = _exe(tmp_path / "bin" / f"kubelet-{KUBERNETES_VERSION}-b{rev}" / "kubelet")
    got = binaries.ensure_node()
    assert built == [["kube-controller-manager", "kube-scheduler"]]
    assert got.kubelet == kubelet
    scheduler = tmp_path / "bin" / f"kube-scheduler-{KUBERNETES_VERSION}-b{rev}" / "kube-scheduler"
    assert got.kube_scheduler == scheduler
    assert binaries.ensure_node() == got and len(built) == 1  # the second call builds nothing


def test_missing_go_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    real_exists = os.path.exists
    monkeypatch.setattr(
        os.path, "exists", lambda p: False if "go/bin/go" in str(p) else real_exists(p)
    )
    with pytest.raises(BinaryError, match="Go toolchain") as e:
        binaries._go()
    assert "KUBEBUILDER_ASSETS" in str(e.value)


def test_interrupted_build_leaves_no_binary_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARGATE_CACHE_DIR", str(tmp_path))

    def failing_build(dest: Path) -> None:
        dest.write_text("half")
        raise BinaryError("compile failed")

    with pytest.raises(BinaryError):
        binaries._ensure("thing", "v1.0.0", failing_build)
    assert not (tmp_path / "bin" / "thing-v1.0.0" / "thing").exists()


# Certificates of the local control plane (localcp/pki.py): pure, so tested here.
def test_pki_admin_is_in_system_masters_and_serving_cert_names_loopback(tmp_path: Path) -> None:
    p = pki.generate(tmp_path)
    ca = x509.load_pem_x509_certificate(p.ca_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(p.admin_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(p.serving_cert.read_bytes())
    for cert in (admin, serving):
        cert.verify_directly_issued_by(ca)
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(p.admin_key.stat().st_mode) == 0o600


def test_control_plane_fixture_fails_rather_than_skips_without_binaries(tmp_path: Path) -> None:
    """Integration tests must never pass by skipping: no binaries is an error that says what is missing."""
    tests = Path(__file__).resolve().parents[1]
    env = dict(os.environ, KUBEBUILDER_ASSETS=str(tmp_path))  # an empty folder: nothing to run
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tests.parent),
         f"{tests}/integration/test_control_plane.py::test_every_crd_is_established"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tests.parent,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "1 error" in out and "skipped" not in out, out
    assert "binaries are missing" in out and "kube-apiserver" in out, out
