"""Operator settings, read once from the environment (``SNOWTRAIN_*``).

Everything an installation tunes lives here so the handlers and the pure builders take one
typed object instead of reading the environment themselves (tests build it directly).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """The operator's configuration; each field is the env var ``SNOWTRAIN_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SNOWTRAIN_", extra="ignore")

    namespaces: str = ""
    """Comma-separated namespaces to watch; empty watches the whole cluster."""
    trainer_image: str = "ghcr.io/snowtrain/trainer:0.1.0"
    """Image of the trainer and the model server, unless a job names its own."""
    allowed_image_repositories: str = ""
    """Comma-separated repositories ``spec.image`` may name (``registry/team/*`` allows every
    repository below it); empty: only the trainer image's own repository."""
    allowed_snowflake_roles: str = ""
    """Comma-separated Snowflake roles a job's ``spec.data.snowflake.role`` may name; empty:
    none (jobs use the role their Secret names)."""
    allowed_service_accounts: str = ""
    """Comma-separated service accounts a job's podTemplate may name; empty: none (the
    namespace's default, whose token is never mounted)."""
    allowed_volume_kinds: str = ""
    """Comma-separated extra volume kinds (csi, nfs, ephemeral) a job's podTemplate may add,
    beyond configMap, secret, persistentVolumeClaim and emptyDir."""
    serving_auth_required: bool = False
    """Refuse jobs that serve without ``spec.serving.auth``: every model server of this
    installation then requires a bearer token."""
    network_policies: bool = True
    """Give every job NetworkPolicies: training pods accept connections only from their own
    job's pods (multi-node rendezvous and collectives), serving pods only on the serving port
    and only from their namespace plus ``serving_ingress_from``. Egress is left open (the
    trainer must reach Snowflake and stages)."""
    serving_ingress_from: list[dict[str, Any]] = Field(default_factory=list)
    """Extra NetworkPolicy peers (JSON list of ``from`` entries: namespaceSelector,
    podSelector, ipBlock) allowed to reach every serving pod, e.g. an ingress controller's
    or Prometheus' namespace."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Pull policy of training and serving pods."""
    progress_refresh_seconds: float = Field(default=10.0, gt=0, le=15)
    """How often a running job's progress is read from its pod log (at most 15 s, the
    freshness the status promises; reading logs costs API calls, so it is throttled)."""
    progress_tail_lines: int = Field(default=200, ge=10, le=10_000)
    """Log lines read per refresh; the newest JSON lines carry everything the status needs."""
    stuck_timeout_seconds: float = Field(default=300.0, gt=0)
    """A pod that stays Unschedulable (or cannot pull its image) this long fails the job."""
    max_attempts: int = Field(default=10, ge=1, le=1000)
    """Attempts (new Jobs after preemption or eviction) before the job fails."""
    standalone: bool = False
    """No leader election: this process always reconciles (a single replica run by hand,
    tests, local development)."""
    pod_name: str = ""
    """This replica's pod (downward API): its identity in the leader Lease."""
    pod_namespace: str = ""
    """The namespace the operator runs in: where its Lease and webhook Secret live."""
    leader_lease_name: str = "snowtrain-operator"
    """The ``coordination.k8s.io/v1`` Lease the replicas elect their leader with."""
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    """kopf's liveness probe endpoint; empty disables it."""
    webhook_enabled: bool = False
    """Serve the validating admission webhook from this process."""
    webhook_host: str = "0.0.0.0"
    """Address the webhook server binds to."""
    webhook_port: int = Field(default=9443, ge=1, le=65535)
    """Port the webhook server listens on."""
    webhook_service_name: str | None = None
    """In a cluster: the Service the API server reaches the webhook through (its
    configuration refers to the Service, not a URL). The serving certificate is issued for
    its names and shared by every replica through ``webhook_secret_name``."""
    webhook_secret_name: str | None = None
    """Secret holding the webhook's CA and serving certificate (in ``pod_namespace``)."""
    webhook_configuration_name: str | None = None
    """The ValidatingWebhookConfiguration whose caBundle the operator keeps (its own only)."""
    webhook_cert_source: Literal["operator", "secret"] = "operator"
    """``operator``: the operator issues and renews the certificate in the Secret and sets
    the caBundle. ``secret``: another party (cert-manager) writes both; the operator reads."""
    webhook_tls_dir: str = "/tmp/webhook-tls"
    """Where the certificate files the webhook server reads are written."""
    webhook_tls_refresh_seconds: float = Field(default=60.0, gt=0)
    """How often the Secret is re-read (renewals, cert-manager rotations)."""
    webhook_public_host: str | None = None
    """Outside a cluster (development, tests): the host the API server dials; kopf then
    keeps a URL-based configuration named ``webhook_managed_name`` with a self-signed
    certificate."""
    webhook_managed_name: str | None = None
    """Name of the URL-based ValidatingWebhookConfiguration kopf keeps (outside a cluster)."""
    watch_server_timeout: int = Field(default=300, gt=0)
    """Server-side watch timeout: every watch (the informers' and kopf's) is re-established
    at least this often, which recovers from watches that stall silently."""
    watch_client_timeout: float = Field(default=330.0, gt=0)
    """Client-side watch timeout (a little above the server's)."""
    watch_connect_timeout: float = Field(default=30.0, gt=0)
    """TCP connect timeout of watch requests."""
    max_workers: int = Field(default=32, ge=1, le=256)
    """Threads running the (blocking) reconcile calls. When hundreds of jobs arrive at once
    the time goes into waiting on the API server, so more requests in flight help: with 200
    jobs on a 2-core control plane, 32 gave created -> Job p99 1.5-1.6 s where 16 gave
    1.8-2.2 s."""
    debug: bool = False
    """kopf's debug logging (every API request)."""
    log_format: Literal["json", "plain"] = "json"
    """Structured JSON logs (default) or kopf's plain text."""
    model_mount_path: str = "/mnt/models"
    """Where the model volume is mounted in training and serving pods."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of the Prometheus ``/metrics`` endpoint; 0 disables it."""

    @property
    def namespace_list(self) -> list[str]:
        """The namespaces to watch; empty means cluster-wide."""
        return [ns.strip() for ns in self.namespaces.split(",") if ns.strip()]
