"""Which Snowflake a local run uses, and that no secret leaks into what is printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from snowtrain.cli.credentials import resolve
from snowtrain.cli.errors import UserError

CONNECTIONS = """
[default]
account = "myorg-prod"
user = "TRAINER"
password = "s3cret-pw"
role = "ML"
warehouse = "WH"

[keypair]
account = "myorg-dev"
user = "BOT"
private_key_file = "{key}"
private_key_file_pwd = "phrase-123"
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    key = tmp_path / "rsa_key.p8"
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIfake\n-----END PRIVATE KEY-----\n")
    sf = tmp_path / ".snowflake"
    sf.mkdir()
    (sf / "connections.toml").write_text(CONNECTIONS.format(key=key))
    return sf


def test_nothing_configured_means_the_embedded_emulator(tmp_path):
    target = resolve(environ={"SNOWFLAKE_HOME": str(tmp_path / "none")})
    assert target.mode == "embedded"
    assert target.env == {}
    assert "emulator" in target.description


def test_environment_is_passed_through_unchanged(home):
    environ = {
        "SNOWFLAKE_ACCOUNT": "acme-x",
        "SNOWFLAKE_PASSWORD": "pw-9",
        "SNOWFLAKE_HOME": str(home),
    }
    target = resolve(environ=environ)
    # The trainer inherits the user's environment; nothing is added or rewritten.
    assert target.mode == "env" and target.env == {}
    assert "acme-x" in target.description and "pw-9" not in target.description


def test_default_connection_becomes_trainer_env(home):
    target = resolve(environ={"SNOWFLAKE_HOME": str(home)})
    assert target.mode == "connection"
    assert target.env["SNOWFLAKE_ACCOUNT"] == "myorg-prod"
    assert target.env["SNOWFLAKE_PASSWORD"] == "s3cret-pw"
    assert target.env["SNOWFLAKE_ROLE"] == "ML"
    assert "s3cret-pw" not in target.description and "s3cret-pw" not in repr(target)


def test_named_connection_reads_the_private_key_file(home):
    target = resolve(connection="keypair", environ={"SNOWFLAKE_HOME": str(home)})
    assert target.env["SNOWFLAKE_PRIVATE_KEY"].startswith("-----BEGIN PRIVATE KEY-----")
    assert target.env["SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"] == "phrase-123"
    assert "[keypair]" in target.description


def test_default_connection_name_from_environment(home):
    environ = {"SNOWFLAKE_HOME": str(home), "SNOWFLAKE_DEFAULT_CONNECTION_NAME": "keypair"}
    assert resolve(environ=environ).env["SNOWFLAKE_ACCOUNT"] == "myorg-dev"


def test_embedded_wins_when_asked_even_with_credentials(home):
    environ = {"SNOWFLAKE_ACCOUNT": "acme-x", "SNOWFLAKE_HOME": str(home)}
    assert resolve("embedded", environ=environ).mode == "embedded"


def test_unknown_connection_lists_the_known_ones(home):
    with pytest.raises(UserError, match=r"no connection 'prod'.*default, keypair"):
        resolve(connection="prod", environ={"SNOWFLAKE_HOME": str(home)})


def test_env_mode_without_variables_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="SNOWFLAKE_ACCOUNT is not set"):
        resolve("env", environ={"SNOWFLAKE_HOME": str(tmp_path)})


def test_broken_toml_names_the_file_not_the_values(tmp_path):
    sf = tmp_path / ".snowflake"
    sf.mkdir()
    (sf / "connections.toml").write_text('[default]\npassword = "hunter2\n')
    with pytest.raises(UserError) as err:
        resolve(environ={"SNOWFLAKE_HOME": str(sf)})
    assert "connections.toml" in str(err.value) and "hunter2" not in str(err.value)
