"""Query-check benchmark: ``snowtrain.api.query.check_query`` vs the regex checker it replaced.

The old checker (copied below from trainer_image/snowtrain/trainer/data/sql.py as it was) ran
``/\\*.*?\\*/`` over the whole text, so every ``/*`` without a ``*/`` after it -- even one
inside a string -- rescanned the rest of the input: quadratic time. The new one is a single
left-to-right scan. Both run on the same inputs in the same process, at 1k, 10k, 100k and 1M
characters, in three shapes:

- ``select``: a valid SELECT of many columns, strings, quoted names and comments (accepted);
- ``glob-strings``: a valid SELECT whose strings hold ``/*`` (``'logs/*'``), accepted by both;
- ``open-comments``: ``select 1`` followed by ``/*`` openers that never close (refused).

    .venv/bin/python -m bench.bench_query_check [--sizes 1000,10000,100000,1000000]
                                                [--old-budget 60] [--repeats 5]

Prints one JSON line per (shape, size) -- seconds for each checker, nanoseconds per character
for the new one (flat = linear) and the ratio old / new -- then a JSON summary. The old checker
is skipped where its quadratic growth predicts more than ``--old-budget`` seconds (the line
then says ``"old_s": null`` and gives the estimate).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Callable

from snowtrain.api.query import UnsafeQuery, check_query

# -- the old checker, verbatim but for its exception type -------------------------------------
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


def old_subquery(query: str) -> str:
    """The checker before check_query: regex lexemes, then a regex comment strip."""
    text = query.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise ValueError("data query is empty")
    for m in _LEXEME.finditer(text):
        if m.group("semi"):
            raise ValueError("data query must be a single SELECT statement (found ';')")
    head = _COMMENTS.sub(" ", text).lstrip(" \t\r\n(").split(None, 1)
    if not head or head[0].upper() not in ("SELECT", "WITH"):
        raise ValueError("data query must be a SELECT (or WITH ... SELECT) statement")
    return f"(\n{text}\n)"


# -- inputs ----------------------------------------------------------------------------------


def _select_of(size: int, column: Callable[[int], str]) -> str:
    parts, total, i = ["SELECT id"], 9, 0
    while total < size - 10:
        part = column(i)
        parts.append(part)
        total += len(part)
        i += 1
    return "".join(parts) + " FROM t;"


def make(shape: str, size: int) -> str:
    """A query of about ``size`` characters in the given shape."""
    if shape == "select":
        return _select_of(
            size,
            lambda i: f",\n  'a;b''c' AS s{i}, \"Col $$ {i}\" -- note; {i}\n  /* c{i} */ , x{i}",
        )
    if shape == "glob-strings":
        return _select_of(size, lambda i: f", 'logs/*' AS p{i}")
    if shape == "open-comments":
        return "select 1 " + "/* " * ((size - 9) // 3)
    raise ValueError(shape)


SHAPES = ("select", "glob-strings", "open-comments")


def _time(fn: Callable[[str], object], text: str, repeats: int) -> tuple[float, str]:
    """Median seconds of ``repeats`` calls and the outcome (accepted / refused)."""
    times, outcome = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            fn(text)
            outcome = "accepted"
        except (UnsafeQuery, ValueError):
            outcome = "refused"
        times.append(time.perf_counter() - start)
    return statistics.median(times), outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--old-budget", type=float, default=60.0, help="seconds per old call, at most")
    ap.add_argument("--repeats", type=int, default=5, help="new checker: median of this many")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for shape in SHAPES:
        last: tuple[int, float] | None = None  # (size, old seconds) of the last old run
        for size in sizes:
            text = make(shape, size)
            new_s, new_out = _time(check_query, text, args.repeats)
            estimate = None if last is None else last[1] * (len(text) / last[0]) ** 2
            if estimate is not None and estimate > args.old_budget:
                old_s, old_out = None, "skipped"
            else:
                old_s, old_out = _time(old_subquery, text, 1 if size >= 100_000 else 3)
                last = (len(text), old_s)
            row = {
                "shape": shape,
                "chars": len(text),
                "old_s": None if old_s is None else round(old_s, 6),
                "old_estimate_s": None if old_s is not None else round(estimate or 0, 1),
                "new_s": round(new_s, 6),
                "new_ns_per_char": round(new_s / len(text) * 1e9, 1),
                "ratio_old_over_new": None if old_s is None else round(old_s / new_s, 1),
                "old": old_out,
                "new": new_out,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        shape: {
            "new_ns_per_char": [r["new_ns_per_char"] for r in rows if r["shape"] == shape],
            "ratio_old_over_new": [r["ratio_old_over_new"] for r in rows if r["shape"] == shape],
        }
        for shape in SHAPES
    }
    print(json.dumps({"summary": summary, "sizes": sizes}))


if __name__ == "__main__":
    main()
