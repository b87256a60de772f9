"""The webhook's certificate: one CA and serving certificate every replica shares, renewed
before expiry without ever leaving a replica untrusted (snowtrain.operator.certs)."""

from __future__ import annotations

import datetime
import socket
import ssl
import tempfile
import threading
from pathlib import Path

import pytest
from cryptography import x509

from snowtrain.operator import certs

HOSTS = certs.service_hostnames("st-webhook", "ops")
NOW = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)


def _handshake(material: certs.TlsMaterial, server_name: str) -> None:
    """A real TLS handshake: a server presenting the material, a client that trusts only the
    CA bundle and checks the name the API server checks (`<svc>.<ns>.svc`)."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert.write_bytes(material.cert)
        key.write_bytes(material.key)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cadata=material.ca_bundle.decode())
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        errors: list[BaseException] = []

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError) as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname()) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_name) as tls,
            ):
                tls.send(b"x")
        finally:
            thread.join(5)


def test_issued_certificate_is_trusted_for_the_service_name() -> None:
    material = certs.issue(HOSTS)
    _handshake(material, "st-webhook.ops.svc")
    assert certs.renewal_reason(material, HOSTS) is None


def test_another_services_name_is_refused() -> None:
    material = certs.issue(HOSTS)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(material, "other.ops.svc")


def test_material_round_trips_through_the_secret_and_an_empty_secret_is_none() -> None:
    material = certs.issue(HOSTS)
    assert certs.TlsMaterial.from_secret_data(material.as_secret_data()) == material
    assert certs.TlsMaterial.from_secret_data({}) is None
    assert certs.renewal_reason(None, HOSTS) == "no certificate yet"


def test_serving_certificate_is_renewed_from_the_same_ca_before_it_expires() -> None:
    material = certs.issue(HOSTS, NOW)
    later = NOW + certs.SERVING_LIFETIME - datetime.timedelta(days=29)
    assert certs.renewal_reason(material, HOSTS, NOW + datetime.timedelta(days=300)) is None
    assert "30 days" in (certs.renewal_reason(material, HOSTS, later) or "")
    renewed = certs.renew(material, HOSTS, later)
    # Same CA: the caBundle in the webhook configuration need not change.
    assert renewed.ca_bundle == material.ca_bundle
    assert renewed.cert != material.cert
    assert certs.renewal_reason(renewed, HOSTS, later) is None
    # Signed by that CA (a handshake would need the clock at `later`).
    ca = x509.load_pem_x509_certificate(material.ca_bundle)
    x509.load_pem_x509_certificate(renewed.cert).verify_directly_issued_by(ca)


def test_a_ca_near_its_end_is_replaced_and_both_are_trusted_meanwhile() -> None:
    material = certs.issue(HOSTS, NOW)
    late = NOW + certs.CA_LIFETIME - datetime.timedelta(days=100)
    assert "CA" in (certs.renewal_reason(material, HOSTS, late) or "")
    renewed = certs.renew(material, HOSTS, late)
    bundle = x509.load_pem_x509_certificates(renewed.ca_bundle)
    old_ca = x509.load_pem_x509_certificate(material.ca_bundle)
    assert len(bundle) == 2 and bundle[1] == old_ca  # new first, old kept until it expires
    assert certs.renewal_reason(renewed, HOSTS, late) is None


def test_a_certificate_for_another_service_is_reissued() -> None:
    material = certs.issue(certs.service_hostnames("old-name", "ops"))
    assert "another Service" in (certs.renewal_reason(material, HOSTS) or "")
    renewed = certs.renew(material, HOSTS)
    _handshake(renewed, "st-webhook.ops.svc")


def test_unreadable_material_is_reissued() -> None:
    broken = certs.TlsMaterial(b"not pem", b"not pem", b"not pem", b"not pem")
    assert "cannot be read" in (certs.renewal_reason(broken, HOSTS) or "")
    _handshake(certs.renew(broken, HOSTS), "st-webhook.ops.svc")
