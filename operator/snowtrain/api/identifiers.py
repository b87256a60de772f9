"""Snowflake identifier validation and quoting.

Table and column names come from users; they are pasted into SQL, so they are the one place
where injection could happen (values are always bound, never pasted). We accept a deliberately
narrow grammar -- plain identifiers (``[A-Za-z_][A-Za-z0-9_$]*``) or double-quoted identifiers
made of letters, digits, ``_``, ``$``, space and ``-`` -- and always emit them double-quoted.
Anything else (``;``, quotes, comments, parentheses) is refused before a query is sent. The
same regular expressions go into the CRD schema so the API server refuses them at admission.
"""

from __future__ import annotations

import re

_PLAIN = r"[A-Za-z_][A-Za-z0-9_$]{0,254}"
_QUOTED = r'"[A-Za-z0-9_$ \-]{1,255}"'
IDENTIFIER_PART = rf"(?:{_PLAIN}|{_QUOTED})"
#: One identifier (a column).
COLUMN_PATTERN = rf"^{IDENTIFIER_PART}$"
#: ``table``, ``schema.table`` or ``database.schema.table``.
TABLE_PATTERN = rf"^{IDENTIFIER_PART}(?:\.{IDENTIFIER_PART}){{0,2}}$"
#: An internal stage, optionally with a path: ``@MODELS`` or ``@DB.SCHEMA.MODELS/path/x``.
STAGE_PATTERN = rf"^@{IDENTIFIER_PART}(?:\.{IDENTIFIER_PART}){{0,2}}(?:/[A-Za-z0-9_\-./]*)?$"

_PART_RE = re.compile(IDENTIFIER_PART)
_COLUMN_RE = re.compile(COLUMN_PATTERN)
_TABLE_RE = re.compile(TABLE_PATTERN)
_STAGE_RE = re.compile(STAGE_PATTERN)


class InvalidIdentifier(ValueError):
    """Raised for a name that is not a safe Snowflake identifier."""


def _quote_part(part: str) -> str:
    """Quote one validated part; plain identifiers resolve upper-case, as Snowflake does."""
    if part.startswith('"'):
        return part
    return f'"{part.upper()}"'


def _split(name: str) -> list[str]:
    return _PART_RE.findall(name)


def quote_column(name: str) -> str:
    """Return ``name`` as a quoted column identifier, or raise :class:`InvalidIdentifier`."""
    if not _COLUMN_RE.fullmatch(name):
        raise InvalidIdentifier(
            f"{name!r} is not a valid column name: use letters, digits, _ and $, "
            "or a double-quoted name without quotes, semicolons or comments"
        )
    return _quote_part(name)


def quote_table(name: str) -> str:
    """Return ``[db.][schema.]table`` with every part quoted, or raise :class:`InvalidIdentifier`."""
    if not _TABLE_RE.fullmatch(name):
        raise InvalidIdentifier(
            f"{name!r} is not a valid table name: use [database.][schema.]table made of letters, "
            "digits, _ and $ (or double-quoted parts), without semicolons, quotes or comments"
        )
    return ".".join(_quote_part(p) for p in _split(name))


def quote_stage(name: str) -> str:
    """Return a stage reference with its name parts quoted and its path kept, or raise."""
    if not _STAGE_RE.fullmatch(name):
        raise InvalidIdentifier(f"{name!r} is not a valid stage reference such as @MODELS/path")
    body = name[1:]
    ident, _, path = body.partition("/")
    quoted = ".".join(_quote_part(p) for p in _split(ident))
    return f"@{quoted}" + (f"/{path}" if path else "")


def canonical_column(name: str) -> str:
    """The column name as Snowflake reports it in a result set (plain names are upper-cased)."""
    quote_column(name)
    return name[1:-1] if name.startswith('"') else name.upper()
