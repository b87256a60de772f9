"""Scrub credential values out of everything the trainer prints.

Credentials must never reach stdout, stderr, the termination message or the exported files
(README: "The trainer contract", **In**). Code is written not to print them, but a connector
exception or a third-party log line may still quote one; so the trainer wraps
``sys.stdout``/``sys.stderr`` in a stream that replaces every known secret value before the
text leaves the process. The values come from the data layer's
``Credentials.secret_values()``.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from typing import TextIO

MASK = "***"
#: Shorter values are not scrubbed: masking "1" or "ab" everywhere would garble all output,
#: and a secret that short is not protected by masking anyway.
MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces known secret values (and each long line of multi-line ones, e.g. PEM keys)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._needles: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str | None]) -> None:
        """Register more values to scrub (longest first, so a prefix never leaves a tail)."""
        needles = set(self._needles)
        for value in secrets:
            if not value:
                continue
            value = str(value)
            candidates = [value, value.strip(), *value.splitlines()]
            needles.update(c.strip() for c in candidates if len(c.strip()) >= MIN_SECRET_LENGTH)
        self._needles = sorted(needles, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._needles)


class RedactingStream(io.TextIOBase):
    """A text stream that scrubs secrets line by line before writing to ``target``.

    Text is held until a newline (or ``flush``) so a secret split across two ``write`` calls
    is still caught.
    """

    def __init__(self, target: TextIO, redactor: Redactor) -> None:
        self._target = target
        self._redactor = redactor
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self._target.write(self._redactor(complete + "\n"))
            self._target.flush()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._target.write(self._redactor(self._pending))
            self._pending = ""
        self._target.flush()

    def fileno(self) -> int:
        return self._target.fileno()

    def isatty(self) -> bool:
        return self._target.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


def install(redactor: Redactor) -> None:
    """Route ``sys.stdout`` and ``sys.stderr`` (and so print, logging, tracebacks) through it."""
    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if not isinstance(current, RedactingStream):
            setattr(sys, name, RedactingStream(current, redactor))


def setup_logging() -> Redactor:
    """A program's logging as the pod log shows it: every line through a :class:`Redactor`
    (``install``) to stderr with time, level and logger. Returns the redactor, which learns
    the secrets once they are loaded."""
    import logging

    redactor = Redactor()
    install(redactor)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    return redactor
