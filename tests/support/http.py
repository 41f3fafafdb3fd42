"""The one HTTP helper of the tests: a request on a fresh loopback connection, and the calls
of the reference server's API that many tests make."""
from __future__ import annotations

import base64
import http.client
import json
from typing import Any

from support.server import ADMIN


def http_request(port: int, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None, timeout: float = 10.0,
                 ) -> tuple[int, Any]:
    """One request to ``127.0.0.1:port``: ``(status, decoded JSON or text)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    if "json" in (response.getheader("Content-Type") or ""):
        return response.status, json.loads(raw)
    return response.status, raw.decode("utf-8", "replace")


def basic_auth(app: dict[str, str]) -> dict[str, str]:
    """The ``Authorization`` header of an app server (HTTP Basic, app key and master secret)."""
    raw = f"{app['app_key']}:{app['master_secret']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def create_app(port: int, name: str = "test", admin_token: str = ADMIN) -> dict[str, str]:
    """``POST /v1/apps`` with the admin token: the new app's JSON (201 or the test fails)."""
    status, body = http_request(port, "POST", "/v1/apps", {"name": name},
                                {"Authorization": f"Bearer {admin_token}"})
    assert status == 201, f"cannot create an app: {status} {body}"
    return body


def metrics(port: int) -> dict[str, float]:
    """``GET /metrics`` parsed: ``{sample name with labels: value}``."""
    status, text = http_request(port, "GET", "/metrics")
    assert status == 200, f"/metrics: {status}"
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values
