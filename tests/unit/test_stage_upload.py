"""``upload_model``: the stage upload logs in, retries and fails the way the data reads do."""

from __future__ import annotations

import pytest
from snowflake.connector import errors as sf_errors

from snowtrain.api.trainer_config import SnowflakeSettings
from snowtrain.trainer.data.credentials import load_credentials
from snowtrain.trainer.data.stage import upload_model
from snowtrain.trainer.errors import InvalidConfig, Unavailable

PASSWORD = "stage-pw-4b1e"
ENV = {"SNOWFLAKE_ACCOUNT": "acct", "SNOWFLAKE_USER": "u", "SNOWFLAKE_PASSWORD": PASSWORD}


class FakeConnection:
    def __init__(self, server: FakeServer) -> None:
        self.server, self.closed = server, False

    def cursor(self) -> FakeConnection:
        return self

    def execute(self, sql: str, params: object = None) -> None:  # as the connector's cursor
        assert not self.closed
        self.server.statements.append(sql)
        if self.server.errors:
            raise self.server.errors.pop(0)

    def close(self) -> None:
        self.closed = True


class FakeServer:
    """A connector whose PUTs raise ``errors`` in turn, then succeed."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.logins: list[dict] = []
        self.connections: list[FakeConnection] = []
        self.statements: list[str] = []

    def __call__(self, **kwargs) -> FakeConnection:
        self.logins.append(kwargs)
        self.connections.append(FakeConnection(self))
        return self.connections[-1]


def model_dir(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"w")
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def upload(tmp_path, server, retries=3):
    settings = SnowflakeSettings(
        retries=retries, login_timeout_seconds=7, network_timeout_seconds=9
    )
    creds = load_credentials(settings, env=ENV)
    sleeps: list[float] = []
    result = upload_model(
        model_dir(tmp_path), "@MODELS/run", settings, creds, connector=server, sleep=sleeps.append
    )
    return result, sleeps


def test_transient_put_failure_backs_off_and_retries_on_a_fresh_login(tmp_path):
    server = FakeServer(sf_errors.OperationalError(msg="connection reset", errno=250003))
    uploaded, sleeps = upload(tmp_path, server)
    assert uploaded == ['@"MODELS"/run/config.json', '@"MODELS"/run/model.safetensors']
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 1.0
    assert len(server.logins) == 2 and all(c.closed for c in server.connections)
    assert [s.split()[1] for s in server.statements] == [
        f"'file://{tmp_path}/config.json'",  # failed once, then again after the new login
        f"'file://{tmp_path}/config.json'",
        f"'file://{tmp_path}/model.safetensors'",
    ]
    login = server.logins[0]
    assert (login["login_timeout"], login["network_timeout"]) == (7, 9)


def test_unavailable_after_the_configured_retries_without_the_password(tmp_path):
    errors = [sf_errors.ServiceUnavailableError(msg=f"503 for {PASSWORD}") for _ in range(5)]
    server = FakeServer(*errors)
    with pytest.raises(
        Unavailable, match=r"upload of config\.json to @MODELS/run failed after 3 attempt"
    ) as err:
        upload(tmp_path, server, retries=2)
    assert len(server.statements) == 3 and PASSWORD not in str(err.value)
    assert all(c.closed for c in server.connections)


def test_rejected_upload_is_a_config_error_and_not_retried(tmp_path):
    server = FakeServer(
        sf_errors.ProgrammingError(msg="Stage 'MODELS' does not exist", errno=2003),
    )
    with pytest.raises(
        InvalidConfig,
        match=r"rejected the upload of config\.json to @MODELS/run: .* does not exist",
    ):
        upload(tmp_path, server)
    assert len(server.statements) == 1 and server.connections[0].closed
