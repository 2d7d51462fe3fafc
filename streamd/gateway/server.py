"""The viewer-facing server: WebSocket frame streams and plain HTTP on one port.

Routes (``route`` is pure and unit-tested):

- ``/ws/{camera_id}`` and ``/api/v1/video-stream/ws/{camera_id}`` (the old
  server's path): one binary message per JPEG frame, the cached frame at once,
  text ``ping`` answered with ``pong``. An invalid id is closed with 1008.
- ``/healthz``: 200 when the gateway can serve frames, else 503.
- ``/api/cameras``: each camera's state as JSON.
- ``POST /api/v1/cameras/{camera_id}/start|stop`` and ``POST /api/v1/reload``:
  runtime control (the old API's paths), from loopback only unless an admin
  token is configured, in which case the token is required from everywhere.

Each viewer has its own sender task fed by a latest-wins mailbox, so a viewer on
a slow link only ever slows itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http
import ipaddress
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamd.config import Config, is_valid_camera_id
from streamd.gateway.hub import Hub, HubFrame, Mailbox
from streamd.transport.frame import FrameError, parse_frame
from streamd.transport.subscriber import FrameSubscriber

log = structlog.get_logger("streamd.gateway")
STREAM_PREFIXES = ("/ws/", "/api/v1/video-stream/ws/")
CLOSE_POLICY = 1008
MAX_VIEWER_MESSAGE = 4096  # viewers only send small text (ping, JSON)
MAX_EVENT_BYTES = 64 * 1024


CONTROL_PREFIX = "/api/v1/cameras/"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Control(Protocol):
    """What the gateway may ask of the daemon (implemented by ``daemon.py``)."""

    async def start_camera(self, camera_id: str) -> bool: ...

    async def stop_camera(self, camera_id: str) -> bool: ...

    async def reload(self) -> tuple[bool, str]: ...

    def cameras(self) -> dict[str, dict[str, Any]]: ...

    def metrics(self) -> bytes: ...


@dataclass(frozen=True)
class Route:
    kind: str  # stream | healthz | cameras | camera_control | reload | not_found
    camera_id: str = ""
    action: str = ""


def route(path: str) -> Route:
    clean = urlsplit(path).path
    if clean == "/healthz":
        return Route("healthz")
    if clean == "/api/cameras":
        return Route("cameras")
    if clean == "/metrics":
        return Route("metrics")
    if clean == "/api/v1/reload":
        return Route("reload")
    for prefix in STREAM_PREFIXES:
        if clean.startswith(prefix):
            return Route("stream", clean[len(prefix) :])
    if clean.startswith(CONTROL_PREFIX):
        camera_id, _, action = clean[len(CONTROL_PREFIX) :].partition("/")
        if action in ("start", "stop"):
            return Route("camera_control", camera_id, action)
    return Route("not_found")


def bearer_token(headers: Headers) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def admin_allowed(token: str | None, peer: str, admin_token_sha256: str | None) -> bool:
    """Loopback only without a configured token; with one, the token everywhere."""
    if admin_token_sha256 is not None:
        if token is None:
            return False
        digest = hashlib.sha256(token.encode()).hexdigest()
        return hmac.compare_digest(digest, admin_token_sha256)
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


class Gateway:
    def __init__(
        self,
        config: Config,
        hub: Hub,
        subscriber: FrameSubscriber | None,
        fallback_active: Callable[[], bool] = lambda: False,
        control: Control | None = None,
    ) -> None:
        self.config = config
        self.control = control
        self.hub = hub
        self.subscriber = subscriber
        self.fallback_active = fallback_active
        self.rejected: Counter[str] = Counter()
        self.last_events: dict[str, dict[str, Any]] = {}
        self.viewers_total = 0
        self._server: Server | None = None

    # --- frames in --------------------------------------------------------------------
    def ingest(self, camera_id: str, payload: bytes) -> None:
        """Validate an untrusted frame (Redis or a child) and hand it to the hub."""
        try:
            parsed = parse_frame(payload, self.config.server.max_frame_bytes)
        except FrameError as exc:
            self._reject(camera_id, exc.reason)
            return
        if parsed.meta is not None and parsed.meta.camera_id != camera_id:
            self._reject(camera_id, "camera_mismatch")
            return
        self.hub.publish(HubFrame(camera_id, parsed.payload, parsed.meta, time.time_ns()))

    def ingest_event(self, camera_id: str, payload: bytes) -> None:
        """Validate an untrusted detection event and keep the newest per camera."""
        try:
            if len(payload) > MAX_EVENT_BYTES:
                raise ValueError("too large")
            event = json.loads(payload)
            if not isinstance(event, dict) or event.get("camera_id") != camera_id:
                raise ValueError("not an event for this camera")
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self._reject(camera_id, "bad_event")
            return
        if camera_id in self.hub.feeds or self.config.camera(camera_id) is not None:
            self.last_events[camera_id] = event

    def _reject(self, camera_id: str, reason: str) -> None:
        self.rejected[reason] += 1
        total = sum(self.rejected.values())
        if total & (total - 1) == 0:  # log the 1st, 2nd, 4th, 8th… only
            log.warning("frame rejected", camera_id=camera_id, reason=reason, rejected_total=total)

    # --- health -----------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        if self._server is None:
            return False, "not listening"
        if self.subscriber is None:
            return True, "redis disabled: local frames"
        if self.subscriber.subscribed:
            return True, "subscribed"
        if self.fallback_active():
            return True, "redis down: local fallback"
        return False, "redis subscription down"

    # --- HTTP ---------------------------------------------------------------------
    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        target = route(request.path)
        method = getattr(request, "method", "GET")
        if target.kind == "stream":
            return None  # go on with the WebSocket handshake
        if target.kind == "healthz":
            ok, detail = self.healthy()
            status = http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE
            health = {
                "status": "ok" if ok else "unavailable",
                "detail": detail,
                "viewers": self.hub.viewers(),
            }
            return json_response(status, health)
        if target.kind == "cameras":
            return json_response(http.HTTPStatus.OK, self.cameras())
        if target.kind == "metrics" and self.control is not None:
            exposition = self.control.metrics()
            headers = Headers(
                [
                    ("Content-Type", PROMETHEUS_CONTENT_TYPE),
                    ("Content-Length", str(len(exposition))),
                ]
            )
            return Response(200, "OK", headers, exposition)
        if target.kind in ("camera_control", "reload"):
            return await self._control(connection, request, method, target)
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")

    def cameras(self) -> dict[str, Any]:
        cameras = self.control.cameras() if self.control else {}
        for camera_id, info in cameras.items():
            latest = self.hub.latest(camera_id)
            info["viewers"] = self.hub.viewers(camera_id)
            info["last_event"] = self.last_events.get(camera_id)
            info["last_frame_age_s"] = (
                round((time.time_ns() - latest.received_ns) / 1e9, 3) if latest else None
            )
        return {"cameras": cameras}

    async def _control(
        self, connection: ServerConnection, request: Request, method: str, target: Route
    ) -> Response:
        if method != "POST":
            return json_response(http.HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use POST"})
        peer = connection.remote_address[0] if connection.remote_address else ""
        token = bearer_token(request.headers)
        if not admin_allowed(token, peer, self.config.server.admin_token_sha256):
            self.rejected["control_forbidden"] += 1
            log.warning("control request refused", path=urlsplit(request.path).path, peer=peer)
            return json_response(http.HTTPStatus.FORBIDDEN, {"error": "forbidden"})
        if self.control is None:
            return json_response(http.HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no supervisor"})
        if target.kind == "reload":
            ok, detail = await self.control.reload()
            status = http.HTTPStatus.OK if ok else http.HTTPStatus.UNPROCESSABLE_ENTITY
            return json_response(status, {"reloaded": ok, "detail": detail})
        if not is_valid_camera_id(target.camera_id):
            return json_response(http.HTTPStatus.BAD_REQUEST, {"error": "invalid camera id"})
        act = self.control.start_camera if target.action == "start" else self.control.stop_camera
        if not await act(target.camera_id):
            return json_response(http.HTTPStatus.NOT_FOUND, {"error": "unknown camera"})
        log.info("camera control", camera_id=target.camera_id, action=target.action, peer=peer)
        return json_response(
            http.HTTPStatus.OK, {"camera_id": target.camera_id, "action": target.action}
        )

    # --- WebSocket viewers ------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        camera_id = route(ws.request.path if ws.request else "").camera_id
        if not is_valid_camera_id(camera_id):
            await ws.close(CLOSE_POLICY, "invalid camera id")
            return
        configured = self.config.camera(camera_id) is not None
        mailbox = self.hub.attach(camera_id)
        if self.subscriber is not None:
            self.subscriber.want(camera_id)
        self.viewers_total += 1
        peer = ws.remote_address[0] if ws.remote_address else "?"
        log.info(
            "viewer connected", camera_id=camera_id, peer=peer, viewers=self.hub.viewers(camera_id)
        )
        pump = asyncio.create_task(self._pump(ws, mailbox))
        try:
            async for message in ws:
                if message == "ping":
                    await ws.send("pong")
        except ConnectionClosed:
            pass
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            self.hub.detach(mailbox, keep_cache=configured)
            if self.subscriber is not None:
                self.subscriber.unwant(camera_id)
            log.info(
                "viewer disconnected",
                camera_id=camera_id,
                peer=peer,
                delivered=mailbox.delivered,
                skipped=mailbox.skipped,
            )

    async def _pump(self, ws: ServerConnection, mailbox: Mailbox) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await mailbox.get()
                await ws.send(frame.payload)
                self.hub.record_sent(frame, time.time_ns())

    async def start(self) -> Server:
        server_config = self.config.server
        self._server = await serve(
            self._handle,
            server_config.host,
            server_config.port,
            process_request=self._process_request,
            compression=None,  # JPEG does not compress; deflate would only burn CPU
            max_size=MAX_VIEWER_MESSAGE,
            ping_interval=20,
            ping_timeout=20,
            open_timeout=10,
            close_timeout=2,
        )
        return self._server

    def bound_port(self) -> int:
        assert self._server is not None
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("server has no socket")

    async def close(self) -> None:
        """Stop accepting, close viewers with 1001 (going away), wait for them."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close(close_connections=True)
        await server.wait_closed()


def json_response(status: http.HTTPStatus, body: dict[str, Any]) -> Response:
    data = (json.dumps(body) + "\n").encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status.value, status.phrase, headers, data)
