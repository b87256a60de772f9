"""Optional bearer-token auth: every endpoint but health checks and metrics needs the token.

The server runs on the tiny classifier with the token in a file (as a mounted Kubernetes
Secret gives it), and once with the token from the environment through the real CLI parser.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from snowtrain.serve.__main__ import parse_args
from snowtrain.serve.auth import TokenError, TokenSource
from snowtrain.serve.settings import TOKEN_ENV, TOKEN_FILE_ENV, ServeSettings
from tests.fixtures.serving import running_server

NAME = "tiny-classifier"
TOKEN = "s3cr3t-token-value"
PREDICT = {"instances": ["the movie was great"]}


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "token"
    path.write_text(TOKEN + "\n")  # Secrets created from files often end in a newline
    return path


@pytest.fixture(scope="module")
def base(tiny_classifier_dir: Path, secret: Path) -> Iterator[str]:
    with running_server(tiny_classifier_dir, token_file=secret) as url:
        yield url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        ("GET", "/"),
    ],
)
def test_probes_and_metrics_need_no_token(base: str, method: str, path: str) -> None:
    resp = httpx.request(method, base + path)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", f"/v1/models/{NAME}:predict", PREDICT),
        (
            "POST",
            f"/v2/models/{NAME}/infer",
            {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        ),
        ("POST", "/v1/completions", {"prompt": "x"}),
        ("GET", "/v1/models", None),
        ("GET", f"/v1/models/{NAME}", None),
        ("GET", f"/v2/models/{NAME}", None),
        ("GET", "/openapi.json", None),
        ("GET", "/no/such/route", None),
        ("POST", "/", None),
    ],
)
def test_everything_else_answers_401_without_the_right_token(
    base: str, method: str, path: str, body: object
) -> None:
    for headers, challenge in [
        ({}, "Bearer"),
        (bearer("wrong"), 'Bearer error="invalid_token"'),
        (bearer(TOKEN + "x"), 'Bearer error="invalid_token"'),
        ({"Authorization": f"Basic {TOKEN}"}, "Bearer"),
        ({"Authorization": "Bearer"}, "Bearer"),
    ]:
        resp = httpx.request(method, base + path, json=body, headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.headers["www-authenticate"] == challenge
        assert resp.json()["error"]["code"] == 401
        assert TOKEN not in resp.text


def test_the_right_token_is_served(base: str) -> None:
    resp = httpx.post(f"{base}/v1/models/{NAME}:predict", json=PREDICT, headers=bearer(TOKEN))
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["predictions"]) == 1
    lower = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert httpx.get(f"{base}/v1/models", headers=lower).status_code == 200


def test_an_unauthenticated_oversize_body_is_refused_as_401(base: str) -> None:
    """No token, no body read: the answer is 401, not 413."""
    resp = httpx.post(f"{base}/v1/models/{NAME}:predict", content=b"x" * 5_000_000)
    assert resp.status_code == 401


def test_a_rotated_token_file_takes_effect_and_an_emptied_one_refuses_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text("first")
    tokens = TokenSource(path=path)
    assert tokens.current() == b"first"
    monkeypatch.setattr("snowtrain.serve.auth.RELOAD_INTERVAL_S", 0.0)
    path.write_text("second-and-longer")
    assert tokens.current() == b"second-and-longer"
    path.write_text("")
    assert tokens.current() is None  # fail closed


def test_unusable_tokens_are_refused_at_start(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(TokenError, match="is empty"):
        TokenSource(path=empty)
    with pytest.raises(TokenError, match="cannot read"):
        TokenSource(path=tmp_path / "missing")
    with pytest.raises(ValueError, match="empty"):
        ServeSettings(model_dir=tmp_path, token="  ")
    with pytest.raises(ValueError, match="not both"):
        ServeSettings(model_dir=tmp_path, token="a", token_file=empty)


def test_the_token_never_reaches_repr_or_logs(
    tiny_classifier_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.delenv(TOKEN_FILE_ENV, raising=False)
    settings = parse_args(["--model-dir", str(tiny_classifier_dir)])
    assert settings.token == TOKEN and settings.auth_enabled
    assert TOKEN not in repr(settings)
    kwargs = {
        k: getattr(settings, k)
        for k in ("token", "max_instances", "max_input_chars", "max_body_bytes")
    }
    with caplog.at_level(logging.DEBUG), running_server(tiny_classifier_dir, **kwargs) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 401
        ok = httpx.get(f"{url}/v1/models", headers=bearer(TOKEN))
        assert ok.status_code == 200
        bad = httpx.post(f"{url}/v1/completions", json={"prompt": "x"}, headers=bearer("nope"))
        assert bad.status_code == 401
    assert TOKEN not in caplog.text


def test_the_cli_reads_the_token_file_from_the_environment(
    tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv(TOKEN_FILE_ENV, str(secret))
    settings = parse_args(["--model-dir", str(tmp_path)])
    assert settings.token_file == secret and settings.token is None
    monkeypatch.delenv(TOKEN_FILE_ENV)
    assert not parse_args(["--model-dir", str(tmp_path)]).auth_enabled
    assert os.environ.get(TOKEN_FILE_ENV) is None
