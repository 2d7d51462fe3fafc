"""Which endpoint a request path names (pure; unit-tested in tests/test_gateway_pure.py).

Routing is ours rather than the HTTP library's so every answer, 404 and 405
included, has streamd's JSON shape and is counted, and so the table below is the
one list of what the gateway serves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RouteKind(enum.Enum):
    STREAM = "stream"  # /ws/{id}: one JPEG per binary message
    MULTIPLEX = "multiplex"  # /ws: many cameras, JSON control
    WALL = "wall"  # / : the wall page
    HEALTHZ = "healthz"
    METRICS = "metrics"
    CAMERAS = "cameras"  # /api/cameras
    SNAPSHOT = "snapshot"  # /snapshot/{id}.jpg
    CAMERA_CONTROL = "camera_control"  # POST /api/v1/cameras/{id}/start|stop
    RELOAD = "reload"  # POST /api/v1/reload
    EVENTS = "events"  # /api/events (gateway/events_api.py)
    EVENT_SNAPSHOT = "event_snapshot"  # /api/events/{id}/snapshot.jpg
    NOT_FOUND = "not_found"

    @property
    def is_websocket(self) -> bool:
        return self in (RouteKind.STREAM, RouteKind.MULTIPLEX)

    @property
    def changes_state(self) -> bool:
        """Endpoints a cross-site page must never reach."""
        return self in (RouteKind.CAMERA_CONTROL, RouteKind.RELOAD)

    @property
    def methods(self) -> frozenset[str]:
        if self.changes_state:
            return frozenset({"POST"})
        if self.is_websocket:
            return frozenset({"GET"})
        return frozenset({"GET", "HEAD"})


STREAM_PREFIXES = ("/ws/", "/api/v1/video-stream/ws/")
CONTROL_PREFIX = "/api/v1/cameras/"
CONTROL_ACTIONS = frozenset({"start", "stop"})
_SIMPLE = {
    "/": RouteKind.WALL,
    "/healthz": RouteKind.HEALTHZ,
    "/metrics": RouteKind.METRICS,
    "/api/cameras": RouteKind.CAMERAS,
    "/api/v1/reload": RouteKind.RELOAD,
    "/ws": RouteKind.MULTIPLEX,
    "/api/events": RouteKind.EVENTS,
}
EVENTS_PREFIX = "/api/events/"
EVENT_SNAPSHOT_SUFFIX = "/snapshot.jpg"


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    camera_id: str = ""  # not yet validated: callers check is_valid_camera_id
    action: str = ""
    event_id: str = ""  # not yet validated: events_api checks it


NOT_FOUND = Route(RouteKind.NOT_FOUND)


def route(path: str) -> Route:
    """``path`` is the decoded path without the query string."""
    simple = _SIMPLE.get(path)
    if simple is not None:
        return Route(simple)
    for prefix in STREAM_PREFIXES:
        if path.startswith(prefix):
            return Route(RouteKind.STREAM, path[len(prefix) :])
    if path.startswith("/snapshot/") and path.endswith(".jpg"):
        return Route(RouteKind.SNAPSHOT, path[len("/snapshot/") : -len(".jpg")])
    if path.startswith(EVENTS_PREFIX) and path.endswith(EVENT_SNAPSHOT_SUFFIX):
        event_id = path[len(EVENTS_PREFIX) : -len(EVENT_SNAPSHOT_SUFFIX)]
        return Route(RouteKind.EVENT_SNAPSHOT, event_id=event_id)
    if path.startswith(CONTROL_PREFIX):
        camera_id, _, action = path[len(CONTROL_PREFIX) :].partition("/")
        if action in CONTROL_ACTIONS:
            return Route(RouteKind.CAMERA_CONTROL, camera_id, action)
    return NOT_FOUND
