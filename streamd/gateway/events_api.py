"""``GET /api/events`` and ``GET /api/events/{id}/snapshot.jpg``: kept detection
events, paged with a cursor, scoped to the cameras the caller's token may view.
``Gateway.dispatch`` has already checked Host, method and body; ``HttpApi.handle``
hands these two route kinds here."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from streamd.eventlog.records import EventStore, QueryError, parse_query
from streamd.eventlog.records import parse_stream_id as _parse_id
from streamd.gateway.auth import Need
from streamd.gateway.request_guards import denied
from streamd.gateway.responses import error, json_response, response
from streamd.gateway.routes import Route, RouteKind
from streamd.gateway.state import GatewayState
from streamd.sparse import is_power_of_two

log = structlog.get_logger("streamd.gateway")
ROUTE_KINDS = frozenset({RouteKind.EVENTS, RouteKind.EVENT_SNAPSHOT})


def viewer_scope(state: GatewayState, token: str | None, peer: str) -> Callable[[str], bool]:
    """May this caller view a camera? (cached: one token hash per camera per request)"""

    @cache
    def allowed(camera_id: str) -> bool:
        return state.decide(Need.VIEW, token, peer, camera_id).allowed

    return allowed


def count_junk(state: GatewayState, junk: int) -> None:
    """Stream entries that were not events (someone else wrote them): skipped, counted."""
    if junk:
        before = state.rejected["bad_event_entry"]
        state.rejected["bad_event_entry"] += junk
        if before == 0 or is_power_of_two(before):  # the first batch, then sparsely
            log.warning("junk entries in the events stream skipped", skipped_total=before + junk)


async def handle(
    state: GatewayState, request: web.BaseRequest, target: Route, peer: str, token: str | None
) -> web.Response:
    refusal = denied(state, Need.LIST, token, peer, path=request.path)
    if refusal is not None:
        return refusal
    store = state.events
    if store is None:
        return error(503, "events are not kept here")
    allowed = viewer_scope(state, token, peer)
    try:
        if target.kind is RouteKind.EVENTS:
            return await _list(state, store, request, allowed)
        return await _snapshot(state, store, target.event_id, allowed)
    except (RedisError, OSError) as exc:
        state.refuse_quietly("events_unavailable", error=str(exc) or type(exc).__name__)
        return error(503, "events unavailable (Redis)")


async def _list(
    state: GatewayState, store: EventStore, request: web.BaseRequest, allowed: Callable[[str], bool]
) -> web.Response:
    try:
        query = parse_query(request.query.items())
    except QueryError as exc:
        return state.refuse("bad_query", 400, str(exc))
    for camera_id in sorted(query.cameras or ()):
        if not allowed(camera_id):
            return state.refuse("forbidden", 403, f"token not valid for camera {camera_id}")
    page = await store.query(query, allowed)
    count_junk(state, page.junk)
    return json_response(
        200, {"events": [record.to_json() for record in page.events], "cursor": page.cursor}
    )


async def _snapshot(
    state: GatewayState, store: EventStore, event_id: str, allowed: Callable[[str], bool]
) -> web.Response:
    if _parse_id(event_id) is None:
        return state.refuse("bad_query", 400, "event ids look like 1732860000000-0")
    junk_before = store.junk
    record = await store.get(event_id)
    count_junk(state, store.junk - junk_before)
    if record is None:
        return state.refuse("not_found", 404, "no such event (or no longer kept)")
    if not allowed(record.camera):
        return state.refuse("forbidden", 403, "token not valid for this camera")
    data = await store.snapshot(record)
    if data is None:
        return state.refuse("not_found", 404, "this event's snapshot is not kept")
    return response(200, data, "image/jpeg")
