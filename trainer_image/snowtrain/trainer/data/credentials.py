"""Snowflake credentials: read from env vars or a mounted Secret, never shown.

Secrets reach the trainer only through the environment or files in
``snowflake.credentialsDir`` (one file per key, a mounted Kubernetes Secret); the config file
never carries them (README: "The trainer contract", **In**). Every secret is held as a
``pydantic.SecretStr`` so that a stray ``repr``/log line/exception shows ``**********``
instead of the value, and ``secret_values()`` hands the raw values to whoever must scrub
output (the trainer's redactor).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from snowtrain.api.trainer_config import SnowflakeSettings

from ..errors import InvalidConfig

#: Credential key (Secret file name) -> environment variable.
ENV_VARS: dict[str, str] = {
    "account": "SNOWFLAKE_ACCOUNT",
    "user": "SNOWFLAKE_USER",
    "password": "SNOWFLAKE_PASSWORD",
    "privateKey": "SNOWFLAKE_PRIVATE_KEY",
    "privateKeyPassphrase": "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
    "token": "SNOWFLAKE_TOKEN",
    "role": "SNOWFLAKE_ROLE",
    "warehouse": "SNOWFLAKE_WAREHOUSE",
    "database": "SNOWFLAKE_DATABASE",
    "schema": "SNOWFLAKE_SCHEMA",
    "host": "SNOWFLAKE_HOST",
    "port": "SNOWFLAKE_PORT",
    "protocol": "SNOWFLAKE_PROTOCOL",
}
#: With a mounted Secret (a cluster), these come from it alone: neither the environment (a
#: pod override) nor the job's config may send the Secret's password to another account or
#: host, or over plain HTTP.
SECRET_ONLY = ("account", "user", "host", "port", "protocol")
#: Non-secret keys the trainer config may also set; the config's value wins.
CONFIG_WINS = (
    "account",
    "user",
    "role",
    "warehouse",
    "database",
    "schema",
    "host",
    "port",
    "protocol",
)


@dataclass(frozen=True, repr=False)
class Credentials:
    """Everything needed to log in. Secrets are ``SecretStr``; ``repr`` lists only safe fields."""

    account: str
    user: str
    password: SecretStr | None = None
    private_key: SecretStr | None = None
    private_key_passphrase: SecretStr | None = None
    token: SecretStr | None = None
    role: str | None = None
    warehouse: str | None = None
    database: str | None = None
    schema: str | None = None
    host: str | None = None
    port: int | None = None
    protocol: str | None = None

    def __repr__(self) -> str:
        shown = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not isinstance(getattr(self, f.name), SecretStr)
            and getattr(self, f.name) is not None
        }
        return f"Credentials({', '.join(f'{k}={v!r}' for k, v in shown.items())}, auth={self.auth_method!r})"

    __str__ = __repr__

    @property
    def auth_method(self) -> str:
        """``password``, ``keypair`` or ``oauth`` (safe to log)."""
        if self.private_key is not None:
            return "keypair"
        if self.token is not None:
            return "oauth"
        return "password"

    def secret_values(self) -> list[str]:
        """Raw secret values (and each PEM line), for redactors that scrub output."""
        values: list[str] = []
        for secret in (self.password, self.private_key, self.private_key_passphrase, self.token):
            if secret is None:
                continue
            raw = secret.get_secret_value()
            values.append(raw)
            if "\n" in raw:  # a PEM may leak line by line; header lines are not secret
                values += [ln for ln in raw.splitlines() if ln and not ln.startswith("-----")]
        return values

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``snowflake.connector.connect`` (timeouts are added by ``connect``)."""
        kwargs: dict[str, Any] = {"account": self.account, "user": self.user}
        for name in ("role", "warehouse", "database", "schema", "host", "port", "protocol"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        if self.private_key is not None:
            kwargs["private_key"] = _load_private_key(self.private_key, self.private_key_passphrase)
        elif self.token is not None:
            kwargs["authenticator"] = "oauth"
            kwargs["token"] = self.token.get_secret_value()
        elif self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        return kwargs


def _load_private_key(pem: SecretStr, passphrase: SecretStr | None) -> Any:
    """Parse the PEM (the connector wants a key object or DER bytes, not PEM text)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    password = passphrase.get_secret_value().encode() if passphrase is not None else None
    try:
        return load_pem_private_key(pem.get_secret_value().encode(), password=password)
    except (ValueError, TypeError) as exc:
        # The library's message never includes the key, but keep ours generic anyway.
        raise InvalidConfig(
            "privateKey is not a readable PEM private key, or privateKeyPassphrase is wrong "
            f"({type(exc).__name__})"
        ) from None


def _read_dir(directory: str | None) -> dict[str, str]:
    """Files of a mounted Secret; Kubernetes adds ``..data`` links, which are skipped."""
    if not directory:
        return {}
    root = Path(directory)
    if not root.is_dir():
        raise InvalidConfig(f"snowflake.credentialsDir {directory!r} is not a directory")
    found: dict[str, str] = {}
    for key in ENV_VARS:
        path = root / key
        if path.is_file():
            found[key] = path.read_text().strip()
    return found


def load_credentials(
    settings: SnowflakeSettings, env: Mapping[str, str] = os.environ
) -> Credentials:
    """Collect credentials: config (non-secret) > Secret files > environment variables, except
    that with a mounted Secret the keys in ``SECRET_ONLY`` come from the Secret alone.

    Raises ``InvalidConfig`` naming the missing keys (never a value) when account, user or an
    authentication method is missing.
    """
    locked = SECRET_ONLY if settings.credentials_dir else ()
    values: dict[str, str] = {
        key: env[var]
        for key, var in ENV_VARS.items()
        if env.get(var) not in (None, "") and key not in locked
    }
    values.update({k: v for k, v in _read_dir(settings.credentials_dir).items() if v})
    configured = {
        "account": settings.account,
        "user": settings.user,
        "role": settings.role,
        "warehouse": settings.warehouse,
        "database": settings.database,
        "schema": settings.schema_,
        "host": settings.host,
        "port": settings.port,
        "protocol": settings.protocol,
    }
    values.update(
        {
            k: str(v)
            for k, v in configured.items()
            if k in CONFIG_WINS and k not in locked and v is not None
        }
    )

    missing = [k for k in ("account", "user") if not values.get(k)]
    if not any(values.get(k) for k in ("password", "privateKey", "token")):
        missing.append("password|privateKey|token")
    if missing:
        raise InvalidConfig(
            "Snowflake credentials incomplete: missing "
            + ", ".join(missing)
            + " (set SNOWFLAKE_* environment variables or files in snowflake.credentialsDir)"
        )
    port = values.get("port")
    if port is not None and not port.isdigit():
        raise InvalidConfig("Snowflake port must be a number")
    protocol = values.get("protocol")
    if protocol is not None and protocol not in ("http", "https"):
        raise InvalidConfig("Snowflake protocol must be http or https")

    def secret(key: str) -> SecretStr | None:
        return SecretStr(values[key]) if values.get(key) else None

    return Credentials(
        account=values["account"],
        user=values["user"],
        password=secret("password"),
        private_key=secret("privateKey"),
        private_key_passphrase=secret("privateKeyPassphrase"),
        token=secret("token"),
        role=values.get("role"),
        warehouse=values.get("warehouse"),
        database=values.get("database"),
        schema=values.get("schema"),
        host=values.get("host"),
        port=int(port) if port is not None else None,
        protocol=protocol,
    )
