"""HTTP plumbing: answers that all carry the same safety headers, and request
bodies read with a bound."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from streamd.untrusted import dumps

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SAFETY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # No other site may frame the wall (clickjacking its token form).
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


_CSP_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,300}", re.ASCII)


def wall_policy(host_header: str | None) -> str:
    """The wall page's Content-Security-Policy: it may connect to its own origin
    only (``fetch``, its WebSocket), so a URL someone slipped into an event cannot
    take its token elsewhere. ``'self'`` covers ``ws:``/``wss:`` in CSP 3; the
    request's ``Host`` (already checked against the allowlist) is named too, for
    browsers that predate it. The wall talks to no other origin: ``allowed_origins``
    concerns other sites' pages, not this one."""
    sources = ["'self'"]
    if host_header is not None and _CSP_HOST.fullmatch(host_header):
        sources += [f"ws://{host_header}", f"wss://{host_header}"]
    return f"frame-ancestors 'none'; connect-src {' '.join(sources)}"


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
    data = (dumps(body) + "\n").encode()  # never NaN: every JSON answer goes through here
    return response(status, data, "application/json", close=close, **headers)


def error(
    status: int, message: str, *, close: bool = False, seed_error: str | None = None
) -> web.Response:
    """streamd's ``{"error": message}``, or with ``seed_error`` (the error's short
    name) the seed system's ``{"detail": {"error", "message"}}``."""
    if seed_error is not None:
        body: dict[str, Any] = {"detail": {"error": seed_error, "message": message}}
    else:
        body = {"error": message}
    return json_response(status, body, close=close)


MIN_BODY_RATE = 256 * 1024  # bytes/s a body may take beyond the handshake timeout


@dataclass(frozen=True)
class BodyRefusal:
    reason: str
    status: int
    message: str


async def read_body(request: web.BaseRequest, limit: int, patience: float) -> bytes | BodyRefusal:
    """The body, at most ``limit`` bytes (chunked ones too), read within
    ``patience`` seconds plus what ``MIN_BODY_RATE`` allows: a client trickling its body
    cannot hold a connection (and a viewer slot) open. ``Expect: 100-continue``
    is answered here, once the request has been let through."""
    length = request.content_length
    if length is not None and length > limit:
        return BodyRefusal("body_too_large", 413, f"the body is at most {limit} bytes")
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper has not started
    data = bytearray()
    try:
        async with asyncio.timeout(patience + (length or limit) / MIN_BODY_RATE):
            while True:
                chunk = await request.content.read(limit + 1 - len(data))
                if not chunk:
                    return bytes(data)
                data += chunk
                if len(data) > limit:
                    return BodyRefusal("body_too_large", 413, f"the body is at most {limit} bytes")
    except TimeoutError:
        return BodyRefusal("body_timeout", 408, "the request body came too slowly")
