"""A few raw API calls the bring-up needs before any client library is involved.

`up` must work with nothing but the standard library and the state dir (it runs from the
Makefile and the CLI); it only needs readiness probes, a node lookup and one status-subresource
patch (kubectl 1.20 cannot patch subresources), so an ssl+urllib helper is enough.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from tests.cluster.pki import Pki


class Api:
    """HTTPS calls to the apiserver as the admin client certificate."""

    def __init__(self, server: str, pki: Pki, user: str = "admin") -> None:
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(pki.ca))
        self.ctx.load_cert_chain(str(pki.crt(user)), str(pki.key(user)))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        """(status, decoded JSON or text); HTTP errors are returned, not raised."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def ok(self, path: str) -> bool:
        """True when GET path answers 200; False on any error (not up yet)."""
        try:
            status, _ = self.request("GET", path, timeout=10.0)
        except OSError:
            return False
        return status == 200
