"""A linear-time lexer for Snowflake SQL, just precise enough to find statement boundaries.

It exists for one job: deciding, before anything is sent, what in a user's query is code and
what is a string, a quoted identifier or a comment. A check that gets this wrong can be fooled
into accepting a second statement hidden where it thinks a string is (the old regex checker
read ``a$$b`` as the start of a ``$$`` string, Snowflake reads it as a name). So the lexer
follows Snowflake's rules, and where Snowflake and the emulator (sqlglot) could read the same
characters differently it refuses the input instead of guessing:

* ``'...'`` strings, with ``''`` and backslash escapes (``'it\\'s'``);
* ``"..."`` identifiers, with ``""``; ``$$``, ``;`` and ``--`` inside them are plain text;
* ``$$...$$`` strings, only where a token starts (never inside a name); no escapes;
* ``--`` and ``//`` line comments, ending at ``\\n`` (or ``\\r\\n``); any other line break
  inside one (a lone ``\\r``, U+2028, ...) is refused, since sqlglot ends comments at ``\\r``;
* ``/* ... */`` block comments, which do not nest in Snowflake (nor in sqlglot's Snowflake
  dialect); a ``/*`` inside one (``/*/`` included) is refused all the same, because a nesting
  reader (sqlglot's generic dialect, Postgres, SQL Server) would see a different end;
* names (``[\\w$]+``), refused when they contain ``$$`` (``1$$x$$`` is a number and a string
  to sqlglot), and single punctuation characters (``;``, ``(``, ``)``, operators).

One left-to-right pass: one anchored token pattern, matched where the last token ended, whose
repetitions are possessive (they never give characters back), so every character is looked
at a bounded number of times and time grows linearly with the input. Errors carry a reason
and an offset, never the text: a query may hold secrets.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import NamedTuple


class UnsafeQuery(ValueError):
    """A query the checker refuses. ``reason`` and ``offset`` never quote the query itself."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(reason if offset is None else f"{reason} (at character {offset})")


class Kind(Enum):
    """What a significant token is (whitespace and comments produce none)."""

    WORD = "word"  # keyword, unquoted name or number
    QUOTED_NAME = "quoted name"  # "..."
    STRING = "string"  # '...' or $$...$$
    PUNCT = "punctuation"  # one character: ; ( ) , + - > ...


class Token(NamedTuple):
    """One significant token: its kind and its ``[start, end)`` span in the query."""

    kind: Kind
    start: int
    end: int


#: Characters Python's str.splitlines() splits on: each may end a line comment for some reader.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

# One token, after optional whitespace, matched where the previous one ended. Every repetition
# is possessive (``*+``, ``++``) or a lazy scan for a fixed closer, so no alternative ever
# backtracks: an unclosed string or comment costs one scan to the end, after which the
# catch-all ``punct`` takes its first character and the lexer stops with an error.
_TOKEN = re.compile(
    r"""\s*+(?:
      (?P<word>(?!\$\$)[\w$]++)
    | (?P<qname>"(?:[^"]++|"")*+")
    | (?P<string>'(?:[^'\\]++|\\.|'')*+'|\$\$.*?\$\$)
    | (?P<line>(?:--|//)[^"""
    + _LINE_BREAKS
    + r"""]*+)
    | (?P<block>/\*.*?\*/)
    | (?P<punct>.)
    )""",
    re.S | re.X,
)
_KINDS = {"word": Kind.WORD, "qname": Kind.QUOTED_NAME, "string": Kind.STRING, "punct": Kind.PUNCT}
_UNCLOSED = {"'": "unterminated string literal", '"': "unterminated quoted identifier"}


def _check_punct(text: str, start: int) -> None:
    """A quote, ``$$`` or ``/*`` reaching the catch-all means its closer never came."""
    c = text[start]
    if c in _UNCLOSED:
        raise UnsafeQuery(_UNCLOSED[c], start)
    if c == "$" and text.startswith("$$", start):
        raise UnsafeQuery("unterminated $$ string", start)
    if c == "/" and text.startswith("/*", start):
        raise UnsafeQuery("unterminated block comment", start)


def tokenize(text: str) -> list[Token]:
    """The significant tokens of ``text``; raises :class:`UnsafeQuery` on anything unclosed
    or ambiguous (see the module docstring)."""
    if "\x00" in text:
        raise UnsafeQuery("NUL character in query", text.index("\x00"))
    tokens: list[Token] = []
    append = tokens.append
    match = _TOKEN.match
    n = len(text)
    pos = 0
    while (m := match(text, pos)) is not None:  # None: only whitespace was left
        kind = m.lastgroup or "punct"
        start, pos = m.span(kind)
        if kind == "punct":
            _check_punct(text, start)
        elif kind == "word":
            dollars = text.find("$$", start, pos)
            if dollars >= 0:
                raise UnsafeQuery("'$$' inside a name (it could also open a $$ string)", dollars)
        elif kind == "line":
            if pos < n and text[pos] != "\n" and not text.startswith("\r\n", pos):
                raise UnsafeQuery(
                    "line comment ends in an unusual line break; use \\n or \\r\\n", pos
                )
            continue
        elif kind == "block":
            nested = text.find("/*", start + 2, pos - 1)  # also /*/: opener or closer?
            if nested >= 0:
                raise UnsafeQuery(
                    "'/*' inside a block comment (block comments do not nest)", nested
                )
            continue
        append(Token(_KINDS[kind], start, pos))
    return tokens
