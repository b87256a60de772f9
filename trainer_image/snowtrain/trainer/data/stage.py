"""Upload an exported model directory to a Snowflake internal stage with PUT.

The stage name is user input pasted into SQL, so it is validated and quoted by
``snowtrain.api.identifiers.quote_stage`` first; local paths go inside a single-quoted
``file://`` literal, so a path with a quote in it is refused rather than escaped. Files are
uploaded uncompressed (the model files are already binary and the server reads them as-is),
keeping the directory layout under the stage path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from snowtrain.api.identifiers import InvalidIdentifier, quote_stage

from ..errors import InvalidConfig
from .connection import with_retries


def _target(stage: str, rel_dir: str) -> str:
    name = stage if stage.startswith("@") else f"@{stage}"
    name = name.rstrip("/")
    if rel_dir not in ("", "."):
        name = f"{name}/{rel_dir}"
    try:
        return quote_stage(name)
    except InvalidIdentifier as exc:
        raise InvalidConfig(str(exc)) from None


def upload_to_stage(conn: Any, local_dir: str | Path, stage: str, *, retries: int = 3) -> list[str]:
    """PUT every file under ``local_dir`` to ``stage`` (``@NAME[/path]``); return stage paths."""
    root = Path(local_dir).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    _target(stage, "")  # validate before anything is sent, even for an empty directory
    if any("'" in str(p) for p in files):
        raise InvalidConfig("cannot upload a file whose path contains a single quote")
    uploaded: list[str] = []
    for path in files:
        rel_dir = path.parent.relative_to(root).as_posix()
        target = _target(stage, rel_dir)
        sql = f"PUT 'file://{path}' {target} AUTO_COMPRESS=FALSE OVERWRITE=TRUE"

        def put(sql: str = sql) -> None:
            conn.cursor().execute(sql)

        with_retries(put, retries=retries, what=f"upload of {path.name}")
        uploaded.append(f"{target}/{path.name}")
    return uploaded
