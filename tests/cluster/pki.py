"""Certificates for a control plane that only listens on 127.0.0.1.

Kubernetes 1.20 insists on TLS between its parts and on a service-account signing key and
issuer; identities come from certificate subjects (CN = user, O = groups). Written once per
cluster state dir with `cryptography` (already a dependency of the Snowflake connector).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Client identities: file stem -> (CN, O). system:masters bypasses RBAC (admin and the
#: apiserver's kubelet client); the rest get their bootstrap ClusterRoles by name.
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("snowtrain-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
    "kubelet": ("system:node:localhost", "system:nodes"),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
    # Bound to the bootstrap ClusterRole system:node-proxier by name.
    "kube-proxy": ("system:kube-proxy", None),
}

SERVER_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVER_IPS = ("127.0.0.1", "10.96.0.1")


@dataclass(frozen=True)
class Pki:
    """Paths of the generated material inside one directory."""

    root: Path

    def crt(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    @property
    def ca(self) -> Path:
        return self.crt("ca")

    @property
    def sa_key(self) -> Path:
        return self.key("sa")

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _sign(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
    client: bool = False,
    server_ips: tuple[str, ...] = SERVER_IPS,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in SERVER_DNS]
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), False)
    return builder.sign(issuer_key, hashes.SHA256())


def _complete(pki: Pki, server_ips: tuple[str, ...]) -> bool:
    """Every file present, and the API server's certificate names every address it serves."""
    needed = [pki.ca, pki.sa_pub, pki.crt("apiserver"), *(pki.crt(n) for n in CLIENTS)]
    if not all(p.exists() for p in needed):
        return False
    cert = x509.load_pem_x509_certificate(pki.crt("apiserver").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return set(server_ips) <= have


def ensure(root: Path, extra_server_ips: tuple[str, ...] = ()) -> Pki:
    """Create the CA, serving and client certificates and SA keys unless present (a state
    dir from an older layout, missing an identity or an address, is issued anew)."""
    pki = Pki(root)
    server_ips = (*SERVER_IPS, *extra_server_ips)
    if _complete(pki, server_ips):
        return pki
    root.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("snowtrain-local-ca")
    ca_cert = _sign(ca_name, ca_key, ca_name, ca_key, ca=True)
    _write_key(pki.key("ca"), ca_key)
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(name: str, subject: x509.Name, *, server: bool, client: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(
            subject, key, ca_name, ca_key, server=server, client=client, server_ips=server_ips
        )
        _write_key(pki.key(name), key)
        pki.crt(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    issue("apiserver", _name("kube-apiserver"), server=True, client=False)
    issue("kubelet-serving", _name("localhost"), server=True, client=False)
    for name, (cn, org) in CLIENTS.items():
        issue(name, _name(cn, org), server=False, client=True)

    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa)
    pki.sa_pub.write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
