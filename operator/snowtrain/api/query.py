"""Is ``spec.data.query`` one read-only SELECT? The single check, shared by admission and trainer.

A job's query runs with the tenant's Snowflake credentials, and the trainer pastes it into its
own SELECT as a subquery. Snowflake refuses several statements per request only while the
account's MULTI_STATEMENT_COUNT says so, and the emulator never does, so this check has to be
right on its own. It runs in ``parse_job`` (the admission webhook, the operator and
``snowtrain validate``), so ``kubectl apply`` refuses a bad query at once, and again in the
trainer before anything is sent.

Accepted grammar, over the tokens of :mod:`.sqllex` (strings, quoted names and comments are
opaque, so a keyword inside them never matters)::

    query     := statement [ ";" ]            -- then only whitespace and comments
    statement := "(" statement ")" ...        -- leading parentheses: (SELECT ...) UNION ...
               | SELECT ...
               | WITH [RECURSIVE] cte { "," cte } statement
    cte       := name [ "(" columns ")" ] AS "(" statement ")"

Parentheses must balance. Everything else is refused: several statements, DML and DDL
(INSERT, UPDATE, DELETE, MERGE, CREATE, DROP, ...), ``WITH ... DELETE``, CALL, EXECUTE
IMMEDIATE, scripting blocks, PUT/GET/COPY/LIST, SHOW/DESCRIBE (not queries; their output
cannot be wrapped as a subquery either) and the ``->>`` flow operator, which chains arbitrary
statements after a SELECT. Snowflake has no data-modifying SELECT (no ``SELECT INTO`` outside
scripting, UDFs cannot run DML), so a statement that is a SELECT reads only. What a SELECT may
read, or which ``SYSTEM$`` functions it may call, is for the role's grants to decide.
"""

from __future__ import annotations

from .sqllex import Kind, Token, UnsafeQuery, tokenize

__all__ = ["UnsafeQuery", "check_query"]

#: Statement keywords worth naming in an error (a fixed list, so no user text is echoed).
_STATEMENT_KEYWORDS = frozenset(
    {
        "ALTER",
        "BEGIN",
        "CALL",
        "COMMENT",
        "COMMIT",
        "COPY",
        "CREATE",
        "DECLARE",
        "DELETE",
        "DESC",
        "DESCRIBE",
        "DROP",
        "EXECUTE",
        "EXPLAIN",
        "GET",
        "GRANT",
        "INSERT",
        "LIST",
        "LS",
        "MERGE",
        "PUT",
        "REMOVE",
        "REVOKE",
        "RM",
        "ROLLBACK",
        "SET",
        "SHOW",
        "TRUNCATE",
        "UNDROP",
        "UNSET",
        "UPDATE",
        "USE",
        "VALUES",
    }
)


def _keyword(text: str, tok: Token) -> str:
    """The upper-cased word of an ASCII ``WORD`` token, else ``""`` (U+017F ``long s`` + ``elect`` upper-cases to SELECT but is no keyword)."""
    word = text[tok.start : tok.end]
    return word.upper() if tok.kind is Kind.WORD and word.isascii() else ""


def _is(tok: Token, text: str, char: str) -> bool:
    return tok.kind is Kind.PUNCT and text[tok.start] == char


def _statement_end(text: str, tokens: list[Token]) -> tuple[int, list[int]]:
    """Index of the token after the statement, and each ``(``'s matching ``)`` index.

    Refuses unbalanced parentheses, a ``;`` anywhere but at the end, anything but comments
    after it, and the ``->>`` flow operator.
    """
    match = [-1] * len(tokens)
    stack: list[int] = []
    end = len(tokens)
    for idx, tok in enumerate(tokens):
        if tok.kind is not Kind.PUNCT:
            continue
        c = text[tok.start]
        if c == "(":
            stack.append(idx)
        elif c == ")":
            if not stack:
                raise UnsafeQuery("unbalanced parentheses: ')' without '('", tok.start)
            match[stack.pop()] = idx
        elif c == ";":
            if stack:
                raise UnsafeQuery("';' inside parentheses", tok.start)
            end = idx
            break
        elif (
            c == ">"
            and idx >= 2
            and _is(tokens[idx - 1], text, ">")
            and _is(tokens[idx - 2], text, "-")
        ):
            raise UnsafeQuery("the ->> flow operator chains statements", tokens[idx - 2].start)
    if stack:
        raise UnsafeQuery("unbalanced parentheses: '(' without ')'", tokens[stack[-1]].start)
    if end + 1 < len(tokens):
        raise UnsafeQuery(
            "must be a single SELECT statement: found a second statement after ';'",
            tokens[end + 1].start,
        )
    return end, match


def _check_statements(text: str, tokens: list[Token], end: int, match: list[int]) -> None:
    """Apply the grammar of the module docstring to ``tokens[:end]``.

    Iterative (a work list of token ranges, each a statement), so deep nesting cannot hit
    Python's recursion limit; every token is looked at a bounded number of times.
    """
    todo = [(0, end)]
    while todo:
        i, j = todo.pop()
        while i < j and _is(tokens[i], text, "("):
            i, j = i + 1, match[i]
        if i >= j:
            at = tokens[i].start if i < len(tokens) else len(text)
            raise UnsafeQuery("expected a SELECT statement, found nothing", at)
        word = _keyword(text, tokens[i])
        if word == "SELECT":
            continue
        if word != "WITH":
            what = f"not {word}" if word in _STATEMENT_KEYWORDS else "found something else"
            raise UnsafeQuery(
                f"must be a single SELECT (or WITH ... SELECT) statement, {what}",
                tokens[i].start,
            )
        todo.append(_with_clause(text, tokens, i, j, match, todo))


def _with_clause(
    text: str, tokens: list[Token], i: int, j: int, match: list[int], todo: list[tuple[int, int]]
) -> tuple[int, int]:
    """Walk ``WITH [RECURSIVE] cte, ...`` from ``tokens[i]``; queue each CTE body on ``todo``
    and return the range of the main statement that follows."""

    def fail(k: int) -> UnsafeQuery:
        at = tokens[k].start if k < j else (tokens[j - 1].end if j else 0)
        return UnsafeQuery("a WITH clause must be: WITH name AS (SELECT ...) SELECT ...", at)

    k = i + 1
    if k < j and _keyword(text, tokens[k]) == "RECURSIVE":
        k += 1
    while True:
        if k >= j or tokens[k].kind not in (Kind.WORD, Kind.QUOTED_NAME):
            raise fail(k)
        k += 1
        if k < j and _is(tokens[k], text, "("):  # column list
            k = match[k] + 1
        if k >= j or _keyword(text, tokens[k]) != "AS":
            raise fail(k)
        k += 1
        if k >= j or not _is(tokens[k], text, "("):  # e.g. AS PROCEDURE: anonymous procedure
            raise fail(k)
        todo.append((k + 1, match[k]))
        k = match[k] + 1
        if k < j and _is(tokens[k], text, ","):
            k += 1
            continue
        return k, j


def check_query(query: str) -> str:
    """Return the statement of ``query`` without surrounding comments and its trailing ``;``.

    Raises :class:`UnsafeQuery` unless ``query`` is exactly one read-only SELECT (see the
    module docstring). The returned text is ready to wrap as a subquery.
    """
    tokens = tokenize(query)
    end, match = _statement_end(query, tokens)
    if end == 0:
        raise UnsafeQuery("is empty (no statement)")
    _check_statements(query, tokens, end, match)
    return query[tokens[0].start : tokens[end - 1].end]
