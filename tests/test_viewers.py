"""Viewers: the multiplexed protocol, HTTP endpoints, the auth matrix, origins,
limits and demand-driven encoding, against a real daemon and real clients."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from streamd.config import TokenConfig
from streamd.gateway import protocol
from streamd.gateway.auth import Need, authorize, presented_token
from streamd.gateway.guards import viewer_origin_allowed as origin_allowed
from streamd.gateway.hub import HubFrame
from streamd.states import SourceState
from streamd.transport.frame import FrameMeta

from .conftest import Daemon, RedisServer, free_port, streamd_check, wait_for, write_config
from .viewers import decodes

JSON = {"Content-Type": "application/json"}  # control needs it (CSRF guard)

SYNTH = {"source": "synthetic:?width=160&height=120", "fps": 10}
VIEWER, OTHER, ADMIN = "view-token-1", "other-token-2", "admin-token-3"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = f"""
[[server.tokens]]
name = "front-viewer"
sha256 = "{digest(VIEWER)}"
cameras = ["front"]

[[server.tokens]]
name = "back-viewer"
sha256 = "{digest(OTHER)}"
cameras = ["back"]

[[server.tokens]]
name = "ops"
sha256 = "{digest(ADMIN)}"
cameras = ["*"]
admin = true
"""


# --- pure decisions ---------------------------------------------------------------------------

CONFIGURED = (
    TokenConfig("v", digest(VIEWER), ("front",)),
    TokenConfig("a", digest(ADMIN), ("*",), True),
)


@pytest.mark.parametrize(
    ("need", "presented", "camera", "expected"),
    [
        (Need.VIEW, None, "front", (False, 401)),
        (Need.VIEW, "wrong", "front", (False, 401)),
        (Need.VIEW, VIEWER, "back", (False, 403)),
        (Need.VIEW, VIEWER, "front", (True, 200)),
        (Need.VIEW, ADMIN, "back", (True, 200)),
        (Need.ADMIN, VIEWER, None, (False, 403)),
        (Need.ADMIN, ADMIN, None, (True, 200)),
        (Need.LIST, VIEWER, None, (True, 200)),
    ],
)
def test_authorize_matrix(
    need: Need, presented: str | None, camera: str | None, expected: tuple[bool, int]
) -> None:
    decision = authorize(
        need, tokens=CONFIGURED, presented=presented, peer="10.0.0.8", camera_id=camera
    )
    assert (decision.allowed, decision.status) == expected


def test_without_tokens_view_is_local_or_anonymous_and_admin_is_loopback_only() -> None:
    # Remote viewers without tokens need allow_anonymous (which a non-loopback
    # listen without tokens requires anyway; a proxied client is remote too).
    assert authorize(Need.VIEW, tokens=(), presented=None, peer="127.0.0.1").allowed
    assert not authorize(Need.VIEW, tokens=(), presented=None, peer="10.0.0.8").allowed
    assert authorize(
        Need.VIEW, tokens=(), presented=None, peer="10.0.0.8", allow_anonymous=True
    ).allowed
    assert authorize(Need.ADMIN, tokens=(), presented=None, peer="127.0.0.1").allowed
    assert authorize(Need.ADMIN, tokens=(), presented=None, peer="::1").allowed
    assert not authorize(Need.ADMIN, tokens=(), presented=None, peer="10.0.0.8").allowed


def test_token_is_found_in_header_subprotocol_or_query() -> None:
    assert presented_token("Bearer abc", [], "/ws") == "abc"
    assert presented_token(None, ["streamd, token.xyz"], "/ws") == "xyz"
    assert presented_token(None, [], "/ws/front?token=q1") == "q1"
    assert presented_token(None, [], "/ws/front") is None


def test_origin_rules() -> None:
    assert origin_allowed(None, "h:1", ())  # not a browser
    assert origin_allowed("http://h:1", "h:1", ())  # same origin
    assert not origin_allowed("http://evil.example", "h:1", ())
    assert origin_allowed("https://wall.example", "h:1", ("https://wall.example",))
    assert origin_allowed("http://any", "h:1", ("*",))


def test_rate_limiter_and_camera_state() -> None:
    limiter = protocol.RateLimiter(rate=2.0)
    assert [limiter.allow(0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow(0.6)  # refilled
    assert protocol.camera_state(SourceState.STALLED, 0.1) == "stalled"
    assert protocol.camera_state(None, None) == "offline"
    assert protocol.camera_state(None, 1.0) == "live"
    assert protocol.camera_state(None, 9.0) == "stalled"


def test_client_messages_and_frame_header() -> None:
    command = protocol.parse_client_message('{"op": "subscribe", "cameras": ["a", "b", "a"]}')
    assert command == protocol.ClientCommand("subscribe", ("a", "b"))
    for bad in (
        "{",
        "[]",
        '{"op": "dance"}',
        '{"op": "subscribe", "cameras": ["a*"]}',
        '{"op": "subscribe", "cameras": []}',
    ):
        with pytest.raises(protocol.ClientMessageError):
            protocol.parse_client_message(bad)
    frame = HubFrame("door", b"\xff\xd8jpeg", FrameMeta("door", 7, 123456789, 0, 1, 1), 0)
    assert protocol.decode_frame(protocol.encode_frame(frame)) == (
        "door",
        7,
        123456789,
        b"\xff\xd8jpeg",
    )


# --- against a running daemon ----------------------------------------------------------------


def secured_daemon(redis_server: RedisServer, start_daemon: Callable[..., Daemon]) -> Daemon:
    """Cameras front and back, with the three tokens of TOKENS."""
    return start_daemon(
        redis_url=redis_server.url,
        extra=TOKENS,
        cameras=[{"id": "front", **SYNTH}, {"id": "back", **SYNTH}],
    )


def http(
    daemon: Daemon, path: str, token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, str]:
    request = urllib.request.Request(f"http://{daemon.base}{path}", headers=headers or {})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), bytes(response.read()), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read()), exc.headers["Content-Type"]


async def ws_status(url: str, **kwargs: Any) -> int:
    """101 if the handshake succeeds, else the HTTP status of the refusal."""
    try:
        async with connect(url, open_timeout=5, **kwargs):
            return 101
    except InvalidStatus as exc:
        return int(exc.response.status_code)


async def test_auth_matrix_for_each_way_of_presenting_a_token(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = secured_daemon(redis_server, start_daemon)
    base = f"ws://{daemon.base}/ws/front"

    def ways(token: str) -> dict[str, tuple[str, dict[str, Any]]]:
        return {
            "bearer": (base, {"additional_headers": {"Authorization": f"Bearer {token}"}}),
            "subprotocol": (
                base,
                {"subprotocols": [Subprotocol("streamd"), Subprotocol(f"token.{token}")]},
            ),
            "query": (f"{base}?token={token}", {}),
        }

    assert await ws_status(base) == 401  # no token
    for token, expected in ((VIEWER, 101), ("wrong", 401), (OTHER, 403), (ADMIN, 101)):
        for way, (url, kwargs) in ways(token).items():
            assert await ws_status(url, **kwargs) == expected, (token, way)
    # The same token rules on HTTP.
    assert http(daemon, "/snapshot/front.jpg")[0] == 401
    assert http(daemon, "/snapshot/back.jpg", token=VIEWER)[0] == 403
    status, _, _ = http(daemon, f"/snapshot/front.jpg?token={VIEWER}")
    assert status in (200, 503)
    listed = json.loads(http(daemon, "/api/cameras", token=VIEWER)[1])["cameras"]
    assert list(listed) == ["front"]  # a token sees its own cameras only
    assert set(json.loads(http(daemon, "/api/cameras", token=ADMIN)[1])["cameras"]) == {
        "front",
        "back",
    }
    assert http(daemon, "/metrics")[0] == 401
    assert http(daemon, "/healthz")[0] == 200  # health stays open
    log = daemon.log_text()
    assert VIEWER not in log and ADMIN not in log and OTHER not in log
    assert '"reason": "unauthorized"' in log and '"reason": "forbidden"' in log


async def recv_json(ws: ClientConnection, kind: str, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            if isinstance(message, str):
                data: dict[str, Any] = json.loads(message)
                if data["type"] == kind:
                    return data


async def recv_frame(ws: ClientConnection, timeout: float = 10) -> tuple[str, int, int, bytes]:
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                return protocol.decode_frame(message)


async def test_multiplexed_protocol(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[
            {"id": "a", **SYNTH},
            {"id": "b", **SYNTH, "motion_warmup": 0.3},
            {"id": "dead", "source": "/nonexistent.mp4", "fps": 5},
        ],
    )
    async with connect(f"ws://{daemon.base}/ws", max_size=None) as ws:
        hello = await recv_json(ws, "hello")
        assert hello["version"] == 1 and set(hello["cameras"]) == {"a", "b", "dead"}
        await ws.send(json.dumps({"op": "subscribe", "cameras": ["a", "b", "dead"]}))
        subscribed = await recv_json(ws, "subscribed")
        assert subscribed["cameras"] == ["a", "b", "dead"] and subscribed["denied"] == []
        seen: dict[str, int] = {}
        states: dict[str, str] = {}
        async with asyncio.timeout(15):
            while not (
                {"a", "b"} <= set(seen)
                and states.get("dead") in ("connecting", "reconnecting")
                and states.get("a") == "live"
            ):
                message = await ws.recv()
                if isinstance(message, bytes):
                    camera, seq, capture_ns, jpeg = protocol.decode_frame(message)
                    assert decodes(jpeg) and capture_ns > 0 and seq >= 1
                    seen[camera] = seen.get(camera, 0) + 1
                else:
                    data = json.loads(message)
                    if data["type"] == "state":
                        states[data["camera"]] = data["state"]
        assert "dead" not in seen and states["dead"] in ("connecting", "reconnecting")
        event = await recv_json(ws, "event", timeout=15)  # b's moving square: motion
        assert event["camera"] in ("a", "b") and event["event"]["type"] == "detection"

        await ws.send(json.dumps({"op": "unsubscribe", "cameras": ["a"]}))
        await recv_json(ws, "unsubscribed")
        await asyncio.sleep(0.3)  # frames already in flight may still arrive
        cameras_after = [(await recv_frame(ws))[0] for _ in range(5)]
        assert cameras_after == ["b"] * 5

        await ws.send("not json")
        assert "not JSON" in (await recv_json(ws, "error"))["reason"]
        # At most 64 cameras per connection: the rest are denied, not subscribed.
        many = [f"x{i}" for i in range(64)]
        await ws.send(json.dumps({"op": "subscribe", "cameras": many}))
        answer = await recv_json(ws, "subscribed")
        assert len(answer["cameras"]) == 62  # b and dead are still subscribed
        reason = "too many cameras on one connection"
        assert answer["denied"] == [{"camera": c, "reason": reason} for c in ("x62", "x63")]
        await ws.send(json.dumps({"op": "ping"}))
        await recv_json(ws, "pong")

    # A camera stopped on the server is not shown as live.
    async with connect(f"ws://{daemon.base}/ws", max_size=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "cameras": ["a"]}))
        await recv_json(ws, "subscribed")
        request = urllib.request.Request(
            f"http://{daemon.base}/api/v1/cameras/a/stop", method="POST", headers=JSON
        )
        await asyncio.to_thread(urllib.request.urlopen, request, None, 10)
        async with asyncio.timeout(10):
            while True:
                data = await recv_json(ws, "state")
                if data["state"] == "stopped":
                    break


async def test_multiplexed_subscribe_with_a_scoped_token(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = secured_daemon(redis_server, start_daemon)
    assert await ws_status(f"ws://{daemon.base}/ws") == 401
    offered = [Subprotocol("streamd"), Subprotocol(f"token.{VIEWER}")]
    async with connect(f"ws://{daemon.base}/ws", subprotocols=offered) as ws:
        assert ws.subprotocol == "streamd"
        assert (await recv_json(ws, "hello"))["cameras"] == ["front"]
        await ws.send(json.dumps({"op": "subscribe", "cameras": ["front", "back"]}))
        answer = await recv_json(ws, "subscribed")
        assert answer["cameras"] == ["front"]
        assert answer["denied"] == [{"camera": "back", "reason": "token not valid for this camera"}]
        camera, _, _, _ = await recv_frame(ws)
        assert camera == "front"


def test_http_endpoints(redis_server: RedisServer, start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": "cam", **SYNTH}, {"id": "nothing-yet", "source": "/nonexistent.mp4"}],
    )
    status, body, kind = http(daemon, "/")
    assert status == 200 and kind.startswith("text/html") and b"streamdWall" in body
    wait_for(lambda: http(daemon, "/snapshot/cam.jpg")[0] == 200, 10, "a snapshot")
    status, body, kind = http(daemon, "/snapshot/cam.jpg")
    assert kind == "image/jpeg" and decodes(body)
    assert http(daemon, "/snapshot/unknown.jpg")[0] == 404
    assert http(daemon, "/snapshot/nothing-yet.jpg")[0] == 503
    assert http(daemon, "/snapshot/bad*id.jpg")[0] == 404
    cameras = json.loads(http(daemon, "/api/cameras")[1])["cameras"]
    for field in ("state", "fps_out", "last_frame_age_s", "viewers", "restarts"):
        assert field in cameras["cam"], field
    status, body, kind = http(daemon, "/metrics")
    assert (
        status == 200 and kind.startswith("text/plain") and b"streamd_frames_captured_total" in body
    )
    assert http(daemon, "/nowhere")[0] == 404


async def test_origin_check_on_websocket_handshakes(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "o", **SYNTH}])
    url = f"ws://{daemon.base}/ws/o"
    assert await ws_status(url, origin="http://evil.example") == 403
    assert await ws_status(url, origin=f"http://{daemon.base}") == 101
    assert await ws_status(url) == 101  # no Origin: not a browser


def connected_from(source: str, port: int) -> socket.socket:
    """A TCP connection to the daemon from another loopback address."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


async def test_limits(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    limits = (
        "max_viewers = 3\nmax_viewers_per_address = 2\nmax_messages_per_second = 5\n"
        "handshake_timeout = 1.0\n"
    )
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "l", **SYNTH}])
    daemon.stop()
    daemon.config.write_text(daemon.config.read_text().replace("[server]\n", "[server]\n" + limits))
    limited = Daemon(daemon.config, daemon.port)
    try:
        limited.wait_healthy()
        url = f"ws://{limited.base}/ws/l"
        async with connect(url), connect(url):
            assert await ws_status(url) == 429  # per address
            other = connected_from("127.0.0.2", limited.port)
            async with connect(url, sock=other):
                fourth = connected_from("127.0.0.2", limited.port)
                assert await ws_status(url, sock=fourth) == 503  # in total
        # Message rate: a burst of pings closes the connection with 1008.
        async with connect(url) as ws:
            with pytest.raises(ConnectionClosed) as info:
                for _ in range(50):
                    await ws.send("ping")
                    await asyncio.sleep(0.01)
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
            assert info.value.rcvd.reason == "message rate limit"
        # Message size: over 4 KiB closes with 1009.
        async with connect(url) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.send("x" * 10_000)
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        # Handshake time: a client that never finishes its request is dropped.
        sock = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
        started = time.monotonic()
        sock.sendall(b"GET /ws/l HTTP/1.1\r\n")
        try:
            answer = await asyncio.to_thread(sock.recv, 100)
        except ConnectionResetError:
            answer = b""
        sock.close()
        assert answer == b"" and time.monotonic() - started < 4.0
        metrics = http(limited, "/metrics")[1].decode()
        assert 'streamd_requests_refused_total{reason="max_viewers_per_address"} 1.0' in metrics
        assert 'streamd_requests_refused_total{reason="message_rate"} 1.0' in metrics
        refusals = [e for e in limited.log_events() if e["event"] == "request refused"]
        assert {e["reason"] for e in refusals} >= {"max_viewers_per_address", "max_viewers"}
    finally:
        limited.stop()


def test_non_loopback_listen_needs_tokens_or_explicit_anonymous(tmp_path: Path) -> None:
    def check(server: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "s.toml"
        path.write_text(f"[server]\n{server}\n")
        return streamd_check(path)

    refused = check('listen = "0.0.0.0:8765"')
    assert refused.returncode == 78
    assert "server.listen" in refused.stderr and "allow_anonymous" in refused.stderr
    assert check('listen = "0.0.0.0:8765"\nallow_anonymous = true').returncode == 0
    token = f'listen = "0.0.0.0:8765"\n[[server.tokens]]\nsha256 = "{digest("t")}"'
    assert check(token).returncode == 0
    assert check('listen = "localhost:8765"').returncode == 0


# --- demand: encode only what someone watches ------------------------------------------------


def camera_info(daemon: Daemon, camera_id: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(http(daemon, "/api/cameras")[1])["cameras"][camera_id]
    return info


async def test_demand_follows_viewers_and_any_redis_consumer(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "d", **SYNTH}])
    # After the priming period nobody watches: the child stops encoding.
    await asyncio.to_thread(
        wait_for, lambda: camera_info(daemon, "d").get("watched") is False, 15, "idle"
    )
    async with connect(f"ws://{daemon.base}/ws/d", max_size=None) as ws:
        cached = await asyncio.wait_for(ws.recv(), 1.0)  # the cached frame bridges the gap
        assert isinstance(cached, bytes)
        started = time.monotonic()
        fresh = await asyncio.wait_for(ws.recv(), 2.0)
        assert isinstance(fresh, bytes) and fresh != cached
        resumed_after = time.monotonic() - started
    assert resumed_after < 0.5, resumed_after  # one interval at 10 fps, plus a poll
    await asyncio.to_thread(
        wait_for, lambda: camera_info(daemon, "d").get("watched") is False, 10, "idle again"
    )
    # A plain Redis consumer (redis-cli SUBSCRIBE, the old API server) is a viewer too.
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("video:d")
    await asyncio.to_thread(
        wait_for, lambda: camera_info(daemon, "d").get("watched") is True, 5, "watched by SUBSCRIBE"
    )
    pubsub.unsubscribe("video:d")
    await asyncio.to_thread(
        wait_for,
        lambda: camera_info(daemon, "d").get("watched") is False,
        10,
        "idle after UNSUBSCRIBE",
    )
    pattern = redis_server.client().pubsub()
    pattern.psubscribe("video:*")
    await asyncio.to_thread(
        wait_for,
        lambda: camera_info(daemon, "d").get("watched") is True,
        5,
        "watched by PSUBSCRIBE",
    )


async def test_demand_without_redis(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(
        redis_url=None, cameras=[{"id": "e", **SYNTH}], env={"VIDEO_STREAM_USE_REDIS": "0"}
    )
    await asyncio.to_thread(
        wait_for, lambda: camera_info(daemon, "e").get("watched") is False, 15, "idle"
    )
    async with connect(f"ws://{daemon.base}/ws/e", max_size=None) as ws:
        await asyncio.wait_for(ws.recv(), 1.0)  # cached
        await asyncio.wait_for(ws.recv(), 1.0)  # fresh: encoding resumed
        await asyncio.to_thread(
            wait_for, lambda: camera_info(daemon, "e").get("watched") is True, 3, "reported"
        )


async def test_tls_from_cert_and_key(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    config = write_config(
        tmp_path / "tls.toml",
        redis_url=redis_server.url,
        port=port,
        cameras=[{"id": "t", **SYNTH}],
    )
    config.write_text(
        config.read_text().replace(
            "[server]\n", f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        )
    )
    daemon = Daemon(config, port)
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        await asyncio.to_thread(wait_for, lambda: _tls_ready(port, trusted), 20, "TLS listener")
        async with connect(f"wss://127.0.0.1:{port}/ws/t", ssl=trusted, max_size=None) as ws:
            assert decodes(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[arg-type]
        with pytest.raises(ssl.SSLError):  # an untrusting client refuses the handshake
            async with connect(f"wss://127.0.0.1:{port}/ws/t", ssl=ssl.create_default_context()):
                pass
    finally:
        daemon.stop()


def _tls_ready(port: int, context: ssl.SSLContext) -> bool:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except OSError:
        return False
