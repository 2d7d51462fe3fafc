"""The viewer-facing server: WebSocket streams and plain HTTP on one port, served
by aiohttp's low-level server (a real HTTP/1.1 server: keep-alive, pipelining,
request bodies; see docs/architecture.md for why not websockets alone).

``Gateway`` composes the gateway: the shared ``GatewayState`` (state.py), the
handlers that get it (``HttpApi``, ``SeedApi``, the viewer loops) and the
listening socket. It keeps what only the server does: start, close, the
per-request checks of ``dispatch`` and closing sockets a reload took access
from. Requests pass, in order: connection admission (``admission``), duplicate
security headers and the ``Host`` allowlist (``guards``), routing (``routes``),
then ``HttpApi`` or the viewer loops (``viewers``). Every refusal is a status
(or a close code) with a reason, counted in ``refused`` and logged sparsely.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import Counter
from collections.abc import Callable, Mapping

import structlog
from aiohttp import web

from streamd.config import Config
from streamd.eventlog.records import EventStore
from streamd.gateway.admission import ConnectionGate
from streamd.gateway.auth import Decision, Need
from streamd.gateway.camera_api import Probes
from streamd.gateway.control import Control
from streamd.gateway.guards import (
    duplicated,
    embeddable,
    host_allowed,
    peer_of,
    viewer_origin_allowed,
)
from streamd.gateway.http_api import HttpApi
from streamd.gateway.hub import Hub
from streamd.gateway.listener import (
    Connection,
    GatedServer,
    fd_budget,
    http_error_logger,
    sample_accept_errors,
)
from streamd.gateway.responses import error
from streamd.gateway.revoke import ViewerAccess, lost_access
from streamd.gateway.routes import Route, RouteKind, route
from streamd.gateway.seed_api import SeedApi
from streamd.gateway.state import GatewayState
from streamd.gateway.subscriptions import Subscriber, Subscriptions
from streamd.gateway.viewers import CLOSE_GOING_AWAY, close_viewer
from streamd.registry.directory import CameraDirectory
from streamd.transport.subscriber import FrameSubscriber

log = structlog.get_logger("streamd.gateway")
STATE_TICK_S = 1.0
KEEPALIVE_TIMEOUT_S = 5.0  # idle HTTP connections count toward the limits: free them soon


class Gateway:
    def __init__(
        self,
        config: Config,
        hub: Hub,
        subscriber: Subscriber | None,
        control: Control,
        fallback_active: Callable[[], bool] = lambda: False,
        directory: CameraDirectory | None = None,
        env: Mapping[str, str] | None = None,
        events: EventStore | None = None,
    ) -> None:
        self.state = GatewayState(
            config,
            hub,
            Subscriptions(subscriber, config),
            control,
            directory=directory,
            events=events,
            fallback_active=fallback_active,
        )
        if isinstance(subscriber, FrameSubscriber):  # ``au:{id}`` messages (passthrough)
            subscriber.on_unit = self.state.ingest_unit
        self.gate = ConnectionGate(config.server.max_viewers, config.server.max_viewers_per_address)
        self.seed_api = SeedApi(self.state, env or {})
        self.http = HttpApi(self.state, self.seed_api, Probes())
        self._revoking: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._web: GatedServer | None = None
        self._closing: asyncio.Task[None] | None = None
        self._state_task: asyncio.Task[None] | None = None

    # --- what the daemon hands in, and its counters ----------------------------------------
    def ingest(self, camera_id: str, payload: bytes) -> bool:
        return self.state.ingest(camera_id, payload)

    def ingest_unit(self, camera_id: str, payload: bytes) -> bool:
        return self.state.ingest_unit(camera_id, payload)

    def unit_viewers(self, camera_id: str) -> int:
        """This gateway's passthrough viewers of a camera (the child's local demand)."""
        return self.state.units.viewers(camera_id)

    def ingest_event(self, camera_id: str, payload: bytes, snapshot: bytes | None = None) -> None:
        self.state.ingest_event(camera_id, payload, snapshot)

    def reject(self, camera_id: str, reason: str) -> None:
        self.state.reject(camera_id, reason)

    @property
    def rejected(self) -> Counter[str]:
        return self.state.rejected

    @property
    def refused(self) -> Counter[str]:
        return self.state.refused

    def apply_config(self, config: Config) -> None:
        """A reload: cameras, subscriptions and token/limit settings apply at once
        (open sockets that lost access are closed); listen waits (the daemon keeps it)."""
        self.state.apply_config(config)
        self.gate.limits_changed(config.server.max_viewers, config.server.max_viewers_per_address)
        self.revoke_lost_access()

    def revoke_lost_access(self) -> int:
        """Close the WebSockets the current settings would no longer let in (a
        revoked or narrowed token, an origin no longer listed); how many."""
        state = self.state
        watched = {listener.ws: listener.cameras for listener in state.listeners}
        allowed_origins = state.config.server.allowed_origins
        closed = 0
        for ws, access in list(state.websockets.items()):
            if ws.closed:
                continue

            def decide(
                need: Need, camera_id: str | None, access: ViewerAccess = access
            ) -> Decision:
                return state.decide(need, access.token, access.peer, camera_id)

            origin_ok = viewer_origin_allowed(access.origin, access.host, allowed_origins)
            revocation = lost_access(access, watched.get(ws, ()), decide, origin_ok)
            if revocation is None:
                continue
            closed += 1
            state.refuse_quietly("access_revoked", peer=access.peer, code=revocation.code)
            task = asyncio.create_task(close_viewer(ws, revocation.code, revocation.reason))
            self._revoking.add(task)
            task.add_done_callback(self._revoking.discard)
        if closed:
            log.info("viewers closed: access withdrawn by reload", closed=closed)
        return closed

    async def _state_loop(self) -> None:
        """Tell multiplexed viewers when a camera's state changes (≤ 1 s late)."""
        while True:
            await asyncio.sleep(STATE_TICK_S)
            self.state.tell_states()

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
        state = self.state
        if connection.refusal is not None:
            refusal = connection.refusal
            return state.refuse(
                refusal.reason, refusal.status, refusal.message, peer=connection.peer
            )
        peer = peer_of(connection.peer, request.headers)  # a proxied client is not local
        twice = duplicated(name.decode("latin-1") for name, _ in request.raw_headers)
        if twice is not None:
            return state.refuse("bad_request", 400, f"duplicate {twice} header", peer=peer)
        server = state.config.server
        if not request.raw_path.startswith("/"):
            # Absolute-form (or asterisk-form) targets are for proxies; we are not one,
            # and RFC 9112 would have us ignore the Host we check below.
            return state.refuse("bad_request", 400, "request target must be a path", peer=peer)
        if not host_allowed(request.headers.get("Host"), server.host, server.server_names):
            return state.refuse(
                "host", 400, "Host not allowed (add the name to [server] server_names)", peer=peer
            )
        target = route(request.path)
        seed_errors = target.kind.seed_errors
        if target.shows_picture and not embeddable(
            request.headers.get("Sec-Fetch-Site"), server.allowed_origins
        ):
            message = "pictures are not served to other sites (list them in allowed_origins)"
            return state.refuse("cross_site", 403, message, seed_errors=seed_errors, peer=peer)
        if target.kind is RouteKind.NOT_FOUND:
            return state.refuse("not_found", 404, "not found")
        if request.method == "OPTIONS":
            return self.http.preflight(request, target)
        if request.method not in target.kind.methods:
            return state.refuse("method", 405, method_refusal(target), seed_errors=seed_errors)
        if request.body_exists and not target.kind.takes_body:
            message = "this endpoint takes no request body"
            return state.refuse("bad_request", 400, message, seed_errors=seed_errors)
        if target.kind.is_websocket:
            return await self.http.open_viewer(request, target, connection, peer)
        return self.http.with_cors(request, await self.http.handle(request, target, peer))

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> asyncio.Server:
        server_config = self.state.config.server
        tls: ssl.SSLContext | None = None
        if server_config.tls_cert and server_config.tls_key:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(server_config.tls_cert, server_config.tls_key)
        self._web = GatedServer(
            self.dispatch,
            self.state,
            self.gate,
            access_log=None,
            logger=http_error_logger(self.state),
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
        sample_accept_errors(self.state)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._web,
            server_config.host,
            server_config.port,
            ssl=tls,
            ssl_handshake_timeout=server_config.handshake_timeout if tls else None,
            reuse_address=True,
        )
        self.state.listening = True
        self._state_task = asyncio.create_task(self._state_loop(), name="viewer-states")
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
        self.state.listening = False
        server.close()
        await asyncio.gather(
            *(
                close_viewer(ws, CLOSE_GOING_AWAY, "server shutting down")
                for ws in self.state.websockets
            )
        )
        if self._web is not None:
            # As aiohttp's own runner does: idle keep-alive connections (a browser
            # keeps some) close now; only requests in progress get the 2 s.
            self._web.pre_shutdown()
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
