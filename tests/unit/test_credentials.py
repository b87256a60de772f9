"""Credentials: where they come from, how they reach the connector, and that they never leak."""

from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from snowflake.connector import errors as sf_errors

from snowtrain.api.trainer_config import SnowflakeSettings
from snowtrain.trainer.data.connection import connect, with_retries
from snowtrain.trainer.data.credentials import load_credentials
from snowtrain.trainer.errors import InvalidConfig, Unavailable

PASSWORD = "pw-Zq8!distinctive-4411"
PASSPHRASE = "phrase-Kx7-distinctive-9902"
TOKEN = "oauth-tok-distinctive-5150"
BASE_ENV = {"SNOWFLAKE_ACCOUNT": "acct", "SNOWFLAKE_USER": "alice"}


def pem(passphrase: str | None = None) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def test_password_from_env():
    creds = load_credentials(SnowflakeSettings(), env={**BASE_ENV, "SNOWFLAKE_PASSWORD": PASSWORD})
    kwargs = creds.connect_kwargs()
    assert (kwargs["account"], kwargs["user"], kwargs["password"]) == ("acct", "alice", PASSWORD)
    assert creds.auth_method == "password"


def test_secret_files_win_over_env_and_config_wins_for_non_secrets(tmp_path):
    (tmp_path / "password").write_text(PASSWORD + "\n")  # Secrets often end with a newline
    (tmp_path / "account").write_text("from-secret")
    (tmp_path / "user").write_text("alice")
    (tmp_path / "warehouse").write_text("WH_SECRET")
    (tmp_path / "role").write_text("SECRET_ROLE")
    settings = SnowflakeSettings(credentials_dir=str(tmp_path), role="CONFIG_ROLE")
    env = {**BASE_ENV, "SNOWFLAKE_PASSWORD": "env-password", "SNOWFLAKE_WAREHOUSE": "ENV_WH"}
    kwargs = load_credentials(settings, env=env).connect_kwargs()
    assert kwargs["password"] == PASSWORD
    assert kwargs["warehouse"] == "WH_SECRET"
    assert kwargs["role"] == "CONFIG_ROLE"  # the operator admits a CR role only if allowed


def test_with_a_secret_the_destination_comes_from_the_secret_alone(tmp_path):
    """A pod override's environment or the job's config cannot send the Secret's password to
    another account or host, or over plain HTTP."""
    (tmp_path / "password").write_text(PASSWORD)
    (tmp_path / "account").write_text("real-account")
    (tmp_path / "user").write_text("alice")
    settings = SnowflakeSettings(credentials_dir=str(tmp_path), account="attacker-account")
    env = {
        "SNOWFLAKE_HOST": "collector.attacker.example",
        "SNOWFLAKE_PROTOCOL": "http",
        "SNOWFLAKE_PORT": "80",
        "SNOWFLAKE_USER": "someone-else",
    }
    kwargs = load_credentials(settings, env=env).connect_kwargs()
    assert (kwargs["account"], kwargs["user"]) == ("real-account", "alice")
    assert "host" not in kwargs and "protocol" not in kwargs and "port" not in kwargs
    (tmp_path / "host").write_text("emulator.internal")
    (tmp_path / "protocol").write_text("http")
    kwargs = load_credentials(settings, env=env).connect_kwargs()
    assert (kwargs["host"], kwargs["protocol"]) == ("emulator.internal", "http")


def test_key_pair_with_passphrase_becomes_a_key_object():
    env = {**BASE_ENV, "SNOWFLAKE_PRIVATE_KEY": pem(PASSPHRASE)}
    env["SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"] = PASSPHRASE
    creds = load_credentials(SnowflakeSettings(), env=env)
    kwargs = creds.connect_kwargs()
    assert isinstance(kwargs["private_key"], rsa.RSAPrivateKey)
    assert "password" not in kwargs
    assert creds.auth_method == "keypair"


def test_wrong_passphrase_is_a_config_error_without_the_secret():
    env = {**BASE_ENV, "SNOWFLAKE_PRIVATE_KEY": pem(PASSPHRASE)}
    env["SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"] = "wrong-" + PASSPHRASE
    creds = load_credentials(SnowflakeSettings(), env=env)
    with pytest.raises(InvalidConfig, match="privateKey") as err:
        creds.connect_kwargs()
    assert PASSPHRASE not in str(err.value) and "BEGIN" not in str(err.value)


def test_oauth_token():
    kwargs = load_credentials(
        SnowflakeSettings(), env={**BASE_ENV, "SNOWFLAKE_TOKEN": TOKEN}
    ).connect_kwargs()
    assert (kwargs["authenticator"], kwargs["token"]) == ("oauth", TOKEN)


def test_missing_credentials_name_the_keys():
    with pytest.raises(InvalidConfig) as err:
        load_credentials(SnowflakeSettings(), env={"SNOWFLAKE_ACCOUNT": "acct"})
    assert "user" in str(err.value) and "password|privateKey|token" in str(err.value)


def test_secrets_never_appear_in_reprs_logs_or_errors(caplog):
    """A distinctive password, passphrase and key must not surface anywhere a user can see."""
    caplog.set_level(logging.DEBUG)
    key = pem(PASSPHRASE)
    key_line = key.splitlines()[1]
    env = {
        **BASE_ENV,
        "SNOWFLAKE_PASSWORD": PASSWORD,
        "SNOWFLAKE_PRIVATE_KEY": key,
        "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": PASSPHRASE,
    }
    settings = SnowflakeSettings(
        host="127.0.0.1", port=9, protocol="http", login_timeout_seconds=1, retries=1
    )
    creds = load_credentials(settings, env=env)
    password_only = load_credentials(settings, env={**BASE_ENV, "SNOWFLAKE_PASSWORD": PASSWORD})
    seen = [repr(creds), str(creds), repr(settings), repr(password_only)]
    for c in (creds, password_only):
        with pytest.raises(Unavailable) as err:
            connect(settings, c, sleep=lambda s: None)  # nothing listens on port 9
        seen += [str(err.value), repr(err.value), repr(err.value.__cause__)]
    seen.append(caplog.text)
    blob = "\n".join(seen)
    assert "acct" in blob  # sanity: the non-secret fields are there
    for secret in (PASSWORD, PASSPHRASE, key_line):
        assert secret not in blob
    assert set(creds.secret_values()) >= {PASSWORD, PASSPHRASE, key_line}


# -- retries ----------------------------------------------------------------------------------


class FlakyConnector:
    """A connector that fails ``failures`` times with ``error`` before connecting."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if len(self.calls) <= self.failures:
            raise self.error
        return "connection"


def creds_and_settings(retries: int = 3):
    settings = SnowflakeSettings(
        retries=retries, login_timeout_seconds=7, network_timeout_seconds=9
    )
    return settings, load_credentials(settings, env={**BASE_ENV, "SNOWFLAKE_PASSWORD": PASSWORD})


def test_transient_errors_are_retried_with_growing_backoff_and_timeouts_set():
    settings, creds = creds_and_settings()
    flaky = FlakyConnector(2, sf_errors.OperationalError(msg="connection reset", errno=250003))
    sleeps: list[float] = []
    assert connect(settings, creds, connector=flaky, sleep=sleeps.append) == "connection"
    assert len(flaky.calls) == 3
    assert len(sleeps) == 2  # full jitter: 0.5-1 s, then 1-2 s
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0
    call = flaky.calls[0]
    assert (call["login_timeout"], call["network_timeout"]) == (7, 9)
    assert call["paramstyle"] == "qmark"


def test_expired_session_is_transient():
    settings, creds = creds_and_settings()
    flaky = FlakyConnector(1, sf_errors.ProgrammingError(msg="Session expired", errno=390112))
    assert connect(settings, creds, connector=flaky, sleep=lambda s: None) == "connection"


def test_unavailable_after_retries():
    settings, creds = creds_and_settings(retries=2)
    flaky = FlakyConnector(99, sf_errors.ServiceUnavailableError(msg="503"))
    with pytest.raises(Unavailable, match="after 3 attempt"):
        connect(settings, creds, connector=flaky, sleep=lambda s: None)
    assert len(flaky.calls) == 3


def test_refused_login_is_not_retried():
    settings, creds = creds_and_settings()
    refused = FlakyConnector(
        99,
        sf_errors.DatabaseError(msg="Incorrect username or password was specified.", errno=250001),
    )
    with pytest.raises(InvalidConfig, match="refused the login"):
        connect(settings, creds, connector=refused, sleep=lambda s: None)
    assert len(refused.calls) == 1


def test_with_retries_lets_non_transient_errors_through():
    calls = []

    def fail():
        calls.append(1)
        raise sf_errors.ProgrammingError(msg="syntax error", errno=1003)

    with pytest.raises(sf_errors.ProgrammingError):
        with_retries(fail, retries=5, what="query", sleep=lambda s: None)
    assert len(calls) == 1
