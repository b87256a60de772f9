"""The Open Inference Protocol's binary tensor data extension, on the way in.

KServe's and Triton's clients send tensors as raw bytes after a JSON header by default
(``InferInput.set_data_from_numpy``): the ``Inference-Header-Content-Length`` header says
where the JSON ends, each input's ``parameters.binary_data_size`` how many bytes follow for
it, and a BYTES tensor is a run of 4-byte little-endian lengths, each followed by its bytes.
This middleware turns such a request back into the plain JSON form before the routes see
it, so the v2 ``infer`` route, its limits and its OpenAPI schema stay one. Bad framing is a
400 naming the input; the body size limit still applies (it wraps the receive used here).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from snowtrain.serve.errors import error_response

HEADER = "inference-header-content-length"


class BinaryTensorError(ValueError):
    """The binary part does not match what the JSON header announces."""


def decode_bytes_tensor(raw: bytes, where: str) -> list[str]:
    """A BYTES tensor's elements: (uint32 little-endian length, UTF-8 bytes) repeated."""
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise BinaryTensorError(f"{where}: truncated element length at byte {at}")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise BinaryTensorError(f"{where}: element of {size} bytes runs past the data")
        try:
            out.append(raw[at : at + size].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BinaryTensorError(f"{where}[{len(out)}] is not valid UTF-8") from exc
        at += size
    return out


def to_json_request(body: bytes, json_length: int) -> dict[str, Any]:
    """The request with every binary input's ``data`` filled in from the bytes after the
    JSON header (its ``binary_data_size`` parameter removed)."""
    if not 0 < json_length <= len(body):
        raise BinaryTensorError(f"{HEADER} is {json_length} but the body has {len(body)} bytes")
    try:
        request = json.loads(body[:json_length])
    except ValueError as exc:
        raise BinaryTensorError("the JSON header is not valid JSON") from exc
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BinaryTensorError("the JSON header has no inputs list")
    at = json_length
    for i, tensor in enumerate(request["inputs"]):
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = params.pop("binary_data_size", None) if isinstance(params, dict) else None
        if size is None:
            continue
        where = f"inputs[{i}]"
        if not isinstance(size, int) or size < 0 or at + size > len(body):
            raise BinaryTensorError(f"{where}.parameters.binary_data_size does not fit the body")
        if tensor.get("datatype") != "BYTES":
            raise BinaryTensorError(f"{where}: binary data is accepted for BYTES tensors only")
        tensor["data"] = decode_bytes_tensor(body[at : at + size], f"{where}.data")
        at += size
    if at != len(body):
        raise BinaryTensorError(f"{len(body) - at} bytes after the last tensor")
    return request


class BinaryTensors:
    """ASGI middleware: binary-extension requests become JSON requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = Headers(scope=scope).get(HEADER) if scope["type"] == "http" else None
        if length is None:
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
            if not length.isdigit():
                raise BinaryTensorError(f"{HEADER} must be a byte count, not {length!r}")
            payload = json.dumps(to_json_request(body, int(length))).encode()
        except HTTPException as exc:  # the size limit, raised from its receive
            await error_response(exc.status_code, str(exc.detail))(scope, receive, send)
            return
        except BinaryTensorError as exc:
            await error_response(400, f"binary tensor data: {exc}")(scope, receive, send)
            return
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k.lower() not in (b"content-length", b"content-type", HEADER.encode())
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]  # fmt: skip
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # disconnect, as the server reports it
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)
