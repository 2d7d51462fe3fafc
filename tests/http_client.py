"""HTTP from a test's side of the wire: a urllib request that returns the
status instead of raising, and raw bytes for what urllib will not send."""

from __future__ import annotations

import contextlib
import re
import socket
import time
import urllib.error
import urllib.request

from .conftest import Daemon


def request(
    daemon: Daemon,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"http://{daemon.base}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def raw(daemon: Daemon, data: bytes, wait: float = 3.0) -> bytes:
    """Send raw bytes, read until the server closes or ``wait`` passes."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=wait) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before the end
            sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def statuses(answer: bytes) -> list[int]:
    """Every status line in what came back (pipelined answers included)."""
    return [int(m) for m in re.findall(rb"^HTTP/1\.[01] (\d{3}) ", answer, re.MULTILINE)]
