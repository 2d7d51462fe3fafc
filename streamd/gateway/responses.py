"""HTTP plumbing: answers that all carry the same safety headers, and request
bodies read with a bound."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SAFETY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def response(
    status: int, body: bytes, content_type: str, *, close: bool = False, **headers: str
) -> web.Response:
    all_headers = {**_SAFETY_HEADERS, "Content-Type": content_type, **headers}
    answer = web.Response(status=status, body=body, headers=all_headers)
    if close:
        answer.force_close()
    return answer


def json_response(
    status: int, body: dict[str, Any], *, close: bool = False, **headers: str
) -> web.Response:
    data = (json.dumps(body) + "\n").encode()
    return response(status, data, "application/json", close=close, **headers)


def error(
    status: int, message: str, *, close: bool = False, old_api: str | None = None
) -> web.Response:
    """streamd's ``{"error": message}``, or with ``old_api`` (the error's short
    name) the old API server's ``{"detail": {"error", "message"}}``."""
    if old_api is not None:
        body: dict[str, Any] = {"detail": {"error": old_api, "message": message}}
    else:
        body = {"error": message}
    return json_response(status, body, close=close)


async def read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` (chunked ones too)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    data = bytearray()
    while True:
        chunk = await request.content.read(limit + 1 - len(data))
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            return None
