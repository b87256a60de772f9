"""The admission webhook's TLS material: one CA and one serving certificate for all replicas.

Every replica serves the webhook behind one Service, so they must present the same
certificate and the API server must trust one CA bundle. The material lives in one Secret:
the first replica that finds it empty issues it, the others (and later restarts) read it, and
whoever finds it close to expiry renews it. Writes carry the ``resourceVersion`` they read, so
two replicas racing to issue or renew cannot both win: the loser re-reads.

A renewal keeps the CA (valid for ten years) and issues a new serving certificate, so the
``caBundle`` in the webhook configuration does not change and no replica is ever untrusted.
When the CA itself nears its end, the new CA is added to the bundle beside the old one until
the old one expires.

Pure functions here (issue, check, bundle); the Kubernetes calls are in
:mod:`snowtrain.operator.webhook_tls`.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = datetime.timedelta(days=3650)
SERVING_LIFETIME = datetime.timedelta(days=365)
RENEW_SERVING_BEFORE = datetime.timedelta(days=30)
RENEW_CA_BEFORE = datetime.timedelta(days=365)

CA_KEY = "ca.crt"
CA_PRIVATE_KEY = "ca.key"
CERT_KEY = "tls.crt"
PRIVATE_KEY = "tls.key"
KEYS = (CA_KEY, CA_PRIVATE_KEY, CERT_KEY, PRIVATE_KEY)


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes as stored in the Secret: the CA bundle (newest first), the CA's key, and the
    serving certificate and key."""

    ca_bundle: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    def as_secret_data(self) -> dict[str, bytes]:
        return {
            CA_KEY: self.ca_bundle,
            CA_PRIVATE_KEY: self.ca_key,
            CERT_KEY: self.cert,
            PRIVATE_KEY: self.key,
        }

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> TlsMaterial | None:
        """None when any part is missing (an empty Secret the chart created)."""
        if not all(data.get(k) for k in KEYS):
            return None
        return cls(data[CA_KEY], data[CA_PRIVATE_KEY], data[CERT_KEY], data[PRIVATE_KEY])


def service_hostnames(service: str, namespace: str) -> list[str]:
    """Every name the API server may verify when it calls a webhook Service."""
    return [
        f"{service}.{namespace}.svc",
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _san(host: str) -> x509.GeneralName:
    """An IP address SAN for an address (a webhook reached by URL), a DNS name otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_ca(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "snowtrain-webhook-ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _serving(
    hostnames: list[str],
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + SERVING_LIFETIME, ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hostnames]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _bundle(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem) if pem.strip() else []


def issue(hostnames: list[str], now: datetime.datetime | None = None) -> TlsMaterial:
    """A new CA and a serving certificate for ``hostnames``."""
    now = now or datetime.datetime.now(datetime.UTC)
    ca, ca_key = _new_ca(now)
    cert, key = _serving(hostnames, ca, ca_key, now)
    return TlsMaterial(_pem_cert(ca), _pem_key(ca_key), _pem_cert(cert), _pem_key(key))


def renewal_reason(
    material: TlsMaterial | None, hostnames: list[str], now: datetime.datetime | None = None
) -> str | None:
    """Why the material must be (re)issued, or None while it is good."""
    if material is None:
        return "no certificate yet"
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        cas = _bundle(material.ca_bundle)
        cert = x509.load_pem_x509_certificate(material.cert)
    except ValueError:
        return "the stored certificate cannot be read"
    if not cas or cas[0].not_valid_after_utc - now < RENEW_CA_BEFORE:
        return "the CA expires within a year"
    if cert.not_valid_after_utc - now < RENEW_SERVING_BEFORE:
        return "the serving certificate expires within 30 days"
    names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    if names != {_san(h) for h in hostnames}:
        return "the serving certificate names another Service"
    return None


def renew(
    material: TlsMaterial | None, hostnames: list[str], now: datetime.datetime | None = None
) -> TlsMaterial:
    """New material: a new serving certificate from the same CA while the CA has more than a
    year left; otherwise a new CA too, bundled before the old one until the old one expires."""
    now = now or datetime.datetime.now(datetime.UTC)
    if material is None:
        return issue(hostnames, now)
    try:
        cas = _bundle(material.ca_bundle)
        ca_key = serialization.load_pem_private_key(material.ca_key, None)
    except ValueError:
        return issue(hostnames, now)
    ca_has_time = bool(cas) and cas[0].not_valid_after_utc - now >= RENEW_CA_BEFORE
    if ca_has_time and isinstance(ca_key, ec.EllipticCurvePrivateKey):
        cert, key = _serving(hostnames, cas[0], ca_key, now)
        return TlsMaterial(material.ca_bundle, material.ca_key, _pem_cert(cert), _pem_key(key))
    fresh = issue(hostnames, now)
    still_valid = [c for c in cas if c.not_valid_after_utc > now]
    bundle = fresh.ca_bundle + b"".join(_pem_cert(c) for c in still_valid)
    return TlsMaterial(bundle, fresh.ca_key, fresh.cert, fresh.key)
