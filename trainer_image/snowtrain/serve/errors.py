"""One JSON error shape for every failure: `{"error": {"message", "type", "code"}}`.

It is the shape OpenAI clients parse, and KServe clients only need a status and a message.
FastAPI's defaults (422 with a list of pydantic errors, `{"detail": ...}` elsewhere) are
replaced so a malformed body answers 400 with one sentence saying what is wrong, and a body
that only breaks a size limit (too many items, too long a text) answers 413 quoting the limit.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from snowtrain.serve.schemas import OVER_LIMIT, UNION_TAGS, invalid_text_message

_SIZE_ERRORS = frozenset({"too_long", "string_too_long"})
"""pydantic error types that mean "too big" (413) rather than "malformed" (400)."""

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error answered with `status` and `message` (safe to show the client)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "error"), "code": status}}


def error_response(status: int, message: str, headers: dict[str, str] | None = None):
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def _describe(err: Any) -> str:
    """One sentence for one pydantic error, naming the field (`instances[2].text`)."""
    # Union members each report; drop the member tag pydantic appends to the location.
    loc = tuple(p for p in err.get("loc", ()) if not (isinstance(p, str) and p in UNION_TAGS))
    where = _where(loc)
    ctx = err.get("ctx") or {}
    kind = err.get("type")
    if kind == "too_long":  # the wording the routes used before the schemas held limits
        actual = ctx.get("actual_length")
        size = f"{actual} items" if actual is not None else "too many items"
        return f"{where} has {size}; this server accepts at most {ctx.get('max_length')}"
    if kind == "string_too_long":
        value = err.get("input")
        size = f"{len(value)} characters" if isinstance(value, str) else "too long"
        return f"{where} is {size}; the limit is {ctx.get('max_length')}"
    if kind == OVER_LIMIT:
        return str(err.get("msg"))
    if kind == "string_unicode" and isinstance(err.get("input"), str):
        # A lone surrogate in a str pydantic had to measure; say which character.
        message = invalid_text_message(err["input"])
        if message is not None:
            return f"{where}: {message}"
    return f"{where}: {err.get('msg')}"


def validation_status(exc: RequestValidationError) -> int:
    """413 when every problem is a size limit (the body is fine, just too big), else 400."""
    errors = exc.errors()
    return 413 if errors and all(e.get("type") in _SIZE_ERRORS for e in errors) else 400


def describe_validation_error(exc: RequestValidationError) -> str:
    """Turn pydantic's error list into one readable sentence per problem (at most 3).

    Never quotes the offending input: it may be megabytes long, or a lone surrogate that
    the JSON encoder of the answer itself could not encode.
    """
    msgs = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            return f"request body is not valid JSON: {detail}".rstrip(": ")
        if err.get("type") == "missing" and tuple(err.get("loc", ())) == ("body",):
            return "request body is missing (expected a JSON object)"
        msgs.append(_describe(err))
    unique = list(dict.fromkeys(msgs))
    return "; ".join(unique[:3]) + (f" (and {len(unique) - 3} more)" if len(unique) > 3 else "")


def install_error_handlers(app: FastAPI, max_body_bytes: int | None = None) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_status(exc), describe_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 413:
            limit = f" of {max_body_bytes} bytes" if max_body_bytes else ""
            message = f"request body exceeds the server's limit{limit}"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))


class BodySizeLimit:
    """Answer 413 in the JSON error shape when a request body exceeds the limit.

    A declared Content-Length is refused before the body is read; a chunked body is counted
    as it arrives and refused once it passes the limit (the HTTPException raised from
    `receive` reaches the handler above). FastAPI's own `max_body_size` answers in plain text,
    which clients of these APIs cannot parse.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            response = error_response(
                413, f"request body is {length} bytes; the server's limit is {limit} bytes"
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413)
            return message

        await self.app(scope, counting_receive, send)
