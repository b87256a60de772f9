"""Validating admission webhook (kopf): bad specs are refused at ``kubectl apply`` with the
field and the reason, and the training part of a started job cannot be edited.

It runs the same :func:`snowtrain.api.validation.parse_job` the operator runs when no webhook
is installed (then the job ends Failed/InvalidSpec), so both paths agree.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from pathlib import Path
from typing import Any

import kopf

from snowtrain.api.kinds import GROUP, VERSION, FineTuneJob, PretrainJob
from snowtrain.api.validation import InvalidJob, immutable_changes, parse_job

from .settings import OperatorSettings


def started(status: dict[str, Any] | None) -> bool:
    """Training started once a Job was created for it (or it already ended)."""
    status = status or {}
    return bool((status.get("job") or {}).get("name")) or status.get("phase") in (
        "Running",
        "Succeeded",
        "Failed",
        "Suspended",
    )


def review(
    operation: str | None, new: dict[str, Any] | None, old: dict[str, Any] | None
) -> list[str]:
    """Problems with an admission request, each ``path: reason`` (empty: allowed). Pure."""
    if operation not in ("CREATE", "UPDATE") or not new:
        return []
    try:
        parse_job({k: v for k, v in new.items() if k != "status"})
    except InvalidJob as exc:
        return [str(e) for e in exc.errors]
    if operation == "UPDATE" and old and started(old.get("status")):
        return [str(e) for e in immutable_changes(old.get("spec") or {}, new.get("spec") or {})]
    return []


def _validate(operation: str | None, new: Any, old: Any, **_: Any) -> None:
    problems = review(operation, dict(new) if new else None, dict(old) if old else None)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


for _kind in (FineTuneJob, PretrainJob):
    kopf.on.validate(
        GROUP, VERSION, _kind.PLURAL, id=f"validate-{_kind.PLURAL}", operations=["CREATE", "UPDATE"]
    )(_validate)


def self_signed_certificate(hostnames: list[str], directory: Path) -> tuple[Path, Path]:
    """A self-signed serving certificate for the webhook (cert, key), with every hostname and
    IP the API server might dial as a SAN. Made with ``cryptography`` (already a dependency of
    the Kubernetes client) rather than kopf's optional certbuilder."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(hostnames):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def configure_admission(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """Serve the webhook over HTTPS and let kopf keep the ValidatingWebhookConfiguration."""
    host = ours.webhook_public_host or (
        "127.0.0.1" if ours.webhook_host in ("0.0.0.0", "::") else ours.webhook_host
    )
    directory = Path(tempfile.mkdtemp(prefix="snowtrain-webhook-"))
    cert, key = self_signed_certificate([host, "localhost", "127.0.0.1"], directory)
    settings.admission.server = kopf.WebhookServer(
        addr=ours.webhook_host,
        port=ours.webhook_port,
        host=host,
        certfile=str(cert),
        pkeyfile=str(key),
        cadata=cert.read_bytes(),
    )
    if ours.webhook_managed_name:
        settings.admission.managed = ours.webhook_managed_name
