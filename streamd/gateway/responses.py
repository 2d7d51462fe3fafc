"""HTTP response helpers: every answer carries the same safety headers."""

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


def error(status: int, message: str, *, close: bool = False, **headers: str) -> web.Response:
    return json_response(status, {"error": message}, close=close, **headers)
