"""Where local mode's Snowflake comes from: the environment, connections.toml, or the emulator.

The trainer reads credentials from ``SNOWFLAKE_*`` environment variables (README: "The trainer contract", credentials). Local
mode decides which Snowflake those variables describe:

- ``env``: the user's own ``SNOWFLAKE_ACCOUNT``/``SNOWFLAKE_USER``/... are passed through
  unchanged (the trainer inherits them);
- ``connection``: a named connection of ``connections.toml`` -- the file Snowflake's own tools
  (snowsql's successor ``snow``, the Python connector) read from ``$SNOWFLAKE_HOME`` or
  ``~/.snowflake`` -- translated to those variables;
- ``embedded``: nothing is configured (or it was asked for): the emulator is started.

Values are handed to the trainer process only; nothing here prints or logs them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from snowtrain.trainer.data.credentials import ENV_VARS

from .errors import UserError

Mode = Literal["auto", "embedded", "env", "connection"]

#: connections.toml key -> trainer environment variable (README: "The trainer contract", credentials): the trainer's own
#: mapping, plus the snake_case spellings Snowflake's tools use for the key passphrase.
_TOML_TO_ENV = {
    **{k: v for k, v in ENV_VARS.items() if k not in ("privateKey", "privateKeyPassphrase")},
    "private_key_file_pwd": ENV_VARS["privateKeyPassphrase"],
    "private_key_passphrase": ENV_VARS["privateKeyPassphrase"],
}
_KEY_FILE_KEYS = ("private_key_file", "private_key_path")


@dataclass(frozen=True)
class SnowflakeTarget:
    """The Snowflake a local run uses: ``env`` is added to the trainer's environment."""

    mode: Literal["embedded", "env", "connection"]
    description: str
    """What to tell the user (never a secret)."""
    env: dict[str, str] = field(default_factory=dict, repr=False)


def snowflake_home(environ: Mapping[str, str]) -> Path:
    """``$SNOWFLAKE_HOME`` or ``~/.snowflake``, as the Snowflake tools resolve it."""
    return Path(environ.get("SNOWFLAKE_HOME") or Path.home() / ".snowflake").expanduser()


def _default_connection_name(home: Path, environ: Mapping[str, str]) -> str:
    if name := environ.get("SNOWFLAKE_DEFAULT_CONNECTION_NAME"):
        return name
    config = home / "config.toml"
    if config.is_file():
        try:
            name = tomllib.loads(config.read_text()).get("default_connection_name")
        except (tomllib.TOMLDecodeError, OSError):
            name = None
        if isinstance(name, str) and name:
            return name
    return "default"


def _load_connections(home: Path) -> dict[str, dict]:
    path = home / "connections.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message names the line, never a value.
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def connection_env(conn: Mapping[str, object], source: str) -> dict[str, str]:
    """Translate one connections.toml entry to the trainer's ``SNOWFLAKE_*`` variables."""
    env = {_TOML_TO_ENV[k]: str(v) for k, v in conn.items() if k in _TOML_TO_ENV}
    for key in _KEY_FILE_KEYS:
        if key in conn:
            key_path = Path(str(conn[key])).expanduser()
            try:
                env["SNOWFLAKE_PRIVATE_KEY"] = key_path.read_text()
            except OSError as exc:
                raise UserError(f"{source}: cannot read {key} {key_path}: {exc.strerror}") from None
    if "SNOWFLAKE_ACCOUNT" not in env:
        raise UserError(f"{source}: the connection has no account")
    return env


def _env_configured(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("SNOWFLAKE_ACCOUNT"))


def resolve(
    mode: Mode = "auto",
    connection: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> SnowflakeTarget:
    """Pick the Snowflake for a local run; raise :class:`UserError` when the choice is impossible."""
    environ = os.environ if environ is None else environ
    if connection and mode == "auto":
        mode = "connection"
    if mode == "embedded":
        return SnowflakeTarget("embedded", "embedded Snowflake emulator (asked for)")
    if mode == "env" or (mode == "auto" and _env_configured(environ)):
        if not _env_configured(environ):
            raise UserError(
                "--snowflake env: SNOWFLAKE_ACCOUNT is not set (also set SNOWFLAKE_USER and "
                "SNOWFLAKE_PASSWORD, SNOWFLAKE_PRIVATE_KEY or SNOWFLAKE_TOKEN)"
            )
        return SnowflakeTarget(
            "env", f"Snowflake account {environ['SNOWFLAKE_ACCOUNT']} (SNOWFLAKE_* environment)"
        )
    home = snowflake_home(environ)
    connections = _load_connections(home)
    name = connection or _default_connection_name(home, environ)
    if name in connections:
        source = f"{home / 'connections.toml'} [{name}]"
        env = connection_env(connections[name], source)
        return SnowflakeTarget(
            "connection", f"Snowflake account {env['SNOWFLAKE_ACCOUNT']} ({source})", env
        )
    if mode == "connection":
        known = ", ".join(sorted(connections)) or "none"
        raise UserError(
            f"no connection {name!r} in {home / 'connections.toml'} (connections found: {known})"
        )
    return SnowflakeTarget(
        "embedded",
        "embedded Snowflake emulator (no SNOWFLAKE_* environment and no "
        f"{home / 'connections.toml'}), seeded with the example tables",
    )
