"""The real node's pure parts: the cluster DNS's packets, the node's rules and configurations, the
image build's arguments. (The node itself runs in tests/e2e/test_node.py.)"""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import pytest

from stargate_operator.localcp import clusterdns, images, node
from stargate_operator.localcp.controlplane import KUBERNETES_SERVICE_IP


def query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    """A DNS query as glibc's resolver sends it (RD set, one question)."""
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def test_a_query_is_parsed() -> None:
    ident, flags, name, qtype, end = clusterdns.parse_query(query("Kubernetes.Default.svc.cluster.local"))
    assert (ident, flags, name, qtype) == (0x1234, 0x0100, "kubernetes.default.svc.cluster.local", 1)
    assert end == len(query("kubernetes.default.svc.cluster.local"))


@pytest.mark.parametrize("name,expected", [
    ("kubernetes.default.svc.cluster.local", ("default", "kubernetes")),
    ("metrics.stargate-system.svc.cluster.local.", ("stargate-system", "metrics")),
    ("kubernetes.default.svc", None),  # the resolver's search list completes it first
    ("kubernetes.default.svc.stargate-system.svc.cluster.local", None),
    ("pypi.org", None),
    ("a.b.c.svc.cluster.local", None),
])
def test_only_service_names_of_the_cluster_domain_name_a_service(
        name: str, expected: tuple[str, str] | None) -> None:
    assert clusterdns.service_of(name) == expected


def test_an_answer_carries_the_question_and_one_address() -> None:
    q = query("kubernetes.default.svc.cluster.local")
    *_, end = clusterdns.parse_query(q)
    a = clusterdns.answer(q, "10.0.0.1", 0, end, 1)
    ident, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", a[:12])
    assert (ident, qd, an, ns, ar) == (0x1234, 1, 1, 0, 0)
    assert flags & 0x8000 and flags & 0x0100 and flags & 0x000F == 0  # response, RD echoed, NOERROR
    assert a[12:end] == q[12:end]
    assert a[-4:] == socket.inet_aton("10.0.0.1")
    nx = clusterdns.answer(q, None, 3, end, 1)
    assert struct.unpack("!H", nx[2:4])[0] & 0xF == 3 and struct.unpack("!H", nx[6:8])[0] == 0
    # An AAAA question for a Service: no record (the cluster is IPv4), not an error.
    aaaa = clusterdns.answer(query("x.y.svc.cluster.local", 28), "10.0.0.5", 0, end, 28)
    assert struct.unpack("!H", aaaa[6:8])[0] == 0 and struct.unpack("!H", aaaa[2:4])[0] & 0xF == 0


class _Services(clusterdns.ServiceLookup):
    """The API server's answers for the round trip below (the API server itself answers in e2e)."""

    def __init__(self, known: dict[tuple[str, str], str]) -> None:
        self.known = known

    def cluster_ip(self, namespace: str, service: str) -> str | None:
        return self.known.get((namespace, service))


def test_a_round_trip_over_udp() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    lookup = _Services({("default", "kubernetes"): KUBERNETES_SERVICE_IP})
    threading.Thread(target=clusterdns.serve, args=(server, lookup), daemon=True).start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    try:
        client.sendto(query("kubernetes.default.svc.cluster.local"), server.getsockname())
        reply, _ = client.recvfrom(512)
        assert reply[-4:] == socket.inet_aton(KUBERNETES_SERVICE_IP)
        client.sendto(query("pypi.org", ident=7), server.getsockname())
        reply, _ = client.recvfrom(512)
        assert struct.unpack("!HH", reply[:4]) [0] == 7 and struct.unpack("!H", reply[2:4])[0] & 0xF == 3
    finally:
        client.close()
        server.close()


def test_the_rules_keep_the_pod_network_on_the_machine() -> None:
    rules = node.iptables_rules("192.0.2.2", 6443)
    forward = [r for r in rules if r[1:4] == ("filter", "-A", node.FORWARD_CHAIN)]
    # Out of the bridge to anywhere else, and into it from anywhere else: rejected.
    assert forward[1][4:] == ("-i", node.BRIDGE, "-j", "REJECT")
    assert forward[2][4:] == ("-o", node.BRIDGE, "-j", "REJECT")
    dnat = [r for r in rules if "DNAT" in r]
    assert len(dnat) == 1 and f"{KUBERNETES_SERVICE_IP}/32" in dnat[0] and "192.0.2.2:6443" in dnat[0]
    assert not any("MASQUERADE" in r for r in rules)


def test_the_pod_network_does_not_masquerade() -> None:
    (bridge,) = node.cni_config(Path("/x"))["plugins"]
    assert bridge["type"] == "bridge" and bridge["ipMasq"] is False and bridge["bridge"] == node.BRIDGE
    assert bridge["ipam"]["ranges"] == [[{"subnet": node.POD_CIDR}]]


def test_kubelet_and_containerd_carry_what_this_machine_needs() -> None:
    k = node.kubelet_config(ca_file=Path("/ca"), dns="192.0.2.2", runtime=Path("/run/c.sock"),
                            taints=[{"key": "k", "effect": "NoSchedule"}])
    assert k["failCgroupV1"] is False and k["resolvConf"] == "" and k["clusterDNS"] == ["192.0.2.2"]
    assert k["registerWithTaints"] == [{"key": "k", "effect": "NoSchedule"}]
    assert k["authorization"]["mode"] == "Webhook" and k["authentication"]["anonymous"]["enabled"] is False
    c = node.containerd_config(root=Path("/r"), state=Path("/s"), socket=Path("/run/c.sock"),
                               cni_conf_dir=Path("/n"))
    assert "restrict_oom_score_adj = true" in c and f'sandbox_image = "{images.PAUSE_IMAGE}"' in c


def test_the_image_builds_on_the_local_base_with_the_hosts_network() -> None:
    args = images.dockerfile_build_args("stargate.local/python:3.11-bookworm-r1", "x/op:e2e")
    assert args[args.index("--build-arg") + 1] == "PYTHON_IMAGE=stargate.local/python:3.11-bookworm-r1"
    assert "--network=host" in args and args[args.index("-t") + 1] == "x/op:e2e"


def test_a_machine_that_cannot_host_the_node_is_told_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(node.shutil, "which", lambda exe: None if exe == "containerd" else f"/usr/bin/{exe}")
    missing = node.missing_for_node()
    assert any(m.startswith("root") for m in missing), missing
    assert any("containerd (Debian package containerd" in m for m in missing), missing
