"""SQL text for the data source, built only from validated, quoted identifiers.

User-supplied names are the one way SQL could be injected (values are always bound), so every
table and column goes through ``snowtrain.api.identifiers`` and a user's query must be one
SELECT statement: it is wrapped as a subquery on its own lines, so a trailing ``--`` comment
cannot swallow our closing parenthesis and a second statement is refused before anything is
sent (fakesnow would run it; FACTS §2).
"""

from __future__ import annotations

import re

from snowtrain.api.identifiers import InvalidIdentifier, quote_column, quote_table

from ..errors import InvalidConfig

# Strings, quoted identifiers, comments and dollar-quoted blocks, or a bare semicolon.
_LEXEME = re.compile(
    r"'(?:[^'\\]|\\.|'')*'"
    r'|"(?:[^"]|"")*"'
    r"|--[^\n]*|//[^\n]*"
    r"|/\*.*?\*/"
    r"|\$\$.*?\$\$"
    r"|(?P<semi>;)",
    re.S,
)
_COMMENTS = re.compile(r"--[^\n]*|//[^\n]*|/\*.*?\*/", re.S)


def table_ref(name: str) -> str:
    """Quoted ``[db.][schema.]table``; ``InvalidConfig`` for anything else (before any query)."""
    try:
        return quote_table(name)
    except InvalidIdentifier as exc:
        raise InvalidConfig(str(exc)) from None


def column_ref(name: str) -> str:
    """Quote a column as the trainer config carries it: its canonical (result-set) spelling.

    ``resolve_columns`` stores ``text`` as ``TEXT`` and ``"My Col"`` as ``My Col``, so the
    exact spelling is kept by double-quoting it (after validating it), never upper-cased again.
    """
    try:
        return quote_column(name if name.startswith('"') else f'"{name}"')
    except InvalidIdentifier as exc:
        raise InvalidConfig(str(exc)) from None


def subquery(query: str) -> str:
    """``(<query>)`` on its own lines, after checking it is a single SELECT statement."""
    text = query.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise InvalidConfig("data query is empty")
    for m in _LEXEME.finditer(text):
        if m.group("semi"):
            raise InvalidConfig("data query must be a single SELECT statement (found ';')")
    head = _COMMENTS.sub(" ", text).lstrip(" \t\r\n(").split(None, 1)
    if not head or head[0].upper() not in ("SELECT", "WITH"):
        raise InvalidConfig("data query must be a SELECT (or WITH ... SELECT) statement")
    return f"(\n{text}\n)"
