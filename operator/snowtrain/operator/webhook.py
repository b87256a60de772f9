"""Validating admission webhook (kopf): bad specs are refused at ``kubectl apply`` with the
field and the reason, and the training part of a started job (everything but the deadline
and the retries of a started BatchPrediction) cannot be edited.

It runs the same :func:`snowtrain.api.validation.parse_job` the operator runs when no webhook
is installed (then the job ends Failed/InvalidSpec), so both paths agree.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client

from snowtrain.api.batch import BatchPrediction
from snowtrain.api.kinds import GROUP, VERSION, AnyJob, FineTuneJob, PretrainJob
from snowtrain.api.schedule import TrainingSchedule
from snowtrain.api.validation import (
    PREDICTION_MUTABLE_AFTER_START,
    InvalidJob,
    immutable_changes,
    parse_resource,
)

from . import certs, metrics
from .policy import policy_errors
from .settings import OperatorSettings
from .webhook_tls import WebhookTls


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
    operation: str | None,
    new: dict[str, Any] | None,
    old: dict[str, Any] | None,
    settings: OperatorSettings | None = None,
) -> list[str]:
    """Problems with an admission request, each ``path: reason`` (empty: allowed). Pure.

    With ``settings``, also what this installation's policy does not allow (the image).
    """
    if operation not in ("CREATE", "UPDATE") or not new:
        return []
    try:
        job = parse_resource({k: v for k, v in new.items() if k != "status"})
    except InvalidJob as exc:
        return [str(e) for e in exc.errors]
    if settings is not None and (denied := policy_errors(job, settings)):
        return [str(e) for e in denied]
    if isinstance(job, TrainingSchedule):
        return []  # every field stays editable: a change applies from the next tick on
    if operation == "UPDATE" and old and started(old.get("status")):
        mutable = PREDICTION_MUTABLE_AFTER_START if isinstance(job, BatchPrediction) else None
        changes = immutable_changes(old.get("spec") or {}, new.get("spec") or {}, mutable)
        return [str(e) for e in changes]
    return []


_POLICY: OperatorSettings | None = None
"""The running operator's settings (set by :func:`configure_admission`)."""


def _validate(
    operation: str | None = None,
    new: kopf.Body | None = None,
    old: kopf.Body | None = None,
    **_: Any,
) -> None:
    problems = review(operation, dict(new) if new else None, dict(old) if old else None, _POLICY)
    obj: Mapping[str, Any] = new or old or {}
    metrics.webhook_decision(str(obj.get("kind", "")), allowed=not problems)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


_KINDS: tuple[type[AnyJob] | type[BatchPrediction] | type[TrainingSchedule], ...] = (
    FineTuneJob,
    PretrainJob,
    BatchPrediction,
    TrainingSchedule,
)

#: kopf serves each handler at ``/<id>``: the paths the webhook configuration calls.
HANDLER_IDS = tuple(f"validate-{kind.PLURAL}" for kind in _KINDS)

for _kind, _id in zip(_KINDS, HANDLER_IDS, strict=True):
    kopf.on.validate(GROUP, VERSION, _kind.PLURAL, id=_id, operations=["CREATE", "UPDATE"])(
        _validate
    )


def write_certificate(hostnames: list[str], directory: Path) -> tuple[Path, Path, bytes]:
    """A fresh CA and serving certificate for ``hostnames`` (names or addresses) written to
    ``directory``: (cert file, key file, CA bundle). For a webhook reached by URL (outside a
    cluster), where no Secret is shared."""
    material = certs.issue(hostnames)
    cert_path, key_path = directory / certs.CERT_KEY, directory / certs.PRIVATE_KEY
    cert_path.write_bytes(material.cert)
    key_path.write_bytes(material.key)
    key_path.chmod(0o600)
    return cert_path, key_path, material.ca_bundle


def configure_admission(
    settings: kopf.OperatorSettings, ours: OperatorSettings, api: client.ApiClient
) -> WebhookTls | None:
    """Serve the webhook over HTTPS.

    In a cluster (``webhook_service_name`` set) the API server calls it through the Service,
    by the configuration the chart installed; the certificate every replica serves comes from
    one Secret (:mod:`.webhook_tls`), and kopf reloads it when the files change. Returns the
    :class:`WebhookTls` to refresh periodically. Outside a cluster, kopf keeps a URL-based
    configuration with a self-signed certificate (development and tests).
    """
    global _POLICY
    _POLICY = ours
    if ours.webhook_service_name:
        if not (ours.webhook_secret_name and ours.pod_namespace):
            raise kopf.PermanentError(
                "SNOWTRAIN_WEBHOOK_SERVICE_NAME needs SNOWTRAIN_WEBHOOK_SECRET_NAME and "
                "SNOWTRAIN_POD_NAMESPACE"
            )
        tls = WebhookTls(
            api,
            namespace=ours.pod_namespace,
            secret=ours.webhook_secret_name,
            service=ours.webhook_service_name,
            configuration=ours.webhook_configuration_name,
            directory=Path(ours.webhook_tls_dir),
            source=ours.webhook_cert_source,
        )
        tls.sync()
        settings.admission.server = kopf.WebhookServer(
            addr=ours.webhook_host,
            port=ours.webhook_port,
            host=tls.hostnames[0],
            certfile=str(tls.certfile),
            pkeyfile=str(tls.keyfile),
            cafile=str(tls.cafile),
            file_check_interval=5.0,
        )
        settings.admission.managed = None  # the chart owns the configuration
        return tls
    host = ours.webhook_public_host or (
        "127.0.0.1" if ours.webhook_host in ("0.0.0.0", "::") else ours.webhook_host
    )
    directory = Path(tempfile.mkdtemp(prefix="snowtrain-webhook-"))
    cert, key, ca = write_certificate([host, "localhost", "127.0.0.1"], directory)
    settings.admission.server = kopf.WebhookServer(
        addr=ours.webhook_host,
        port=ours.webhook_port,
        host=host,
        certfile=str(cert),
        pkeyfile=str(key),
        cadata=ca,
    )
    settings.admission.managed = ours.webhook_managed_name or "validating.snowtrain.io"
    return None
