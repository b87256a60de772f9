"""Optional bearer-token authentication for every endpoint but health checks and metrics.

When a token is configured (`--token-file`, or $SNOWTRAIN_SERVE_TOKEN), a request must carry
`Authorization: Bearer <token>` or it is answered 401 with `WWW-Authenticate: Bearer` before
its body is read. Liveness and readiness probes (`/healthz`, `/readyz`, `/v2/health/*`,
KServe v1 `GET /`) and Prometheus' `/metrics` stay open: the kubelet and the scraper carry no
token, and none of them reveals model output.

The token file is re-read when it changes (checked at most once a second), so rotating a
Kubernetes Secret mounted as a file takes effect without a restart. If it becomes unreadable
or empty, every request is refused (fail closed). The token is compared in constant time
(`hmac.compare_digest`) and never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from pathlib import Path

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from snowtrain.serve.errors import error_response

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
"""Paths answered without a token, whatever the method."""
OPEN_GET_PATHS = frozenset({"/"})
"""Paths answered without a token on GET and HEAD only (KServe v1 liveness)."""

RELOAD_INTERVAL_S = 1.0


class TokenError(ValueError):
    """The configured token cannot be used (missing or empty file, empty value)."""


def read_token_file(path: Path) -> bytes:
    """The token in `path`, without surrounding whitespace (Secrets often end in a newline)."""
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path}: {exc.strerror}") from exc
    if not token:
        raise TokenError(f"the token file {path} is empty")
    return token


class TokenSource:
    """The current token: a fixed value, or a file re-read when its identity or mtime changes."""

    def __init__(self, *, token: str | None = None, path: Path | None = None) -> None:
        if (token is None) == (path is None):
            raise TokenError("configure exactly one of a token and a token file")
        self._path = path
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._token: bytes | None = None
        if token is not None:
            self._token = token.strip().encode()
            if not self._token:
                raise TokenError("the bearer token is empty")
        else:
            self._reload(strict=True)

    def _reload(self, strict: bool = False) -> None:
        assert self._path is not None
        try:
            try:
                st = os.stat(self._path)
            except OSError as exc:
                raise TokenError(
                    f"cannot read the token file {self._path}: {exc.strerror}"
                ) from exc
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            self._token = read_token_file(self._path)
            self._stamp = stamp
            log.info("bearer token loaded from %s", self._path)
        except TokenError as exc:
            if strict:
                raise
            if self._token is not None:
                log.error("bearer token file unusable (%s); refusing all requests", exc)
            self._token, self._stamp = None, None

    def current(self) -> bytes | None:
        """The token to compare against; None refuses every request."""
        if self._path is not None:
            now = time.monotonic()
            with self._lock:
                if now - self._checked >= RELOAD_INTERVAL_S:
                    self._checked = now
                    self._reload()
        return self._token


def is_open(method: str, path: str) -> bool:
    """Whether a request needs no token (health checks and metrics)."""
    return path in OPEN_PATHS or (method in ("GET", "HEAD") and path in OPEN_GET_PATHS)


def presented_token(headers: Headers) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip().encode("latin-1")


class BearerAuth:
    """ASGI middleware: 401 unless the request is open or carries the configured token."""

    def __init__(self, app: ASGIApp, tokens: TokenSource) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        given = presented_token(Headers(scope=scope))
        expected = self.tokens.current()
        if given is not None and expected is not None and hmac.compare_digest(given, expected):
            await self.app(scope, receive, send)
            return
        if given is None:
            message, challenge = "missing bearer token (Authorization: Bearer <token>)", "Bearer"
        else:
            message, challenge = "invalid bearer token", 'Bearer error="invalid_token"'
        response = error_response(401, message, {"WWW-Authenticate": challenge})
        await response(scope, receive, send)
