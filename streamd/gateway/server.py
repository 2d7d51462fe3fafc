"""The viewer-facing server: WebSocket streams and plain HTTP on one port.

Routes (``route`` is pure and unit-tested):

- ``/ws/{camera_id}`` and ``/api/v1/video-stream/ws/{camera_id}`` (the old
  server's path): one binary message per JPEG frame, the cached frame at once,
  text ``ping`` answered with ``pong``. An invalid id is closed with 1008.
- ``/ws``: the multiplexed protocol for walls (``gateway/protocol.py``).
- ``/``: the wall page; ``/healthz``; ``/metrics``; ``/api/cameras``;
  ``/snapshot/{camera_id}.jpg``.
- ``POST /api/v1/cameras/{camera_id}/start|stop`` and ``POST /api/v1/reload``.

Every refusal is an HTTP status (or a close code) with a reason, and is counted
in ``rejected``. Each viewer has its own sender task fed by latest-wins
mailboxes, so a viewer on a slow link only ever slows itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from streamd.config import Config, is_valid_camera_id
from streamd.gateway import protocol
from streamd.gateway.auth import (
    SUBPROTOCOL,
    Need,
    authorize,
    presented_token,
    visible_cameras,
)
from streamd.gateway.auth import origin_allowed as check_origin
from streamd.gateway.hub import Hub, HubFrame, Mailbox
from streamd.transport.frame import FrameError, parse_frame
from streamd.transport.subscriber import FrameSubscriber

log = structlog.get_logger("streamd.gateway")
STREAM_PREFIXES = ("/ws/", "/api/v1/video-stream/ws/")
CONTROL_PREFIX = "/api/v1/cameras/"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLOSE_POLICY = 1008
MAX_VIEWER_MESSAGE = 4096  # viewers only send small text (ping, JSON)
MAX_EVENT_BYTES = 64 * 1024
MAX_TEXT_BACKLOG = 64  # JSON messages queued for one multiplexed viewer
MAX_SUBSCRIPTIONS = 64  # cameras on one multiplexed connection (bounds Redis subscriptions)
STALE_AFTER_S = 5.0
STATE_TICK_S = 1.0


class Control(Protocol):
    """What the gateway may ask of the daemon (implemented by ``daemon.py``)."""

    async def start_camera(self, camera_id: str) -> bool: ...

    async def stop_camera(self, camera_id: str) -> bool: ...

    async def reload(self) -> tuple[bool, str]: ...

    def cameras(self) -> dict[str, dict[str, Any]]: ...

    def metrics(self) -> bytes: ...

    def viewers_changed(self, camera_id: str) -> None: ...


@dataclass(frozen=True)
class Route:
    # stream | multiplex | wall | healthz | metrics | cameras | snapshot |
    # camera_control | reload | not_found
    kind: str
    camera_id: str = ""
    action: str = ""


def route(path: str) -> Route:
    clean = urlsplit(path).path
    simple = {
        "/": "wall",
        "/healthz": "healthz",
        "/metrics": "metrics",
        "/api/cameras": "cameras",
        "/api/v1/reload": "reload",
        "/ws": "multiplex",
    }
    if clean in simple:
        return Route(simple[clean])
    for prefix in STREAM_PREFIXES:
        if clean.startswith(prefix):
            return Route("stream", clean[len(prefix) :])
    if clean.startswith("/snapshot/") and clean.endswith(".jpg"):
        return Route("snapshot", clean[len("/snapshot/") : -len(".jpg")])
    if clean.startswith(CONTROL_PREFIX):
        camera_id, _, action = clean[len(CONTROL_PREFIX) :].partition("/")
        if action in ("start", "stop"):
            return Route("camera_control", camera_id, action)
    return Route("not_found")


def json_response(status: int, body: dict[str, Any]) -> Response:
    data = (json.dumps(body) + "\n").encode()
    return _response(status, data, "application/json")


def _response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


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
        self.hub = hub
        self.subscriber = subscriber
        self.fallback_active = fallback_active
        self.control = control
        self.rejected: Counter[str] = Counter()  # untrusted input dropped, by reason
        self.refused: Counter[str] = Counter()  # viewers and requests refused, by reason
        self.last_events: dict[str, dict[str, Any]] = {}
        self.viewers_total = 0
        self._per_address: Counter[str] = Counter()
        self.multiplexed: set[MultiplexedViewer] = set()
        self._server: Server | None = None
        self._page: bytes | None = None

    # --- frames and events in ---------------------------------------------------------
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
        """Validate an untrusted detection event, keep the newest, forward it."""
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
        message = protocol.text("event", camera=camera_id, event=event)
        for viewer in self.multiplexed:
            if camera_id in viewer.mailboxes:
                viewer.send_text(message)

    def _reject(self, camera_id: str, reason: str) -> None:
        self.rejected[reason] += 1
        total = sum(self.rejected.values())
        if total & (total - 1) == 0:  # log the 1st, 2nd, 4th, 8th… only
            log.warning("frame rejected", camera_id=camera_id, reason=reason, rejected_total=total)

    def _refuse(self, reason: str, status: int, message: str, **fields: Any) -> Response:
        self.refused[reason] += 1
        log.info("request refused", reason=reason, status=status, **fields)
        return json_response(status, {"error": message})

    # --- state --------------------------------------------------------------------------
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

    def known_cameras(self) -> list[str]:
        configured = [c.id for c in self.config.cameras]
        others = [c for c in self.hub.feeds if c not in configured]
        return configured + sorted(others)

    def camera_state(self, camera_id: str, supervised: dict[str, dict[str, Any]]) -> str:
        latest = self.hub.latest(camera_id)
        age = (time.time_ns() - latest.received_ns) / 1e9 if latest else None
        info = supervised.get(camera_id)
        return protocol.camera_state(info["state"] if info else None, age, STALE_AFTER_S)

    def cameras(self, presented: str | None = None) -> dict[str, Any]:
        supervised = self.control.cameras() if self.control else {}
        allowed = visible_cameras(self.known_cameras(), self.config.server.tokens, presented)
        result: dict[str, Any] = {}
        for camera_id in allowed:
            info = dict(supervised.get(camera_id, {}))
            latest = self.hub.latest(camera_id)
            info["state"] = self.camera_state(camera_id, supervised)
            info["viewers"] = self.hub.viewers(camera_id)
            info["last_frame_age_s"] = (
                round((time.time_ns() - latest.received_ns) / 1e9, 3) if latest else None
            )
            info["last_event"] = self.last_events.get(camera_id)
            result[camera_id] = info
        return {"cameras": result}

    async def _state_loop(self) -> None:
        """Tell multiplexed viewers when a camera's state changes (≤ 1 s late)."""
        while True:
            await asyncio.sleep(STATE_TICK_S)
            if not self.multiplexed:
                continue
            supervised = self.control.cameras() if self.control else {}
            for viewer in list(self.multiplexed):
                for camera_id in list(viewer.mailboxes):
                    viewer.update_state(camera_id, self.camera_state(camera_id, supervised))

    # --- HTTP -----------------------------------------------------------------------------
    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        target = route(request.path)
        method = getattr(request, "method", "GET")
        peer = _peer(connection)
        token = presented_token(request.headers, request.path)
        tokens = self.config.server.tokens

        def need(kind: Need, camera_id: str | None = None) -> Response | None:
            decision = authorize(
                kind, tokens=tokens, presented=token, peer=peer, camera_id=camera_id
            )
            if decision.allowed:
                return None
            reason = "unauthorized" if decision.status == 401 else "forbidden"
            return self._refuse(
                reason,
                decision.status,
                decision.reason,
                path=urlsplit(request.path).path,
                peer=peer,
            )

        if target.kind in ("stream", "multiplex"):
            return self._admit_viewer(request, peer, target, need)
        if method != "GET" and target.kind not in ("camera_control", "reload"):
            return self._refuse("method", 405, "method not allowed")
        if target.kind == "wall":
            return _response(200, self._wall_page(), "text/html; charset=utf-8")
        if target.kind == "healthz":
            ok, detail = self.healthy()
            body = {
                "status": "ok" if ok else "unavailable",
                "detail": detail,
                "viewers": self.hub.viewers(),
            }
            return json_response(200 if ok else 503, body)
        if target.kind == "cameras":
            return need(Need.LIST) or json_response(200, self.cameras(token))
        if target.kind == "metrics":
            denied = need(Need.LIST)
            if denied or self.control is None:
                return denied or json_response(503, {"error": "no metrics"})
            return _response(200, self.control.metrics(), PROMETHEUS_CONTENT_TYPE)
        if target.kind == "snapshot":
            return self._snapshot(target.camera_id, need)
        if target.kind in ("camera_control", "reload"):
            if method != "POST":
                return self._refuse("method", 405, "use POST")
            return need(Need.ADMIN) or await self._control(target, peer)
        return self._refuse("not_found", 404, "not found")

    def _admit_viewer(
        self, request: Request, peer: str, target: Route, need: Callable[..., Response | None]
    ) -> Response | None:
        server = self.config.server
        if not check_origin(
            request.headers.get("Origin"), request.headers.get("Host"), server.allowed_origins
        ):
            return self._refuse(
                "origin", 403, "origin not allowed", peer=peer, origin=request.headers.get("Origin")
            )
        if target.kind == "stream" and is_valid_camera_id(target.camera_id):
            denied = need(Need.VIEW, target.camera_id)
        else:
            denied = need(Need.LIST)  # /ws checks each camera at subscribe time
        if denied is not None:
            return denied
        if sum(self._per_address.values()) >= server.max_viewers:
            return self._refuse("max_viewers", 503, "too many viewers", peer=peer)
        if self._per_address[peer] >= server.max_viewers_per_address:
            return self._refuse(
                "max_viewers_per_address", 429, "too many viewers from this address", peer=peer
            )
        return None  # go on with the WebSocket handshake

    def _snapshot(self, camera_id: str, need: Callable[..., Response | None]) -> Response:
        if not is_valid_camera_id(camera_id):
            return self._refuse("not_found", 404, "invalid camera id")
        denied = need(Need.VIEW, camera_id)
        if denied is not None:
            return denied
        known = self.config.camera(camera_id) is not None or camera_id in self.hub.feeds
        if not known:
            return self._refuse("not_found", 404, "unknown camera")
        latest = self.hub.latest(camera_id)
        if latest is None:
            return json_response(503, {"error": "no frame yet"})
        return _response(200, latest.payload, "image/jpeg")

    def _wall_page(self) -> bytes:
        if self._page is None:
            page = resources.files("streamd.gateway").joinpath("static/wall.html")
            self._page = page.read_bytes()
        return self._page

    async def _control(self, target: Route, peer: str) -> Response:
        if self.control is None:
            return json_response(503, {"error": "no supervisor"})
        if target.kind == "reload":
            ok, detail = await self.control.reload()
            return json_response(200 if ok else 422, {"reloaded": ok, "detail": detail})
        if not is_valid_camera_id(target.camera_id):
            return json_response(400, {"error": "invalid camera id"})
        act = self.control.start_camera if target.action == "start" else self.control.stop_camera
        if not await act(target.camera_id):
            return json_response(404, {"error": "unknown camera"})
        log.info("camera control", camera_id=target.camera_id, action=target.action, peer=peer)
        return json_response(200, {"camera_id": target.camera_id, "action": target.action})

    # --- WebSocket viewers --------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        target = route(request.path if request else "")
        peer = _peer(ws)
        self._per_address[peer] += 1
        try:
            if target.kind == "multiplex":
                token = presented_token(request.headers, request.path) if request else None
                await MultiplexedViewer(self, ws, token).run()
            else:
                await self._single(ws, target.camera_id, peer)
        finally:
            self._per_address[peer] -= 1
            if self._per_address[peer] <= 0:
                del self._per_address[peer]

    def watch(self, camera_id: str, notify: asyncio.Event | None = None) -> Mailbox:
        mailbox = self.hub.attach(camera_id, notify)
        if self.subscriber is not None:
            self.subscriber.want(camera_id)
            self.subscriber.want_events(camera_id)
        if self.control is not None:
            self.control.viewers_changed(camera_id)
        return mailbox

    def unwatch(self, mailbox: Mailbox) -> None:
        camera_id = mailbox.camera_id
        self.hub.detach(mailbox, keep_cache=self.config.camera(camera_id) is not None)
        if self.subscriber is not None:
            self.subscriber.unwant(camera_id)
            self.subscriber.unwant_events(camera_id)
        if self.control is not None:
            self.control.viewers_changed(camera_id)

    async def _single(self, ws: ServerConnection, camera_id: str, peer: str) -> None:
        if not is_valid_camera_id(camera_id):
            self.refused["invalid_camera_id"] += 1
            await ws.close(CLOSE_POLICY, "invalid camera id")
            return
        mailbox = self.watch(camera_id)
        self.viewers_total += 1
        log.info(
            "viewer connected", camera_id=camera_id, peer=peer, viewers=self.hub.viewers(camera_id)
        )
        pump = asyncio.create_task(self._pump(ws, mailbox))
        limiter = protocol.RateLimiter(self.config.server.max_messages_per_second)
        try:
            async for message in ws:
                if not limiter.allow(time.monotonic()):
                    self.refused["message_rate"] += 1
                    await ws.close(CLOSE_POLICY, "message rate limit")
                    break
                if message == "ping":
                    await ws.send("pong")
        except ConnectionClosed:
            pass
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            self.unwatch(mailbox)
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

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> Server:
        server_config = self.config.server
        tls: ssl.SSLContext | None = None
        if server_config.tls_cert and server_config.tls_key:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(server_config.tls_cert, server_config.tls_key)
        self._server = await serve(
            self._handle,
            server_config.host,
            server_config.port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            compression=None,  # JPEG does not compress; deflate would only burn CPU
            max_size=MAX_VIEWER_MESSAGE,
            ping_interval=20,
            ping_timeout=20,
            open_timeout=server_config.handshake_timeout,
            close_timeout=2,
            ssl=tls,
        )
        self._state_task = asyncio.create_task(self._state_loop(), name="viewer-states")
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
        self._state_task.cancel()
        server.close(close_connections=True)
        await server.wait_closed()


class MultiplexedViewer:
    """One ``/ws`` connection: many cameras, one sender, latest-wins per camera."""

    def __init__(self, gateway: Gateway, ws: ServerConnection, token: str | None) -> None:
        self.gateway = gateway
        self.ws = ws
        self.token = token
        self.peer = _peer(ws)
        self.mailboxes: dict[str, Mailbox] = {}
        self.states: dict[str, str] = {}
        self._texts: deque[str] = deque(maxlen=MAX_TEXT_BACKLOG)
        self._wake = asyncio.Event()
        self.limiter = protocol.RateLimiter(gateway.config.server.max_messages_per_second)

    def send_text(self, message: str) -> None:
        if len(self._texts) == self._texts.maxlen:
            self.gateway.refused["text_backlog"] += 1  # the oldest is dropped
        self._texts.append(message)
        self._wake.set()

    def update_state(self, camera_id: str, state: str) -> None:
        if self.states.get(camera_id) != state:
            self.states[camera_id] = state
            self.send_text(protocol.text("state", camera=camera_id, state=state))

    async def run(self) -> None:
        gateway = self.gateway
        gateway.multiplexed.add(self)
        gateway.viewers_total += 1
        visible = visible_cameras(gateway.known_cameras(), gateway.config.server.tokens, self.token)
        self.send_text(protocol.text("hello", version=protocol.VERSION, cameras=visible))
        sender = asyncio.create_task(self._send_loop())
        try:
            async for message in self.ws:
                if not self.limiter.allow(time.monotonic()):
                    gateway.refused["message_rate"] += 1
                    await self.ws.close(CLOSE_POLICY, "message rate limit")
                    break
                if isinstance(message, bytes):
                    self.send_text(protocol.text("error", reason="binary messages not accepted"))
                    gateway.refused["bad_message"] += 1
                    continue
                self._on_text(message)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            for mailbox in self.mailboxes.values():
                gateway.unwatch(mailbox)
            self.mailboxes.clear()
            gateway.multiplexed.discard(self)

    def _on_text(self, message: str) -> None:
        gateway = self.gateway
        try:
            command = protocol.parse_client_message(message)
        except protocol.ClientMessageError as exc:
            gateway.refused["bad_message"] += 1
            self.send_text(protocol.text("error", reason=str(exc)))
            return
        if command.op == "ping":
            self.send_text(protocol.text("pong"))
            return
        if command.op == "unsubscribe":
            for camera_id in command.cameras:
                mailbox = self.mailboxes.pop(camera_id, None)
                if mailbox is not None:
                    gateway.unwatch(mailbox)
                self.states.pop(camera_id, None)
            self.send_text(protocol.text("unsubscribed", cameras=list(command.cameras)))
            return
        supervised = gateway.control.cameras() if gateway.control else {}
        granted, denied = [], []
        for camera_id in command.cameras:
            decision = authorize(
                Need.VIEW,
                tokens=gateway.config.server.tokens,
                presented=self.token,
                peer=self.peer,
                camera_id=camera_id,
            )
            if not decision.allowed:
                gateway.refused["forbidden"] += 1
                denied.append({"camera": camera_id, "reason": decision.reason})
                continue
            if camera_id not in self.mailboxes and len(self.mailboxes) >= MAX_SUBSCRIPTIONS:
                gateway.refused["max_subscriptions"] += 1
                denied.append({"camera": camera_id, "reason": "too many cameras on one connection"})
                continue
            if camera_id not in self.mailboxes:
                self.mailboxes[camera_id] = gateway.watch(camera_id, self._wake)
            granted.append(camera_id)
        self.send_text(protocol.text("subscribed", cameras=granted, denied=denied))
        for camera_id in granted:
            self.states.pop(camera_id, None)
            self.update_state(camera_id, gateway.camera_state(camera_id, supervised))
            event = gateway.last_events.get(camera_id)
            if event is not None:
                self.send_text(protocol.text("event", camera=camera_id, event=event))
        self._wake.set()  # cached frames go out at once

    async def _send_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._texts:
                    await self.ws.send(self._texts.popleft())
                for mailbox in list(self.mailboxes.values()):
                    frame = mailbox.take()
                    if frame is not None:
                        await self.ws.send(protocol.encode_frame(frame))
                        self.gateway.hub.record_sent(frame, time.time_ns())


def _select_subprotocol(
    _connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Browsers send ``["streamd", "token.…"]`` and need one echoed back;
    other clients offer none, which is fine too."""
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else ""
