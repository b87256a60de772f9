"""Log in to Snowflake with timeouts, retry transient failures, never leak a secret.

The connector's defaults block for minutes on a dead network, so login and network timeouts
are always set. Transient failures (network errors, HTTP 5xx/429, an expired session)
are retried with capped exponential backoff and a fresh login; after ``retries`` retries the
caller gets ``Unavailable`` (exit 69) so the operator can tell an outage from bad data. Errors
raised from here carry the connector's error number and a redacted message, never a secret.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import snowflake.connector
from snowflake.connector import SnowflakeConnection
from snowflake.connector import errors as sf_errors

from snowtrain.api.trainer_config import SnowflakeSettings

from ..errors import DataError, InvalidConfig, Unavailable
from .credentials import Credentials, load_credentials

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Error classes that mean "try again": the network, the service, or throttling.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sf_errors.OperationalError,
    sf_errors.InterfaceError,
    sf_errors.InternalServerError,
    sf_errors.ServiceUnavailableError,
    sf_errors.GatewayTimeoutError,
    sf_errors.BadGatewayError,
    sf_errors.RequestTimeoutError,
    sf_errors.TooManyRequests,
    sf_errors.OtherHTTPRetryableError,
    sf_errors.RequestExceedMaxRetryError,
    sf_errors.TokenExpiredError,
    ConnectionError,
    TimeoutError,
)
#: Snowflake error numbers for a session that expired or vanished (e.g. a restarted server):
#: logging in again fixes them.
SESSION_EXPIRED_ERRNOS = frozenset({390110, 390111, 390112, 390113, 390114, 390115})
#: Login refused: wrong user/password/key/token. Retrying cannot help.
AUTH_ERRNOS = frozenset({250001, 390100, 390101, 390102, 390144, 390186, 390303, 390318})

#: The object named in the statement does not exist or the role may not see it.
NOT_FOUND_ERRNOS = frozenset({2003, 2043})

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0


def is_transient(exc: BaseException) -> bool:
    """True when retrying (after a fresh login) may succeed."""
    if getattr(exc, "errno", None) in SESSION_EXPIRED_ERRNOS:
        return True
    return isinstance(exc, TRANSIENT_ERRORS)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in ``text`` (defence in depth for third-party messages)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "**********")
    return text


def describe_error(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """A short, redacted description of a connector error for messages and logs."""
    errno = getattr(exc, "errno", None)
    msg = getattr(exc, "raw_msg", None) or str(exc)
    text = f"{type(exc).__name__}" + (f" {errno}" if errno else "") + f": {msg}"
    return redact(text, secrets)[:500]


def backoff_seconds(attempt: int) -> float:
    """Capped exponential backoff with full jitter (attempt 0 -> up to 1 s, 1 -> 2 s, ...)."""
    return random.uniform(0.5, 1.0) * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)


def with_retries(
    fn: Callable[[], T],
    *,
    retries: int,
    what: str,
    secrets: Iterable[str] = (),
    on_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; on a transient error back off, call ``on_retry`` (reconnect) and try again.

    Raises ``Unavailable`` after ``retries`` retries; non-transient errors propagate unchanged.
    """
    secrets = list(secrets)
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            detail = describe_error(exc, secrets)
            if attempt == retries:
                raise Unavailable(
                    f"Snowflake unavailable: {what} failed after {retries + 1} attempt(s): {detail}"
                ) from None
            delay = backoff_seconds(attempt)
            log.warning(
                "%s failed (%s); retry %d/%d in %.1fs", what, detail, attempt + 1, retries, delay
            )
            sleep(delay)
            if on_retry is not None:
                on_retry(exc)
    raise AssertionError("unreachable")


def execute(
    cursor: Callable[[], Any],
    sql: str,
    params: tuple[Any, ...] = (),
    *,
    retries: int,
    what: str,
    secrets: Iterable[str] = (),
    on_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    not_found: Callable[[str], Exception] | None = None,
    num_statements: int | None = None,
    skip_if: Callable[[], bool] | None = None,
) -> Any:
    """Run one statement on a fresh ``cursor()``, retried as ``with_retries`` does, and turn
    the connector's errors into the trainer's (redacted): a statement Snowflake rejects is
    ``InvalidConfig`` (or ``not_found(detail)`` when what it names does not exist), a
    failure left after the retries ``Unavailable``. Returns the cursor.

    ``num_statements=1`` sends MULTI_STATEMENT_COUNT=1 with the request, so Snowflake itself
    refuses a text holding more than one statement whatever the account's default says: the
    server-side backstop to ``snowtrain.api.query.check_query`` for SQL carrying a user's
    query. Left out (``None``) the connector's own default applies (PUT/GET and other
    internal statements).

    ``skip_if`` guards a statement that must not take effect twice: before each attempt it
    is asked whether an earlier attempt (whose answer was lost) already committed, and the
    statement is then not sent again (the result is None)."""
    secrets = list(secrets)
    extra: dict[str, Any] = {} if num_statements is None else {"num_statements": num_statements}

    def attempt() -> Any:
        if skip_if is not None and skip_if():
            return None
        cur = cursor()
        cur.execute(sql, params, **extra)
        return cur

    with snowflake_errors(what, secrets, not_found):
        return with_retries(
            attempt, retries=retries, what=what, secrets=secrets, on_retry=on_retry, sleep=sleep
        )


@contextlib.contextmanager
def snowflake_errors(
    what: str,
    secrets: Iterable[str] = (),
    not_found: Callable[[str], Exception] | None = None,
) -> Iterator[None]:
    """Turn the connector's errors raised inside into the trainer's (redacted): a statement
    Snowflake rejects is ``InvalidConfig`` (or ``not_found(detail)`` when what it names does
    not exist), any other connector error ``Unavailable``."""
    try:
        yield
    except sf_errors.ProgrammingError as exc:
        detail = describe_error(exc, secrets)
        if not_found is not None and getattr(exc, "errno", None) in NOT_FOUND_ERRNOS:
            raise not_found(detail) from None
        raise InvalidConfig(f"Snowflake rejected the {what}: {detail}") from None
    except sf_errors.Error as exc:
        raise Unavailable(f"{what} failed: {describe_error(exc, secrets)}") from None


def connect(
    settings: SnowflakeSettings,
    credentials: Credentials,
    *,
    connector: Callable[..., SnowflakeConnection] = snowflake.connector.connect,
    sleep: Callable[[float], None] = time.sleep,
) -> SnowflakeConnection:
    """Open a connection with timeouts set, retrying transient failures.

    ``paramstyle="qmark"`` makes every bound value a server-side bind (never pasted into the
    SQL text, and a ``%`` in a user's query needs no escaping).
    """
    kwargs: dict[str, Any] = credentials.connect_kwargs()
    kwargs.update(
        login_timeout=settings.login_timeout_seconds,
        network_timeout=settings.network_timeout_seconds,
        socket_timeout=settings.network_timeout_seconds,
        paramstyle="qmark",
        application="snowtrain",
        session_parameters={"QUERY_TAG": "snowtrain-trainer"},
    )
    secrets = credentials.secret_values()

    def attempt() -> SnowflakeConnection:
        try:
            return connector(**kwargs)
        except sf_errors.DatabaseError as exc:
            if not is_transient(exc) and getattr(exc, "errno", None) in AUTH_ERRNOS:
                raise InvalidConfig(
                    f"Snowflake refused the login for user {credentials.user!r} "
                    f"({credentials.auth_method}): {describe_error(exc, secrets)}"
                ) from None
            raise

    try:
        return with_retries(
            attempt, retries=settings.retries, what="login", secrets=secrets, sleep=sleep
        )
    except (Unavailable, InvalidConfig):
        raise
    except sf_errors.Error as exc:
        # Anything else from the connector: report it without its (unredacted) traceback chain.
        raise Unavailable(f"Snowflake login failed: {describe_error(exc, secrets)}") from None


class LazyConnection:
    """A connection that logs in on first use, and again after ``drop`` (a transient error).

    Credentials are read from the environment / ``credentialsDir`` at that first login unless
    given. A ``shared`` connection belongs to the caller: it is used as is, never dropped or
    closed here, so a retry goes out on the same session.
    """

    def __init__(
        self,
        settings: SnowflakeSettings,
        credentials: Credentials | None = None,
        *,
        shared: Any | None = None,
        env: Mapping[str, str] = os.environ,
        connector: Callable[..., SnowflakeConnection] = snowflake.connector.connect,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings, self._credentials, self._env = settings, credentials, env
        self._conn = shared
        self._owned = shared is None
        self._connector, self._sleep = connector, sleep

    def secrets(self) -> list[str]:
        """The secret values to scrub from messages (none known before the first login)."""
        return self._credentials.secret_values() if self._credentials else []

    def cursor(self) -> Any:
        if self._conn is None:
            if self._credentials is None:
                self._credentials = load_credentials(self._settings, self._env)
            self._conn = connect(
                self._settings, self._credentials, connector=self._connector, sleep=self._sleep
            )
        return self._conn.cursor()

    def select(self, sql: str, params: tuple[Any, ...] = (), *, what: str) -> Any:
        """Run one SELECT of the data with retries; return the cursor.

        Every such statement may carry the user's query, so each goes with the connector's
        single-statement guard (``num_statements=1``): should a second statement ever get
        past ``check_query``, Snowflake refuses the request. A table or view that does not
        exist (or that the role may not see) is bad data, not a bad spec: ``DataError``.
        """
        return execute(
            self.cursor,
            sql,
            params,
            retries=self._settings.retries,
            what=what,
            secrets=self.secrets(),
            on_retry=self.drop,
            sleep=self._sleep,
            not_found=lambda detail: DataError(
                f"{what}: the data does not exist or is not authorized: {detail}"
            ),
            num_statements=1,
        )

    def close(self) -> None:
        """Log out, when the connection is ours; a later statement logs in again."""
        if self._owned and self._conn is not None:
            self._conn.close()
            self._conn = None

    def drop(self, _exc: BaseException | None = None) -> None:
        """Forget our session so the next statement logs in afresh (the retry hook).

        A dead connection may fail to close; that failure is not the caller's concern.
        """
        if self._owned and self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
