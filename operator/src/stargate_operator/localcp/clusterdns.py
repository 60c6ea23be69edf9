"""The cluster DNS of the single-node test cluster: ``<service>.<namespace>.svc.<domain>`` -> its IP.

A few dozen lines instead of CoreDNS: pods of the chart need one name (``kubernetes.default.svc``,
which kopf and the Kubernetes clients use in-cluster) and the test's own Services, nothing else.
Every other name gets NXDOMAIN: pods resolve only the cluster's own names, and nothing is forwarded
off the machine. UDP only (answers are one address, far below the 512-byte limit); A records from
the Service's cluster IP, read from the API server on each query (a test cluster sees a handful).

    python -m stargate_operator.localcp.clusterdns --listen 192.0.2.2:53 --server https://... \\
        --ca ca.crt --cert admin.crt --key admin.key
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import ssl
import struct
import sys
import urllib.error
import urllib.request

CLUSTER_DOMAIN = "cluster.local"
_A, _AAAA, _IN = 1, 28, 1
_NOERROR, _FORMERR, _NXDOMAIN, _NOTIMP = 0, 1, 3, 4


def parse_query(packet: bytes) -> tuple[int, int, str, int, int]:
    """(id, flags, name, qtype, end of the question) of a query with one question (pure)."""
    if len(packet) < 12:
        raise ValueError("short packet")
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1:
        raise ValueError("one question expected")
    labels, pos = [], 12
    while True:
        n = packet[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[pos:pos + n].decode("ascii", "replace"))
        pos += n
    qtype, _qclass = struct.unpack("!HH", packet[pos:pos + 4])
    return ident, flags, ".".join(labels).lower(), qtype, pos + 4


def service_of(name: str, domain: str = CLUSTER_DOMAIN) -> tuple[str, str] | None:
    """(namespace, service) that ``name`` names, or None when it names no Service (pure)."""
    parts = name.rstrip(".").split(".")
    suffix = ["svc", *domain.split(".")]
    if len(parts) != 2 + len(suffix) or parts[2:] != suffix:
        return None
    return parts[1], parts[0]


def answer(query: bytes, ip: str | None, rcode: int, end: int, qtype: int) -> bytes:
    """The response to ``query``: its question echoed, one A record when ``ip`` is given (pure)."""
    ident, flags = struct.unpack("!HH", query[:4])
    # QR, the query's opcode and RD, AA (we are the authority for the cluster's names), RA off.
    out_flags = 0x8000 | (flags & 0x7900) | 0x0400 | rcode
    records = b""
    if ip is not None and qtype == _A:
        records = struct.pack("!HHHIH", 0xC00C, _A, _IN, 5, 4) + ipaddress.IPv4Address(ip).packed
    head = struct.pack("!HHHHHH", ident, out_flags, 1, 1 if records else 0, 0, 0)
    return head + query[12:end] + records


class ServiceLookup:
    """Reads a Service's cluster IP from the API server as the given client certificate."""

    def __init__(self, server: str, ca: str, cert: str, key: str) -> None:
        self.server = server.rstrip("/")
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.load_cert_chain(cert, key)

    def cluster_ip(self, namespace: str, service: str) -> str | None:
        url = f"{self.server}/api/v1/namespaces/{namespace}/services/{service}"
        try:
            with urllib.request.urlopen(url, context=self.ctx, timeout=3) as resp:
                ip = json.load(resp).get("spec", {}).get("clusterIP")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        return ip if ip and ip != "None" else None


def serve(sock: socket.socket, lookup: ServiceLookup) -> None:
    while True:
        try:
            packet, peer = sock.recvfrom(512)
        except OSError:  # the socket was closed: the server is being stopped
            return
        try:
            _ident, _flags, name, qtype, end = parse_query(packet)
        except (ValueError, IndexError, struct.error):
            if len(packet) >= 12:
                sock.sendto(packet[:2] + struct.pack("!H", 0x8000 | _FORMERR) + bytes(8), peer)
            continue
        target = service_of(name)
        ip, rcode = None, _NXDOMAIN
        if target is not None:
            try:
                ip = lookup.cluster_ip(*target)
            except OSError as e:  # the API server is away: let the client retry
                print(f"clusterdns: {name}: {e}", file=sys.stderr, flush=True)
                continue
            if ip is not None:
                rcode = _NOERROR
        sock.sendto(answer(packet, ip, rcode, end, qtype), peer)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="DNS for the cluster's Service names (test clusters).")
    p.add_argument("--listen", required=True, help="address:port to answer on, e.g. 192.0.2.2:53")
    p.add_argument("--server", required=True, help="the API server's URL")
    p.add_argument("--ca", required=True, help="CA file that verifies the API server")
    p.add_argument("--cert", required=True, help="client certificate allowed to read Services")
    p.add_argument("--key", required=True, help="its key")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    serve(sock, ServiceLookup(args.server, args.ca, args.cert, args.key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
