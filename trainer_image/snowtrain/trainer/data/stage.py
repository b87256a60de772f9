"""Upload an exported model directory to a Snowflake internal stage with PUT.

The stage name is user input pasted into SQL, so it is validated and quoted by
``snowtrain.api.identifiers.quote_stage`` first; local paths go inside a single-quoted
``file://`` literal, so a path with a quote in it is refused rather than escaped. Files are
uploaded uncompressed (the model files are already binary and the server reads them as-is),
keeping the directory layout under the stage path.

``upload_model`` is what the trainer calls: it logs in and retries exactly as the data reads
do (``connection.connect`` and ``connection.with_retries``, from the same ``data.snowflake``
settings): login and network timeouts set, each PUT retried ``retries`` times on a transient
error after a backoff and a fresh login, and connector errors turned into the trainer's
(redacted) errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import snowflake.connector

from snowtrain.api.identifiers import InvalidIdentifier, quote_stage
from snowtrain.api.trainer_config import SnowflakeSettings

from ..errors import InvalidConfig
from .connection import LazyConnection, execute
from .credentials import Credentials

log = logging.getLogger(__name__)


def _target(stage: str, rel_dir: str) -> str:
    name = stage if stage.startswith("@") else f"@{stage}"
    name = name.rstrip("/")
    if rel_dir not in ("", "."):
        name = f"{name}/{rel_dir}"
    try:
        return quote_stage(name)
    except InvalidIdentifier as exc:
        raise InvalidConfig(str(exc)) from None


def upload_to_stage(
    conn: Any,
    local_dir: str | Path,
    stage: str,
    *,
    retries: int = 3,
    secrets: Iterable[str] = (),
    on_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """PUT every file under ``local_dir`` to ``stage`` (``@NAME[/path]``); return stage paths.

    Each PUT goes through ``connection.execute``, as every data read does (``on_retry`` may
    drop ``conn``'s session so the retry logs in afresh, as ``LazyConnection.drop`` does).
    """
    root = Path(local_dir).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    _target(stage, "")  # validate before anything is sent, even for an empty directory
    if any("'" in str(p) for p in files):
        raise InvalidConfig("cannot upload a file whose path contains a single quote")
    uploaded: list[str] = []
    for path in files:
        rel_dir = path.parent.relative_to(root).as_posix()
        target = _target(stage, rel_dir)
        execute(
            conn.cursor,
            f"PUT 'file://{path}' {target} AUTO_COMPRESS=FALSE OVERWRITE=TRUE",
            retries=retries,
            what=f"upload of {path.name} to {stage}",
            secrets=secrets,
            on_retry=on_retry,
            sleep=sleep,
        )
        uploaded.append(f"{target}/{path.name}")
    return uploaded


def upload_model(
    local_dir: str | Path,
    stage: str,
    settings: SnowflakeSettings,
    credentials: Credentials,
    *,
    connector: Callable[..., Any] = snowflake.connector.connect,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Upload an exported model directory with the reads' timeouts, retries and errors.

    Raises ``Unavailable`` once ``settings.retries`` retries of a PUT (or of the login) are
    spent, and ``InvalidConfig`` when Snowflake rejects the upload (no such stage, no
    privilege).
    """
    session = LazyConnection(settings, credentials, connector=connector, sleep=sleep)
    try:
        uploaded = upload_to_stage(
            session,
            local_dir,
            stage,
            retries=settings.retries,
            secrets=credentials.secret_values(),
            on_retry=session.drop,
            sleep=sleep,
        )
    finally:
        session.drop()
    log.info("uploaded %d file(s) to %s", len(uploaded), stage)
    return uploaded
