"""Keeps the webhook's TLS Secret, the files the webhook server reads, and the caBundle of the
operator's own ValidatingWebhookConfiguration in agreement (see :mod:`.certs` for why one
Secret serves every replica).

Two sources of the material:

- ``operator`` (the default): the operator issues and renews it in the Secret the chart
  created empty, and patches the ``caBundle`` of its own webhook configuration (RBAC allows
  both on those names only);
- ``secret``: someone else writes the Secret (cert-manager's Certificate, with its CA injector
  filling the caBundle); the operator only reads it.

Called at startup (before the webhook server starts) and then periodically from a thread;
kopf's webhook server notices changed files and reloads them.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from . import certs

log = logging.getLogger("snowtrain.operator.webhook")

Source = Literal["operator", "secret"]


class WebhookTlsError(RuntimeError):
    """The material cannot be had (yet): the Secret is missing or incomplete."""


def _decode(data: dict[str, str | bytes] | None) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (data or {}).items()}


def _encode(data: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


class WebhookTls:
    """One Secret, one directory of PEM files, one webhook configuration."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        secret: str,
        service: str,
        configuration: str | None,
        directory: Path,
        source: Source = "operator",
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.namespace = namespace
        self.secret = secret
        self.configuration = configuration
        self.hostnames = certs.service_hostnames(service, namespace)
        self.directory = directory
        self.source = source

    @property
    def certfile(self) -> Path:
        return self.directory / certs.CERT_KEY

    @property
    def keyfile(self) -> Path:
        return self.directory / certs.PRIVATE_KEY

    @property
    def cafile(self) -> Path:
        return self.directory / certs.CA_KEY

    def sync(self) -> None:
        """Make the Secret good (issuing or renewing it if ours), write the files the server
        reads, and make the webhook configuration trust the CA."""
        ca, cert, key = self._material()
        self._write(ca, cert, key)
        if self.source == "operator" and self.configuration:
            self._patch_ca_bundle(ca)

    # -------------------------------------------------------------------- the Secret

    def _material(self) -> tuple[bytes, bytes, bytes]:
        if self.source == "secret":
            data = self._read_secret()[1]
            parts = tuple(
                data.get(k, b"") for k in (certs.CA_KEY, certs.CERT_KEY, certs.PRIVATE_KEY)
            )
            if not all(parts):
                raise WebhookTlsError(
                    f"Secret {self.namespace}/{self.secret} has no ca.crt/tls.crt/tls.key yet "
                    "(cert-manager writes it once its Certificate is issued)"
                )
            return parts  # type: ignore[return-value]
        for _ in range(5):  # a lost race with another replica: read what it wrote
            version, data = self._read_secret()
            material = certs.TlsMaterial.from_secret_data(data)
            reason = certs.renewal_reason(material, self.hostnames)
            if reason is None:
                assert material is not None
                return material.ca_bundle, material.cert, material.key
            fresh = certs.renew(material, self.hostnames)
            if self._write_secret(version, fresh):
                log.info("issued the webhook certificate in Secret %s: %s", self.secret, reason)
                return fresh.ca_bundle, fresh.cert, fresh.key
        raise WebhookTlsError(f"Secret {self.namespace}/{self.secret} keeps changing")

    def _read_secret(self) -> tuple[str | None, dict[str, bytes]]:
        """(resourceVersion, data). The Secret must exist: the chart (or the kustomize base)
        creates it empty, so the operator needs no permission to create Secrets."""
        try:
            secret = self.core.read_namespaced_secret(self.secret, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise WebhookTlsError(
                    f"Secret {self.namespace}/{self.secret} does not exist; install it with the "
                    "chart (or create it empty) before the operator"
                ) from exc
            raise WebhookTlsError(
                f"cannot read Secret {self.namespace}/{self.secret}: {exc.status} {exc.reason}"
            ) from exc
        assert secret.metadata is not None
        return secret.metadata.resource_version, _decode(secret.data)

    def _write_secret(self, version: str | None, material: certs.TlsMaterial) -> bool:
        """Write the data over ``version`` only; False when another replica was first.

        A patch keeps the installer's labels and annotations; the resourceVersion in it makes
        the write conditional (409 when the Secret changed since it was read).
        """
        patch = {
            "metadata": {"resourceVersion": version},
            "data": _encode(material.as_secret_data()),
        }
        try:
            self.core.patch_namespaced_secret(self.secret, self.namespace, patch)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise WebhookTlsError(
                f"cannot write Secret {self.namespace}/{self.secret}: {exc.status} {exc.reason}"
            ) from exc
        return True

    # --------------------------------------------------------------------- the files

    def _write(self, ca: bytes, cert: bytes, key: bytes) -> None:
        """Replace a file only when its content changed (a rewrite would make the webhook
        server restart), key first and atomically, so a reader never sees half a pair."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path, content in ((self.keyfile, key), (self.certfile, cert), (self.cafile, ca)):
            if path.exists() and path.read_bytes() == content:
                continue
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(content)
            tmp.chmod(0o600)
            os.replace(tmp, path)

    # ------------------------------------------------------- the webhook configuration

    def _patch_ca_bundle(self, ca: bytes) -> None:
        """Set ``caBundle`` on each webhook of our own configuration that lacks it.

        A JSON patch of just those fields, guarded by a test of each webhook's name, so the
        rest stays owned by whoever installed it (Helm, Argo CD) and a reordered list is
        never patched at the wrong index.
        """
        assert self.configuration is not None
        wanted = base64.b64encode(ca).decode()
        try:
            cfg = self.admission.read_validating_webhook_configuration(self.configuration)
        except ApiException as exc:
            raise WebhookTlsError(
                f"cannot read ValidatingWebhookConfiguration {self.configuration}: "
                f"{exc.status} {exc.reason}"
            ) from exc
        ops: list[dict[str, object]] = []
        for i, hook in enumerate(cfg.webhooks or []):
            have = hook.client_config.ca_bundle if hook.client_config else None
            if have != wanted:
                ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.name})
                ops.append(
                    {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": wanted}
                )
        if not ops:
            return
        try:
            self.admission.patch_validating_webhook_configuration(self.configuration, ops)
        except ApiException as exc:
            raise WebhookTlsError(
                f"cannot patch the caBundle of {self.configuration}: {exc.status} {exc.reason}"
            ) from exc
        log.info("set the caBundle of ValidatingWebhookConfiguration %s", self.configuration)
