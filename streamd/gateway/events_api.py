"""``GET /api/events`` and ``GET /api/events/{id}/snapshot.jpg``: kept detection
events, paged with a cursor, scoped to the cameras the caller's token may view.
``Gateway.dispatch`` has already checked Host, method and body; ``http_api.handle``
hands these two route kinds here."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Protocol

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from streamd.eventlog.records import EventQuery, EventRecord, Page, QueryError, parse_query
from streamd.eventlog.records import parse_stream_id as _parse_id
from streamd.gateway.auth import Need
from streamd.gateway.responses import error, json_response, response
from streamd.gateway.routes import Route, RouteKind
from streamd.sparse import is_power_of_two

if TYPE_CHECKING:
    from streamd.gateway.server import Gateway

log = structlog.get_logger("streamd.gateway")
ROUTE_KINDS = frozenset({RouteKind.EVENTS, RouteKind.EVENT_SNAPSHOT})


class EventStore(Protocol):
    """Where kept events are read: ``RedisEventStore`` or ``LocalEventLog``."""

    junk: int

    async def query(self, query: EventQuery, allowed: Callable[[str], bool]) -> Page: ...

    async def get(self, event_id: str) -> EventRecord | None: ...

    async def snapshot(self, record: EventRecord) -> bytes | None: ...


def viewer_scope(gateway: Gateway, token: str | None, peer: str) -> Callable[[str], bool]:
    """May this caller view a camera? (cached: one token hash per camera per request)"""

    @cache
    def allowed(camera_id: str) -> bool:
        return gateway.decide(Need.VIEW, token, peer, camera_id).allowed

    return allowed


def count_junk(gateway: Gateway, junk: int) -> None:
    """Stream entries that were not events (someone else wrote them): skipped, counted."""
    if junk:
        before = gateway.rejected["bad_event_entry"]
        gateway.rejected["bad_event_entry"] += junk
        if before == 0 or is_power_of_two(before):  # the first batch, then sparsely
            log.warning("junk entries in the events stream skipped", skipped_total=before + junk)


async def handle(
    gateway: Gateway, request: web.BaseRequest, target: Route, peer: str, token: str | None
) -> web.Response:
    decision = gateway.decide(Need.LIST, token, peer, None)
    if not decision.allowed:
        reason = "unauthorized" if decision.status == 401 else "forbidden"
        return gateway.refuse(reason, decision.status, decision.reason, path=request.path)
    store = gateway.events
    if store is None:
        return error(503, "events are not kept here")
    allowed = viewer_scope(gateway, token, peer)
    try:
        if target.kind is RouteKind.EVENTS:
            return await _list(gateway, store, request, allowed)
        return await _snapshot(gateway, store, target.event_id, allowed)
    except (RedisError, OSError) as exc:
        gateway.refuse_quietly("events_unavailable", error=str(exc) or type(exc).__name__)
        return error(503, "events unavailable (Redis)")


async def _list(
    gateway: Gateway, store: EventStore, request: web.BaseRequest, allowed: Callable[[str], bool]
) -> web.Response:
    try:
        query = parse_query(request.query.items())
    except QueryError as exc:
        return gateway.refuse("bad_query", 400, str(exc))
    for camera_id in sorted(query.cameras or ()):
        if not allowed(camera_id):
            return gateway.refuse("forbidden", 403, f"token not valid for camera {camera_id}")
    page = await store.query(query, allowed)
    count_junk(gateway, page.junk)
    return json_response(
        200, {"events": [record.to_json() for record in page.events], "cursor": page.cursor}
    )


async def _snapshot(
    gateway: Gateway, store: EventStore, event_id: str, allowed: Callable[[str], bool]
) -> web.Response:
    if _parse_id(event_id) is None:
        return gateway.refuse("bad_query", 400, "event ids look like 1732860000000-0")
    junk_before = store.junk
    record = await store.get(event_id)
    count_junk(gateway, store.junk - junk_before)
    if record is None:
        return gateway.refuse("not_found", 404, "no such event (or no longer kept)")
    if not allowed(record.camera):
        return gateway.refuse("forbidden", 403, "token not valid for this camera")
    data = await store.snapshot(record)
    if data is None:
        return gateway.refuse("not_found", 404, "this event's snapshot is not kept")
    return response(200, data, "image/jpeg")
