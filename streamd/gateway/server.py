"""The viewer-facing server: WebSocket streams and plain HTTP on one port, served
by aiohttp's low-level server (a real HTTP/1.1 server: keep-alive, pipelining,
request bodies; see docs/architecture.md for why not websockets alone).

``Gateway`` owns what crosses into the daemon: untrusted frames and events in
(``ingest``), camera states out, and the listening socket. Requests pass, in
order: connection admission (``admission``), duplicate security headers and the
``Host`` allowlist (``guards``), routing (``routes``), then ``http_api`` or the
viewer loops (``viewers``). Every refusal is a status (or a close code) with a
reason, counted in ``refused`` and logged sparsely.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from streamd.camera_status import CameraStatus
from streamd.config import Config
from streamd.eventlog.local_log import LocalEventLog
from streamd.gateway import http_api, protocol
from streamd.gateway.admission import ConnectionGate
from streamd.gateway.auth import Decision, Need, authorize, visible_cameras
from streamd.gateway.camera_api import Probes
from streamd.gateway.control import Control
from streamd.gateway.events_api import EventStore
from streamd.gateway.guards import (
    JSON_MEDIA_TYPE,
    cross_site,
    duplicated,
    embeddable,
    host_allowed,
    peer_of,
    viewer_origin_allowed,
)
from streamd.gateway.hub import Hub, HubFrame, Mailbox, SendNow
from streamd.gateway.listener import (
    Connection,
    GatedServer,
    fd_budget,
    http_error_logger,
    sample_accept_errors,
)
from streamd.gateway.live_events import viewer_event
from streamd.gateway.responses import error
from streamd.gateway.revoke import ViewerAccess, lost_access
from streamd.gateway.routes import Route, RouteKind, route
from streamd.gateway.seed_api import SeedApi
from streamd.gateway.viewers import CLOSE_GOING_AWAY, MultiplexedViewer, close_viewer
from streamd.registry.directory import CameraDirectory
from streamd.sparse import should_log
from streamd.states import CameraState
from streamd.transport.frame import FrameError, parse_frame
from streamd.transport.subscriber import FrameSubscriber

log = structlog.get_logger("streamd.gateway")
MAX_EVENT_BYTES = 64 * 1024
MAX_IDLE_FOREIGN_EVENTS = 256  # newest events kept for unconfigured cameras (LRU)
STATE_TICK_S = 1.0
KEEPALIVE_TIMEOUT_S = 5.0  # idle HTTP connections count toward the limits: free them soon


class Gateway:
    def __init__(
        self,
        config: Config,
        hub: Hub,
        subscriber: FrameSubscriber | None,
        control: Control,
        fallback_active: Callable[[], bool] = lambda: False,
        directory: CameraDirectory | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.directory = directory  # every node's cameras, from the Redis registry
        self.hub = hub
        self.subscriber = subscriber
        self.control = control
        self.fallback_active = fallback_active
        self.rejected: Counter[str] = Counter()  # untrusted input dropped, by reason
        self.refused: Counter[str] = Counter()  # viewers and requests refused, by reason
        self.gate = ConnectionGate(config.server.max_viewers, config.server.max_viewers_per_address)
        self._last_events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.multiplexed: set[MultiplexedViewer] = set()
        self.events: EventStore | None = None  # kept events (set by the daemon)
        # Open WebSockets and what let them in (checked again on reload).
        self.websockets: dict[web.WebSocketResponse, ViewerAccess] = {}
        self._revoking: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._web: GatedServer | None = None
        self._closing: asyncio.Task[None] | None = None
        self._state_task: asyncio.Task[None] | None = None
        hub.pin(c.id for c in config.cameras)
        self.seed_api = SeedApi(self, env or {})
        self.probes = Probes()  # camera tests running (camera_api)

    def apply_config(self, config: Config) -> None:
        """A reload: cameras and token/limit settings apply at once (open sockets
        that lost access are closed); listen waits (the daemon keeps it)."""
        self._follow_external(self.config, config)
        self.config = config
        self.hub.pin(c.id for c in config.cameras)
        self.gate.limits_changed(config.server.max_viewers, config.server.max_viewers_per_address)
        self.revoke_lost_access()

    def revoke_lost_access(self) -> int:
        """Close the WebSockets the current settings would no longer let in (a
        revoked or narrowed token, an origin no longer listed); how many."""
        watched: dict[web.WebSocketResponse, set[str]] = {
            viewer.ws: viewer.session.cameras for viewer in self.multiplexed
        }
        allowed_origins = self.config.server.allowed_origins
        closed = 0
        for ws, access in list(self.websockets.items()):
            if ws.closed:
                continue

            def decide(
                need: Need, camera_id: str | None, access: ViewerAccess = access
            ) -> Decision:
                return self.decide(need, access.token, access.peer, camera_id)

            origin_ok = viewer_origin_allowed(access.origin, access.host, allowed_origins)
            revocation = lost_access(access, watched.get(ws, ()), decide, origin_ok)
            if revocation is None:
                continue
            closed += 1
            self.refuse_quietly("access_revoked", peer=access.peer, code=revocation.code)
            task = asyncio.create_task(close_viewer(ws, revocation.code, revocation.reason))
            self._revoking.add(task)
            task.add_done_callback(self._revoking.discard)
        if closed:
            log.info("viewers closed: access withdrawn by reload", closed=closed)
        return closed

    def _follow_external(self, old: Config | None, new: Config) -> None:
        """Cameras another program publishes are subscribed to all the time, so
        their newest frame is cached for snapshots and late joiners (as the old
        server's ``PSUBSCRIBE video:*`` did)."""
        if self.subscriber is None:
            return
        before = {c.id for c in old.cameras if c.external} if old else set()
        after = {c.id for c in new.cameras if c.external}
        for camera_id in sorted(after - before):
            self.subscriber.want(camera_id)
        for camera_id in sorted(before - after):
            self.subscriber.unwant(camera_id)

    # --- frames and events in ---------------------------------------------------------
    def ingest(self, camera_id: str, payload: bytes) -> bool:
        """Validate an untrusted frame (Redis, a child, an HTTP push) and hand it
        to the hub; False when it was rejected (counted by reason)."""
        try:
            parsed = parse_frame(payload, self.config.server.max_frame_bytes)
        except FrameError as exc:
            self.reject(camera_id, exc.reason)
            return False
        if parsed.meta is not None and parsed.meta.camera_id != camera_id:
            self.reject(camera_id, "camera_mismatch")
            return False
        self.hub.publish(HubFrame(camera_id, parsed.payload, parsed.meta, time.time_ns()))
        return True

    def ingest_event(self, camera_id: str, payload: bytes, snapshot: bytes | None = None) -> None:
        """Validate an untrusted detection event, keep the newest, forward it. What
        viewers get is rebuilt from checked fields (``live_events``): never a
        publisher's ``snapshot`` URL, a non-finite number or an implausible id. An
        event from our own child without Redis (``snapshot`` given, or None) is
        also kept in the embedded log, which gives it its id."""
        try:
            if len(payload) > MAX_EVENT_BYTES:
                raise ValueError("too large")
            # ValueError also for JSONDecodeError, UnicodeDecodeError, too deep, NaN
            checked = viewer_event(
                camera_id, protocol.loads_bounded(payload), time.time_ns() // 10**6
            )
        except ValueError:
            self.reject(camera_id, "bad_event")
            return
        if checked.id_ignored:
            self.reject(camera_id, "implausible_event_id")
        event = checked.event
        if isinstance(self.events, LocalEventLog) and "id" not in event and not checked.id_ignored:
            record = self.events.append(event, snapshot)
            if record is None:
                self.reject(camera_id, "bad_event")
                return
            event = record.to_json()
        self._keep_event(camera_id, event)
        for viewer in self.multiplexed:
            viewer.carry_out(viewer.session.on_event(camera_id, event))

    def _keep_event(self, camera_id: str, event: dict[str, Any]) -> None:
        self._last_events[camera_id] = event
        self._last_events.move_to_end(camera_id)
        configured = {c.id for c in self.config.cameras}
        foreign = [c for c in self._last_events if c not in configured]
        for camera_id in foreign[: max(0, len(foreign) - MAX_IDLE_FOREIGN_EVENTS)]:
            del self._last_events[camera_id]

    def last_event(self, camera_id: str) -> dict[str, Any] | None:
        return self._last_events.get(camera_id)

    def reject(self, camera_id: str, reason: str) -> None:
        """Count an untrusted frame or event dropped (by reason); log sparsely."""
        self.rejected[reason] += 1
        total = sum(self.rejected.values())
        if should_log(total):
            log.warning("frame rejected", camera_id=camera_id, reason=reason, rejected_total=total)

    def refuse_quietly(self, reason: str, **fields: Any) -> None:
        """Count a refusal; log only the 1st, 2nd, 4th… of each reason (no log floods)."""
        self.refused[reason] += 1
        count = self.refused[reason]
        if should_log(count):
            log.info("request refused", reason=reason, refused_total=count, **fields)

    def refuse(
        self, reason: str, status: int, message: str, *, seed_errors: bool = False, **fields: Any
    ) -> web.Response:
        """Count, log sparsely, and answer; ``seed_api`` paths get the old error shape."""
        self.refused[reason] += 1
        count = self.refused[reason]
        if should_log(count):
            log.info("request refused", reason=reason, status=status, refused_total=count, **fields)
        close = status >= 500 or reason in _CLOSING_REASONS
        return error(status, message, close=close, seed_error=reason if seed_errors else None)

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
        """Configured cameras, then other nodes' (the registry), then others being
        watched here (idle cached feeds of removed or foreign cameras are not
        listed: no ghosts)."""
        configured = [c.id for c in self.config.cameras]
        listed = set(configured)
        registered = [c for c in self.directory.ids() if c not in listed] if self.directory else []
        listed.update(registered)
        others = [c for c, feed in self.hub.feeds.items() if feed.mailboxes and c not in listed]
        return configured + registered + sorted(others)

    def visible_cameras(self, token: str | None) -> list[str]:
        return visible_cameras(self.known_cameras(), self.config.server.tokens, token)

    def can_view(self, token: str | None, peer: str, camera_id: str) -> Decision:
        return self.decide(Need.VIEW, token, peer, camera_id)

    def decide(self, need: Need, token: str | None, peer: str, camera_id: str | None) -> Decision:
        server = self.config.server
        return authorize(
            need,
            tokens=server.tokens,
            presented=token,
            peer=peer,
            camera_id=camera_id,
            admin_token_sha256=server.admin_token_sha256,
            allow_anonymous=server.allow_anonymous,
        )

    def cross_site_refusal(
        self, request: web.BaseRequest, peer: str, *, seed_errors: bool, raw_body: bool = False
    ) -> web.Response | None:
        """The one cross-site guard of every state-changing endpoint (``guards.cross_site``);
        ``raw_body``: the body is a JPEG a program pushes, never a form's."""
        headers = request.headers
        check = cross_site(
            origin=headers.get("Origin"),
            sec_fetch_site=headers.get("Sec-Fetch-Site"),
            content_type=JSON_MEDIA_TYPE if raw_body else headers.get("Content-Type"),
            has_body=request.body_exists,
            host_header=headers.get("Host"),
            allowed_origins=self.config.server.allowed_origins,
        )
        if check.allowed:
            return None
        origin = headers.get("Origin")
        status = check.verdict.status
        return self.refuse(
            "cross_site", status, check.reason, seed_errors=seed_errors, peer=peer, origin=origin
        )

    def camera_state(
        self, camera_id: str, statuses: Mapping[str, CameraStatus] | None = None
    ) -> CameraState:
        if statuses is None:
            statuses = self.control.camera_statuses()
        latest = self.hub.latest(camera_id)
        age = (time.time_ns() - latest.received_ns) / 1e9 if latest else None
        status = statuses.get(camera_id)
        if status is None and self.directory is not None:
            return protocol.camera_state(self.directory.state(camera_id), age)
        return protocol.camera_state(status.state if status else None, age)

    def cameras(self, presented: str | None) -> dict[str, Any]:
        statuses = self.control.camera_statuses()
        result: dict[str, Any] = {}
        for camera_id in self.visible_cameras(presented):
            status = statuses.get(camera_id)
            info = status.to_json() if status else {}
            if status is None and self.directory is not None:
                info = self.directory.info(camera_id) or {}
            camera = self.config.camera(camera_id)
            if camera is not None:
                info["name"], info["location"] = camera.name, camera.location
            latest = self.hub.latest(camera_id)
            info["state"] = self.camera_state(camera_id, statuses).value
            info["viewers"] = self.hub.viewers(camera_id)
            info["last_frame_age_s"] = (
                round((time.time_ns() - latest.received_ns) / 1e9, 3) if latest else None
            )
            info["last_event"] = self.last_event(camera_id)
            result[camera_id] = info
        return {"cameras": result}

    async def _state_loop(self) -> None:
        """Tell multiplexed viewers when a camera's state changes (≤ 1 s late)."""
        while True:
            await asyncio.sleep(STATE_TICK_S)
            if not self.multiplexed:
                continue
            statuses = self.control.camera_statuses()
            for viewer in list(self.multiplexed):
                for camera_id in list(viewer.session.cameras):
                    state = self.camera_state(camera_id, statuses)
                    viewer.carry_out(viewer.session.on_state(camera_id, state))

    # --- viewers' demand --------------------------------------------------------------------
    def watch(
        self,
        camera_id: str,
        notify: asyncio.Event | None = None,
        send_now: SendNow | None = None,
    ) -> Mailbox:
        mailbox = self.hub.attach(camera_id, notify, send_now)
        if self.subscriber is not None:
            self.subscriber.want(camera_id)
            self.subscriber.want_events(camera_id)
        self.control.viewers_changed(camera_id)
        return mailbox

    def unwatch(self, mailbox: Mailbox) -> None:
        camera_id = mailbox.camera_id
        self.hub.detach(mailbox)
        if self.subscriber is not None:
            self.subscriber.unwant(camera_id)
            self.subscriber.unwant_events(camera_id)
        self.control.viewers_changed(camera_id)

    # --- requests ---------------------------------------------------------------------------
    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self._web is not None
        connection = self._web.connections_info.get(request.protocol)
        if connection is None:  # dropped at accept (a flood) but a request slipped in
            return error(503, "too many connections", close=True)
        connection.requests += 1
        connection.in_flight += 1
        try:
            return await self._dispatch(request, connection)
        finally:
            connection.in_flight -= 1

    async def _dispatch(
        self, request: web.BaseRequest, connection: Connection
    ) -> web.StreamResponse:
        if connection.refusal is not None:
            refusal = connection.refusal
            return self.refuse(
                refusal.reason, refusal.status, refusal.message, peer=connection.peer
            )
        peer = peer_of(connection.peer, request.headers)  # a proxied client is not local
        twice = duplicated(name.decode("latin-1") for name, _ in request.raw_headers)
        if twice is not None:
            return self.refuse("bad_request", 400, f"duplicate {twice} header", peer=peer)
        server = self.config.server
        if not request.raw_path.startswith("/"):
            # Absolute-form (or asterisk-form) targets are for proxies; we are not one,
            # and RFC 9112 would have us ignore the Host we check below.
            return self.refuse("bad_request", 400, "request target must be a path", peer=peer)
        if not host_allowed(request.headers.get("Host"), server.host, server.server_names):
            return self.refuse(
                "host", 400, "Host not allowed (add the name to [server] server_names)", peer=peer
            )
        target = route(request.path)
        if target.shows_picture and not embeddable(
            request.headers.get("Sec-Fetch-Site"), server.allowed_origins
        ):
            message = "pictures are not served to other sites (list them in allowed_origins)"
            return self.refuse(
                "cross_site", 403, message, seed_errors=target.kind.seed_errors, peer=peer
            )
        if target.kind is RouteKind.NOT_FOUND:
            return self.refuse("not_found", 404, "not found")
        seed_errors = target.kind.seed_errors
        if request.method == "OPTIONS":
            return http_api.preflight(self, request, target)
        if request.method not in target.kind.methods:
            return self.refuse("method", 405, method_refusal(target), seed_errors=seed_errors)
        if request.body_exists and not target.kind.takes_body:
            message = "this endpoint takes no request body"
            return self.refuse("bad_request", 400, message, seed_errors=seed_errors)
        if target.kind.is_websocket:
            return await http_api.open_viewer(self, request, target, connection, peer)
        return http_api.with_cors(self, request, await http_api.handle(self, request, target, peer))

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> asyncio.Server:
        server_config = self.config.server
        tls: ssl.SSLContext | None = None
        if server_config.tls_cert and server_config.tls_key:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(server_config.tls_cert, server_config.tls_key)
        self._web = GatedServer(
            self,
            access_log=None,
            logger=http_error_logger(self),
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
            handler_cancellation=True,  # a client that leaves cancels its request
        )
        self.gate.fd_budget = fd_budget()
        if self.gate.fd_budget < server_config.max_viewers + 64:
            log.warning(
                "file descriptor limit below max_viewers",
                fd_budget=self.gate.fd_budget,
                max_viewers=server_config.max_viewers,
            )
        sample_accept_errors(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._web,
            server_config.host,
            server_config.port,
            ssl=tls,
            ssl_handshake_timeout=server_config.handshake_timeout if tls else None,
            reuse_address=True,
        )
        self._state_task = asyncio.create_task(self._state_loop(), name="viewer-states")
        self._follow_external(None, self.config)
        self.seed_api.start_intervals()
        return self._server

    def bound_port(self) -> int:
        assert self._server is not None
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("server has no socket")

    async def close(self) -> None:
        """Stop accepting, close viewers with 1001 (going away), wait for them.
        Idempotent: a second caller waits for the same close."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if self._state_task is not None:
            self._state_task.cancel()
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await asyncio.gather(
            *(close_viewer(ws, CLOSE_GOING_AWAY, "server shutting down") for ws in self.websockets)
        )
        if self._web is not None:
            with contextlib.suppress(TimeoutError):
                await self._web.shutdown(timeout=2.0)
        await server.wait_closed()
        await self.seed_api.close()


def method_refusal(target: Route) -> str:
    if target.kind is RouteKind.V1_CAMERA_CONFIGURED:
        return (
            f"{target.action} is not an API action: which cameras run (from start) is "
            "the config's, /etc/streamd.toml (or /etc/streamd.d/) or `streamd camera "
            "add|remove`, then `systemctl reload streamd`; POST start/stop/restart act "
            "until the next reload"
        )
    if target.kind is RouteKind.V1_CAMERAS or (
        target.kind is RouteKind.V1_CAMERA and not target.action
    ):
        return (
            "cameras are created and deleted in /etc/streamd.toml (or /etc/streamd.d/) "
            "or with `streamd camera add|remove`, then `systemctl reload streamd`"
        )
    return f"method not allowed (use {', '.join(sorted(target.kind.methods))})"


# Refusals after which the connection is closed (the client misbehaves or may
# have sent a body we did not read).
_CLOSING_REASONS = frozenset(
    {"bad_request", "host", "max_viewers_per_address", "body_too_large", "body_timeout"}
)
