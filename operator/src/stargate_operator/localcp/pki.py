"""Certificates and keys for one local control plane run.

One throw-away CA signs both the API server's serving certificate and the admin client certificate,
so that one CA file verifies in both directions. Keys are ECDSA P-256: kube-apiserver accepts them
for serving, for client certificates and for signing service-account tokens (ES256), and they are
generated in a millisecond where RSA takes a noticeable fraction of a second.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ModuleNotFoundError as e:  # not a dependency of the operator itself
    raise ModuleNotFoundError(
        "the local control plane's certificates need cryptography, which comes with the 'demo' extra: "
        "pip install 'stargate-operator[demo]'", name=e.name) from e

# Names a client might use for the API server; in-cluster names too, because the chart's pods (in a
# kind cluster) and service-account tokens refer to them.
SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
ADMIN_USER = "stargate-admin"
ADMIN_GROUP = "system:masters"  # bypasses RBAC: the admin can do everything, as in a kubeadm cluster


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files written by :func:`generate`."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path  # private: signs service-account tokens
    sa_pub: Path  # public: verifies them


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def generate(
    directory: Path, valid_days: int = 30, *, extra_ips: Sequence[str] = ()
) -> Pki:
    """Write a fresh CA, serving and admin certificates and a service-account key pair.

    ``extra_ips``: more addresses the serving certificate covers, for a control plane that pods on a
    real node reach (the node's address and the ``kubernetes`` Service's cluster IP)."""
    directory.mkdir(parents=True, exist_ok=True)
    # Back-date a little: a clock that differs by a second must not make the certificate "not yet valid".
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=valid_days)

    ca_key = _key()
    ca_name = _name("stargate-local-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        subject: x509.Name, usage: x509.ObjectIdentifier, san: x509.SubjectAlternativeName | None
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_encipherment=False, key_cert_sign=False, crl_sign=False,
                    content_commitment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if san is not None:
            b = b.add_extension(san, critical=False)
        return b.sign(ca_key, hashes.SHA256()), key

    serving_cert, serving_key = leaf(
        _name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in SERVING_DNS_NAMES]
            + [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1", *extra_ips)]
        ),
    )
    # kube-apiserver maps a client certificate's CN to the user name and each O to a group.
    admin_cert, admin_key = leaf(_name(ADMIN_USER, ADMIN_GROUP), ExtendedKeyUsageOID.CLIENT_AUTH, None)
    sa_key = _key()

    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    _write_cert(pki.ca_cert, ca_cert)
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.serving_cert, serving_cert)
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.admin_cert, admin_cert)
    _write_key(pki.admin_key, admin_key)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def issue_client(pki: Pki, cert: Path, key: Path, user: str, groups: Sequence[str] = (),
                 valid_days: int = 30) -> None:
    """A client certificate for ``user`` in ``groups`` (the O fields), signed by the run's CA: the
    identities of a real node's kubelet (``system:node:<name>`` in ``system:nodes``, which the Node
    authorizer and NodeRestriction key on) and of the controller manager and scheduler."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    new_key = _key()
    built = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(new_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_cert(cert, built)
    _write_key(key, new_key)
