"""The HTTP endpoints and the WebSocket upgrade, after ``Gateway.dispatch`` has
checked the connection, the headers, the ``Host`` and the method."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from streamd.config import is_valid_camera_id
from streamd.gateway import camera_api, events_api, protocol, seed_api
from streamd.gateway.auth import SUBPROTOCOL, Need, presented_token
from streamd.gateway.guards import listed_origin, viewer_origin_allowed
from streamd.gateway.responses import (
    PROMETHEUS_CONTENT_TYPE,
    BodyRefusal,
    error,
    json_response,
    read_body,
    response,
    wall_policy,
)
from streamd.gateway.revoke import ViewerAccess
from streamd.gateway.routes import Route, RouteKind
from streamd.gateway.viewers import CLOSE_POLICY, MultiplexedViewer, close_viewer, run_single

if TYPE_CHECKING:
    from streamd.gateway.listener import Connection
    from streamd.gateway.server import Gateway

log = structlog.get_logger("streamd.gateway")
MAX_CONTROL_BODY = 4096  # control takes an empty or small JSON body
MAX_VIEWER_MESSAGE = 4096  # viewers only send small text (ping, JSON)
HEARTBEAT_S = 20.0  # a client that does not answer our ping within 10 s more is dropped
_page: bytes | None = None


def token_of(request: web.BaseRequest) -> str | None:
    return presented_token(
        request.headers.get("Authorization"),
        request.headers.getall("Sec-WebSocket-Protocol", []),
        request.path_qs,
    )


def _denied(
    gateway: Gateway,
    need: Need,
    request: web.BaseRequest,
    peer: str,
    camera_id: str | None = None,
    *,
    seed_errors: bool = False,
) -> web.Response | None:
    decision = gateway.decide(need, token_of(request), peer, camera_id)
    if decision.allowed:
        return None
    reason = "unauthorized" if decision.status == 401 else "forbidden"
    return gateway.refuse(
        reason,
        decision.status,
        decision.reason,
        seed_errors=seed_errors,
        path=request.path,
        peer=peer,
    )


async def handle(
    gateway: Gateway, request: web.BaseRequest, target: Route, peer: str
) -> web.Response:
    kind = target.kind
    if kind in events_api.ROUTE_KINDS:
        return await events_api.handle(gateway, request, target, peer, token_of(request))
    if kind in camera_api.ROUTE_KINDS:
        return await camera_api.handle(gateway, request, target, peer, token_of(request))
    if kind is RouteKind.WALL:
        page = response(200, wall_page(), "text/html; charset=utf-8")
        page.headers["Content-Security-Policy"] = wall_policy(request.headers.get("Host"))
        return page
    if kind is RouteKind.HEALTHZ:
        ok, detail = gateway.healthy()
        body = {
            "status": "ok" if ok else "unavailable",
            "detail": detail,
            "viewers": gateway.hub.viewers(),
        }
        return json_response(200 if ok else 503, body)
    if kind is RouteKind.CAMERAS:
        return _denied(gateway, Need.LIST, request, peer) or json_response(
            200, gateway.cameras(token_of(request))
        )
    if kind is RouteKind.METRICS:
        denied = _denied(gateway, Need.LIST, request, peer)
        if denied is not None:
            return denied
        # A token scoped to some cameras sees only their series.
        scope = (
            None if not gateway.config.server.tokens else gateway.visible_cameras(token_of(request))
        )
        return response(200, gateway.control.metrics(scope), PROMETHEUS_CONTENT_TYPE)
    if kind is RouteKind.SNAPSHOT:
        return _snapshot(gateway, request, target.camera_id, peer)
    if kind in seed_api.ROUTE_KINDS:
        return await gateway.seed_api.handle(request, target, token_of(request), peer)
    return await _control(gateway, request, target, peer)


def _snapshot(
    gateway: Gateway, request: web.BaseRequest, camera_id: str, peer: str
) -> web.Response:
    if not is_valid_camera_id(camera_id):
        return gateway.refuse("not_found", 404, "invalid camera id")
    denied = _denied(gateway, Need.VIEW, request, peer, camera_id)
    if denied is not None:
        return denied
    if gateway.config.camera(camera_id) is None and camera_id not in gateway.hub.feeds:
        return gateway.refuse("not_found", 404, "unknown camera")
    latest = gateway.hub.latest(camera_id)
    if latest is None:
        return error(503, "no frame yet")
    return response(200, latest.payload, "image/jpeg")


def wall_page() -> bytes:
    global _page
    if _page is None:
        _page = resources.files("streamd.gateway").joinpath("static/wall.html").read_bytes()
    return _page


async def _control(
    gateway: Gateway, request: web.BaseRequest, target: Route, peer: str
) -> web.Response:
    seed_errors = target.kind.seed_errors
    refusal = gateway.cross_site_refusal(request, peer, seed_errors=seed_errors)
    if refusal is not None:
        return refusal
    denied = _denied(gateway, Need.ADMIN, request, peer, seed_errors=seed_errors)
    if denied is not None:
        return denied
    body = await read_body(request, MAX_CONTROL_BODY, gateway.config.server.handshake_timeout)
    if isinstance(body, BodyRefusal):
        return gateway.refuse(body.reason, body.status, body.message, seed_errors=seed_errors)
    if body.strip():
        try:
            parsed = protocol.loads_bounded(body)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return gateway.refuse(
                "bad_request", 400, "the body must be a JSON object", seed_errors=seed_errors
            )
    control = gateway.control
    if target.kind is RouteKind.RELOAD:
        ok, detail = await control.reload()
        return json_response(200 if ok else 422, {"reloaded": ok, "detail": detail})
    camera_id, action = target.camera_id, target.action
    if not is_valid_camera_id(camera_id):
        return gateway.refuse("not_found", 400, "invalid camera id", seed_errors=True)
    if action in ("stop", "restart") and not await control.stop_camera(camera_id):
        return gateway.refuse("not_found", 404, f"camera {camera_id} not found", seed_errors=True)
    if action in ("start", "restart") and not await control.start_camera(camera_id):
        return gateway.refuse("not_found", 404, f"camera {camera_id} not found", seed_errors=True)
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


def preflight(gateway: Gateway, request: web.BaseRequest, target: Route) -> web.Response:
    """CORS preflight: granted only to origins listed in ``allowed_origins``."""
    origin = request.headers.get("Origin")
    if origin is None or not listed_origin(origin, gateway.config.server.allowed_origins):
        return gateway.refuse("cross_site", 403, "preflight refused: origin not listed")
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


def with_cors(gateway: Gateway, request: web.BaseRequest, answer: web.Response) -> web.Response:
    """Let a listed origin's page read the answer (nothing for anyone else)."""
    origin = request.headers.get("Origin")
    if origin is not None and listed_origin(origin, gateway.config.server.allowed_origins):
        answer.headers["Access-Control-Allow-Origin"] = origin
        answer.headers["Vary"] = "Origin"
    return answer


async def open_viewer(
    gateway: Gateway,
    request: web.BaseRequest,
    target: Route,
    connection: Connection,
    peer: str,
) -> web.StreamResponse:
    server = gateway.config.server
    origin = request.headers.get("Origin")
    if not viewer_origin_allowed(origin, request.headers.get("Host"), server.allowed_origins):
        return gateway.refuse("origin", 403, "origin not allowed", peer=peer, origin=origin)
    stream = target.kind is RouteKind.STREAM
    if stream and is_valid_camera_id(target.camera_id):
        denied = _denied(gateway, Need.VIEW, request, peer, target.camera_id)
    else:
        denied = _denied(gateway, Need.LIST, request, peer)  # /ws checks each camera later
    if denied is not None:
        return denied
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),  # browsers offer ["streamd", "token.…"]: one is echoed
        autoping=False,  # pings are ours to count (viewers.client_messages)
        heartbeat=HEARTBEAT_S,
        max_msg_size=MAX_VIEWER_MESSAGE,
        compress=False,  # JPEG does not compress; deflate would only burn CPU
        timeout=2.0,
    )
    if not ws.can_prepare(request).ok:
        return gateway.refuse("bad_request", 400, "expected a WebSocket upgrade")
    await ws.prepare(request)
    connection.upgraded = True
    gateway.websockets[ws] = ViewerAccess(
        token_of(request),
        peer,
        origin,
        request.headers.get("Host"),
        target.camera_id if stream else None,
    )
    try:
        if not stream:
            await MultiplexedViewer(gateway, ws, token_of(request), peer).run()
        elif not is_valid_camera_id(target.camera_id):
            gateway.refuse_quietly("invalid_camera_id")
            await close_viewer(ws, CLOSE_POLICY, "invalid camera id")
        else:
            await run_single(gateway, ws, target.camera_id, peer, request)
    finally:
        gateway.websockets.pop(ws, None)
        if not ws.closed:
            await close_viewer(ws, 1000, "")
    return ws
