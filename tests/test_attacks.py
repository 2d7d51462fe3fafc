"""The gateway attacked as a hostile web page, a rebound DNS name, an abusive
client and a hostile Redis publisher would (issue 9). Each test names the hole
or defect it closes; all run against a real daemon, and the daemon's log must
hold no traceback afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from streamd.gateway import protocol
from streamd.transport.frame import FrameMeta, pack_frame

from .conftest import Daemon, launch_daemon, rss_kib, write_config
from .http_client import raw, request, statuses
from .support import RedisServer, free_port, wait_for

SYNTH = {"source": "synthetic:", "fps": 10, "width": 160, "detector": "none"}
ADMIN_TOKEN = "control-secret"
VIEW_A = "viewer-of-a"
SERVER_EXTRA = 'server_names = ["cams.example.com", "*.wall.example"]\n'
JSON_TYPE = {"Content-Type": "application/json"}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _start(path: Path, redis_url: str, server_extra: str, cameras: list[dict[str, Any]]) -> Daemon:
    return launch_daemon(path, redis_url=redis_url, cameras=cameras, server=server_extra)


@pytest.fixture(scope="module")
def daemon(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A default install (loopback, no tokens) with two names allowed."""
    path = tmp_path_factory.mktemp("open") / "streamd.toml"
    started = _start(path, module_redis.url, SERVER_EXTRA, [{"id": "door", **SYNTH}])
    yield started
    started.stop()
    assert_no_traceback(started)


@pytest.fixture(scope="module")
def secured(
    module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """Viewer tokens scoped per camera, and a control-only token."""
    path = tmp_path_factory.mktemp("secured") / "streamd.toml"
    cameras = [{"id": "sa", **SYNTH}, {"id": "sb", **SYNTH}]
    port = free_port()
    write_config(path, redis_url=module_redis.url, port=port, cameras=cameras)
    control = f'admin_token_sha256 = "{sha(ADMIN_TOKEN)}"\n'
    tokens = f'\n[[server.tokens]]\nname = "a"\nsha256 = "{sha(VIEW_A)}"\ncameras = ["sa"]\n'
    path.write_text(path.read_text().replace("[server]\n", "[server]\n" + control) + tokens)
    started = Daemon(path, port)
    started.wait_healthy(20)
    yield started
    started.stop()
    assert_no_traceback(started)


def assert_no_traceback(daemon: Daemon) -> None:
    text = daemon.log_text()
    assert "Traceback" not in text and "exception" not in text.lower(), text[-3000:]


def camera_running(daemon: Daemon, camera_id: str) -> bool:
    cameras = json.loads(request(daemon, "/api/cameras")[1])["cameras"]
    return bool(cameras[camera_id]["child"] != "stopped")


# --- hole 1: cross-site control -------------------------------------------------------------


def test_control_refuses_what_a_cross_site_page_can_send(daemon: Daemon) -> None:
    stop = "/api/v1/cameras/door/stop"
    # fetch(url, {method: "POST", mode: "no-cors"}): no preflight, a "simple" request.
    assert request(daemon, stop, "POST")[0] == 415
    simple = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    assert request(daemon, stop, "POST", simple)[0] == 403
    for origin in ("http://evil.example", "null"):
        assert request(daemon, stop, "POST", {**JSON_TYPE, "Origin": origin})[0] == 403
    site = {**JSON_TYPE, "Sec-Fetch-Site": "cross-site"}
    assert request(daemon, stop, "POST", site)[0] == 403
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert request(daemon, "/api/v1/reload", "POST", form)[0] == 415
    assert camera_running(daemon, "door")
    # A preflight from an unlisted origin is refused, so the browser never sends the POST.
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    status, _ = request(daemon, stop, "OPTIONS", preflight)
    assert status == 403
    # The page's own origin (and the CLI, no Origin) with a JSON body works.
    own = {**JSON_TYPE, "Origin": f"http://{daemon.base}", "Sec-Fetch-Site": "same-origin"}
    assert request(daemon, "/api/v1/cameras/door/start", "POST", own, b"{}")[0] == 200


# --- hole 2: DNS rebinding --------------------------------------------------------------------


async def test_rebound_host_names_are_refused_everywhere(daemon: Daemon) -> None:
    port = daemon.port
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    for path in ("/snapshot/door.jpg", "/api/cameras", "/", "/healthz", "/metrics"):
        assert request(daemon, path, headers=evil)[0] == 400, path
    evil_post = {**evil, **JSON_TYPE}
    assert request(daemon, "/api/v1/cameras/door/stop", "POST", evil_post)[0] == 400
    sock = socket.create_connection(("127.0.0.1", port))  # evil.example → 127.0.0.1
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            f"ws://evil.example:{port}/ws/door", sock=sock, origin=Origin(evil["Origin"])
        ):
            pass
    assert info.value.response.status_code == 400
    for host in ("127.0.0.1", "localhost", "[::1]", "cams.example.com", "a.wall.example"):
        assert request(daemon, "/healthz", headers={"Host": f"{host}:{port}"})[0] == 200, host
    for host in ("wall.example", "cams.example.com.evil.example", "bad host"):
        assert request(daemon, "/healthz", headers={"Host": f"{host}:{port}"})[0] == 400, host
    assert camera_running(daemon, "door")


# --- hole 3: memory from control frames ------------------------------------------------------


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


def test_ping_flood_from_a_client_that_never_reads(daemon: Daemon) -> None:
    before = rss_kib(daemon.process.pid)
    sock = socket.create_connection(("127.0.0.1", daemon.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"GET /ws/door HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    ping = _masked(0x9, b"x" * 125) * 64
    sock.settimeout(0.5)
    sent = 0
    deadline = time.monotonic() + 4
    with pytest.raises(OSError):  # the daemon closes the connection: the flood ends
        while time.monotonic() < deadline:
            sock.sendall(ping)
            sent += len(ping)
        raise OSError("still open after 4 s of pings")
    sock.close()
    grown_mib = (rss_kib(daemon.process.pid) - before) / 1024
    assert grown_mib < 20, f"RSS grew {grown_mib:.1f} MiB after {sent >> 20} MiB of pings"
    refused = request(daemon, "/metrics")[1].decode()
    assert 'streamd_requests_refused_total{reason="message_rate"}' in refused


# --- hole 4: loopback is not a credential when a control token is set -------------------------


def test_control_token_needed_even_from_loopback(secured: Daemon) -> None:
    stop = "/api/v1/cameras/sa/stop"
    assert request(secured, stop, "POST", JSON_TYPE)[0] == 401
    wrong = {**JSON_TYPE, "Authorization": "Bearer nope"}
    assert request(secured, stop, "POST", wrong)[0] == 401
    viewer = {**JSON_TYPE, "Authorization": f"Bearer {VIEW_A}"}
    assert request(secured, stop, "POST", viewer)[0] == 403
    admin = {**JSON_TYPE, "Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert request(secured, "/api/v1/cameras/sa/start", "POST", admin)[0] == 200


# --- defects ------------------------------------------------------------------------------------


def test_metrics_honour_token_scope(secured: Daemon) -> None:
    status, body = request(secured, "/metrics", headers=bearer(VIEW_A))
    text = body.decode()
    assert status == 200 and 'camera="sa"' in text
    assert 'camera="sb"' not in text and "streamd_requests_refused_total" not in text
    assert request(secured, "/metrics")[0] == 401


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_deeply_nested_json_on_ws_gets_an_error_reply(daemon: Daemon) -> None:
    async with connect(f"ws://{daemon.base}/ws") as ws:
        json.loads(await ws.recv())  # hello
        await ws.send("[" * 2000 + "]" * 2000)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["type"] == "error" and "nested" in reply["reason"]
        await ws.send(json.dumps({"op": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"


def test_duplicate_security_headers_get_400(daemon: Daemon) -> None:
    for header in ("Authorization: Bearer a", "Origin: http://a", "Host: 127.0.0.1"):
        answer = raw(
            daemon,
            f"GET /api/cameras HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\n"
            f"{header}\r\n\r\n".encode(),
        )
        assert statuses(answer)[:1] == [400], (header, answer[:200])


def test_pipelined_requests_each_get_an_answer(daemon: Daemon) -> None:
    one = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    last = b"GET /api/cameras HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    assert statuses(raw(daemon, one + one + last)) == [200, 200, 200]


def test_bodies_chunked_and_odd_methods_get_definite_answers(daemon: Daemon) -> None:
    answer = raw(
        daemon, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert statuses(answer) == [400]
    chunked = (
        b"POST /api/v1/cameras/door/start HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    )
    assert statuses(raw(daemon, chunked)) == [200]
    big = b"{" + b" " * 10_000 + b"}"
    start = "/api/v1/cameras/door/start"
    assert request(daemon, start, "POST", JSON_TYPE, big)[0] == 413
    assert request(daemon, start, "POST", JSON_TYPE, b"[1]")[0] == 400
    assert request(daemon, start, "POST", JSON_TYPE, b"[" * 3000)[0] == 400  # too deep
    for method in ("PUT", "DELETE", "PATCH", "TRACE"):
        assert request(daemon, "/healthz", method)[0] == 405, method
    assert request(daemon, "/healthz", "BREW")[0] == 400  # not an HTTP method at all
    assert statuses(raw(daemon, b"GARBAGE\r\n\r\n")) == [400]
    assert camera_running(daemon, "door")


def test_implausible_capture_times_stay_out_of_latency(
    daemon: Daemon, module_redis: RedisServer
) -> None:
    async def watch_and_publish() -> bytes:
        async with connect(f"ws://{daemon.base}/ws/visitor") as ws:
            client = module_redis.client()
            wait_for(lambda: client.pubsub_numsub("video:visitor")[0][1] > 0, 5, "subscribed")
            jpeg = b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"
            for seq, capture_ns in enumerate((1, time.time_ns() + 3600 * 10**9), start=1):
                client.publish(
                    "video:visitor",
                    pack_frame(FrameMeta("visitor", seq, capture_ns, 0, 8, 8), jpeg),
                )
                await asyncio.wait_for(ws.recv(), 5)  # forwarded all the same
            return jpeg

    asyncio.run(watch_and_publish())
    metrics = request(daemon, "/metrics")[1].decode()
    assert "streamd_frames_untimed_total 2.0" in metrics
    sums = re.findall(r'streamd_end_to_end_latency_seconds_sum\{camera="visitor"\} (\S+)', metrics)
    assert not sums or float(sums[0]) < 60


def test_handshakes_in_progress_count_toward_the_address_limit(
    module_redis: RedisServer, tmp_path: Path
) -> None:
    limits = "max_viewers_per_address = 3\nhandshake_timeout = 5.0\n"
    limited = _start(tmp_path / "l.toml", module_redis.url, limits, [{"id": "l", **SYNTH}])
    try:
        slow = [socket.create_connection(("127.0.0.1", limited.port)) for _ in range(3)]
        for sock in slow:
            sock.sendall(b"GET /ws/l HTTP/1.1\r\n")  # and never the rest

        async def try_viewer() -> int:
            try:
                async with connect(f"ws://{limited.base}/ws/l"):
                    return 101
            except InvalidStatus as exc:
                return exc.response.status_code

        assert asyncio.run(try_viewer()) == 429
        for sock in slow:
            sock.close()
        wait_for(lambda: asyncio.run(try_viewer()) == 101, 5, "slots freed on close")
    finally:
        limited.stop()
    assert_no_traceback(limited)


def test_session_and_parser_never_raise_on_junk() -> None:
    for junk in (
        "",
        "{",
        "[]",
        "null",
        '{"op": 1}',
        '{"op":"subscribe","cameras":["*"]}',
        "[" * 100_000,
        '{"a":' * 3000,
        "\ud800",
    ):
        with pytest.raises(protocol.ClientMessageError):
            protocol.parse_client_message(junk)
