"""SQL text for the data source, built only from validated, quoted identifiers.

User-supplied names are the one way SQL could be injected (values are always bound), so every
table and column goes through ``snowtrain.api.identifiers``, and a user's query goes through
``snowtrain.api.query.check_query`` -- the same check admission runs, repeated here because a
hand-edited ConfigMap never passed admission. It must be one read-only SELECT; it is wrapped
as a subquery on its own lines, and the source executes it with the connector's
single-statement guard as well (the fakesnow emulator would run a second statement).
"""

from __future__ import annotations

from snowtrain.api.identifiers import InvalidIdentifier, quote_column, quote_table
from snowtrain.api.query import UnsafeQuery, check_query

from ..errors import InvalidConfig


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
    """``(<query>)`` on its own lines, after checking it is a single read-only SELECT.

    The statement is taken without its surrounding comments and trailing ``;``; the message
    of a refusal names a position at most, never the query (it may hold secrets).
    """
    try:
        statement = check_query(query)
    except UnsafeQuery as exc:
        raise InvalidConfig(f"data query: {exc}") from None
    return f"(\n{statement}\n)"
