"""The guards every endpoint puts in front of its work, written once: the token a
request presents, the access decision turned into a 401/403, the cross-site
check of state-changing endpoints, and a bounded JSON object body.

Each returns the refusal to send (counted, in the endpoint's error shape) or
what was asked for; the decisions themselves are pure (``auth``, ``guards``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamd.gateway import protocol
from streamd.gateway.auth import Need, presented_token
from streamd.gateway.guards import JSON_MEDIA_TYPE, cross_site
from streamd.gateway.responses import BodyRefusal, read_body
from streamd.gateway.state import GatewayState


def token_of(request: web.BaseRequest) -> str | None:
    return presented_token(
        request.headers.get("Authorization"),
        request.headers.getall("Sec-WebSocket-Protocol", []),
        request.path_qs,
    )


def denied(
    state: GatewayState,
    need: Need,
    token: str | None,
    peer: str,
    camera_id: str | None = None,
    *,
    seed_errors: bool = False,
    **fields: Any,
) -> web.Response | None:
    """The 401/403 to send when ``token`` from ``peer`` may not do ``need``."""
    decision = state.decide(need, token, peer, camera_id)
    if decision.allowed:
        return None
    return state.refuse(
        decision.refusal,
        decision.status,
        decision.reason,
        seed_errors=seed_errors,
        peer=peer,
        **fields,
    )


def cross_site_refusal(
    state: GatewayState,
    request: web.BaseRequest,
    peer: str,
    *,
    seed_errors: bool,
    raw_body: bool = False,
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
        allowed_origins=state.config.server.allowed_origins,
    )
    if check.allowed:
        return None
    origin = headers.get("Origin")
    status = check.verdict.status
    return state.refuse(
        "cross_site", status, check.reason, seed_errors=seed_errors, peer=peer, origin=origin
    )


async def json_object(
    state: GatewayState, request: web.BaseRequest, limit: int, *, seed_errors: bool
) -> dict[str, Any] | web.Response:
    """The body as a JSON object (an empty body is ``{}``), or the refusal:
    too large, too slow, not JSON, or JSON but not an object."""
    body = await read_body(request, limit, state.config.server.handshake_timeout)
    if isinstance(body, BodyRefusal):
        return state.refuse(body.reason, body.status, body.message, seed_errors=seed_errors)
    if not body.strip():
        return {}
    try:
        parsed = protocol.loads_bounded(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        message = "the body must be a JSON object"
        return state.refuse("bad_request", 400, message, seed_errors=seed_errors)
    return parsed
