"""The HTTP endpoints and the WebSocket upgrade, after ``Gateway.dispatch`` has
checked the connection, the headers, the ``Host`` and the method. ``HttpApi``
answers streamd's own endpoints and hands the rest to ``events_api``,
``camera_api`` and ``seed_api``; everything it uses is the gateway's state."""

from __future__ import annotations

from importlib import resources

import structlog
from aiohttp import web

from streamd.config import is_valid_camera_id
from streamd.gateway import camera_api, events_api, seed_api
from streamd.gateway.auth import SUBPROTOCOL, Need
from streamd.gateway.camera_api import Probes
from streamd.gateway.guards import listed_origin, viewer_origin_allowed
from streamd.gateway.listener import Connection
from streamd.gateway.request_guards import cross_site_refusal, denied, json_object, token_of
from streamd.gateway.responses import (
    PROMETHEUS_CONTENT_TYPE,
    error,
    json_response,
    response,
    wall_policy,
)
from streamd.gateway.revoke import ViewerAccess
from streamd.gateway.routes import Route, RouteKind
from streamd.gateway.seed_api import SeedApi
from streamd.gateway.state import GatewayState
from streamd.gateway.unit_hub import Format, parse_format
from streamd.gateway.viewers import (
    CLOSE_POLICY,
    MAX_VIEWER_MESSAGE_BACKSTOP,
    MultiplexedViewer,
    close_viewer,
    run_single,
    run_single_units,
)

log = structlog.get_logger("streamd.gateway")
MAX_CONTROL_BODY = 4096  # control takes an empty or small JSON body
HEARTBEAT_S = 20.0  # a client that does not answer our ping within 10 s more is dropped
_page: bytes | None = None


class HttpApi:
    """streamd's endpoints, composed by the server from the state and the other APIs."""

    def __init__(self, state: GatewayState, seed_api: SeedApi, probes: Probes) -> None:
        self.state = state
        self.seed_api = seed_api
        self.probes = probes  # camera tests running (camera_api)

    async def handle(self, request: web.BaseRequest, target: Route, peer: str) -> web.Response:
        state, kind, token = self.state, target.kind, token_of(request)
        if kind in events_api.ROUTE_KINDS:
            return await events_api.handle(state, request, target, peer, token)
        if kind in camera_api.ROUTE_KINDS:
            return await camera_api.handle(state, self.probes, request, target, peer, token)
        if kind in seed_api.ROUTE_KINDS:
            return await self.seed_api.handle(request, target, token, peer)
        if kind is RouteKind.WALL:
            page = response(200, wall_page(), "text/html; charset=utf-8")
            page.headers["Content-Security-Policy"] = wall_policy(request.headers.get("Host"))
            return page
        if kind is RouteKind.HEALTHZ:
            ok, detail = state.healthy()
            body = {
                "status": "ok" if ok else "unavailable",
                "detail": detail,
                "viewers": state.hub.viewers(),
            }
            return json_response(200 if ok else 503, body)
        if kind in (RouteKind.CAMERAS, RouteKind.METRICS):
            refusal = denied(state, Need.LIST, token, peer, path=request.path)
            if refusal is not None:
                return refusal
            if kind is RouteKind.CAMERAS:
                return json_response(200, state.cameras(token))
            # A token scoped to some cameras sees only their series.
            scope = None if not state.config.server.tokens else state.visible_cameras(token)
            return response(200, state.control.metrics(scope), PROMETHEUS_CONTENT_TYPE)
        if kind is RouteKind.SNAPSHOT:
            return self._snapshot(request, target.camera_id, token, peer)
        return await self._control(request, target, token, peer)

    def _snapshot(
        self, request: web.BaseRequest, camera_id: str, token: str | None, peer: str
    ) -> web.Response:
        state = self.state
        if not is_valid_camera_id(camera_id):
            return state.refuse("not_found", 404, "invalid camera id")
        refusal = denied(state, Need.VIEW, token, peer, camera_id, path=request.path)
        if refusal is not None:
            return refusal
        if state.config.camera(camera_id) is None and camera_id not in state.hub.feeds:
            return state.refuse("not_found", 404, "unknown camera")
        latest = state.hub.latest(camera_id)
        if latest is None:
            return error(503, "no frame yet")
        return response(200, latest.payload, "image/jpeg")

    async def _control(
        self, request: web.BaseRequest, target: Route, token: str | None, peer: str
    ) -> web.Response:
        state = self.state
        seed_errors = target.kind.seed_errors
        refusal = cross_site_refusal(state, request, peer, seed_errors=seed_errors)
        if refusal is None:
            refusal = denied(
                state, Need.ADMIN, token, peer, seed_errors=seed_errors, path=request.path
            )
        if refusal is not None:
            return refusal
        body = await json_object(state, request, MAX_CONTROL_BODY, seed_errors=seed_errors)
        if isinstance(body, web.Response):
            return body
        control = state.control
        if target.kind is RouteKind.RELOAD:
            ok, detail = await control.reload()
            return json_response(200 if ok else 422, {"reloaded": ok, "detail": detail})
        camera_id, action = target.camera_id, target.action
        if not is_valid_camera_id(camera_id):
            return state.refuse("not_found", 400, "invalid camera id", seed_errors=True)
        if action in ("stop", "restart") and not await control.stop_camera(camera_id):
            return state.refuse("not_found", 404, f"camera {camera_id} not found", seed_errors=True)
        if action in ("start", "restart") and not await control.start_camera(camera_id):
            return state.refuse("not_found", 404, f"camera {camera_id} not found", seed_errors=True)
        log.info("camera control", camera_id=camera_id, action=action, peer=peer)
        now = control.camera_statuses().get(camera_id)
        answer = {
            "ok": True,
            "camera_id": camera_id,
            "action": action,
            "running": action != "stop",
            "pid": now.pid if now is not None and action != "stop" else None,
        }
        return json_response(200, answer)

    def preflight(self, request: web.BaseRequest, target: Route) -> web.Response:
        """CORS preflight: granted only to origins listed in ``allowed_origins``."""
        origin = request.headers.get("Origin")
        if origin is None or not listed_origin(origin, self.state.config.server.allowed_origins):
            return self.state.refuse("cross_site", 403, "preflight refused: origin not listed")
        answer = response(204, b"", "text/plain")
        answer.headers.update(
            {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(sorted(target.kind.methods)),
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            }
        )
        return answer

    def with_cors(self, request: web.BaseRequest, answer: web.Response) -> web.Response:
        """Let a listed origin's page read the answer (nothing for anyone else)."""
        origin = request.headers.get("Origin")
        if origin is not None and listed_origin(origin, self.state.config.server.allowed_origins):
            answer.headers["Access-Control-Allow-Origin"] = origin
            answer.headers["Vary"] = "Origin"
        return answer

    async def open_viewer(
        self, request: web.BaseRequest, target: Route, connection: Connection, peer: str
    ) -> web.StreamResponse:
        state = self.state
        token = token_of(request)
        origin = request.headers.get("Origin")
        allowed_origins = state.config.server.allowed_origins
        if not viewer_origin_allowed(origin, request.headers.get("Host"), allowed_origins):
            return state.refuse("origin", 403, "origin not allowed", peer=peer, origin=origin)
        stream = target.kind is RouteKind.STREAM
        if stream and is_valid_camera_id(target.camera_id):
            need, camera_id = Need.VIEW, target.camera_id
        else:
            need, camera_id = Need.LIST, None  # /ws checks each camera later
        refusal = denied(state, need, token, peer, camera_id, path=request.path)
        if refusal is not None:
            return refusal
        # /ws/{id}?format=h264|h265: passthrough units; /ws asks per subscribe.
        fmt = parse_format(request.query.get("format")) if stream else Format.JPEG
        if fmt is None:
            return state.refuse("bad_format", 400, 'format must be "jpeg", "h264" or "h265"')
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),  # browsers offer ["streamd", "token.…"]: one is echoed
            autoping=False,  # pings are ours to count (viewers.client_messages)
            heartbeat=HEARTBEAT_S,
            max_msg_size=MAX_VIEWER_MESSAGE_BACKSTOP,
            compress=False,  # JPEG does not compress; deflate would only burn CPU
            timeout=2.0,
        )
        if not ws.can_prepare(request).ok:
            return state.refuse("bad_request", 400, "expected a WebSocket upgrade")
        await ws.prepare(request)
        connection.upgraded = True
        host = request.headers.get("Host")
        state.websockets[ws] = ViewerAccess(
            token, peer, origin, host, target.camera_id if stream else None
        )
        try:
            if not stream:
                await MultiplexedViewer(state, ws, token, peer).run()
            elif not is_valid_camera_id(target.camera_id):
                state.refuse_quietly("invalid_camera_id")
                await close_viewer(ws, CLOSE_POLICY, "invalid camera id")
            elif fmt is Format.JPEG:
                await run_single(state, ws, target.camera_id, peer, request)
            else:
                await run_single_units(state, ws, target.camera_id, peer, fmt, request)
        finally:
            state.websockets.pop(ws, None)
            if not ws.closed:
                await close_viewer(ws, 1000, "")
        return ws


def wall_page() -> bytes:
    global _page
    if _page is None:
        _page = resources.files("streamd.gateway").joinpath("static/wall.html").read_bytes()
    return _page
