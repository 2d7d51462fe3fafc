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
    # The seed system's surface (the detection system streamd replaces; its API
    # server's /api/v1 paths), answered in its shapes (gateway/seed_api.py):
    V1_STREAM_STATS = "v1_stream_stats"  # GET /api/v1/video-stream/stats
    V1_STREAM_STATUS = "v1_stream_status"  # GET /api/v1/video-stream/status/{id}
    V1_FRAME_PUSH = "v1_frame_push"  # POST /api/v1/video-stream/frame/{id}
    V1_STREAM_CONFIG = "v1_stream_config"  # GET|POST /api/v1/video-stream/config/{id}
    V1_CAMERAS = "v1_cameras"  # GET /api/v1/cameras
    V1_BATCH_STATUS = "v1_batch_status"  # POST /api/v1/cameras/batch-status
    V1_CAMERA = "v1_camera"  # /api/v1/cameras/{id}/status|preview|stats, or the item itself
    V1_CAMERA_LOGS = "v1_camera_logs"  # GET /api/v1/cameras/{id}/logs?lines=N
    V1_CAMERA_TEST = "v1_camera_test"  # POST /api/v1/cameras/{id}/test
    # /api/v1/cameras/{id}/activate|deactivate|auto-start: the config's business (405)
    V1_CAMERA_CONFIGURED = "v1_camera_configured"
    NODES = "nodes"  # GET /api/nodes

    @property
    def seed_errors(self) -> bool:
        """Errors in the seed system's ``{"detail": {...}}`` shape: every path of
        its surface, camera start/stop included (its clients read that shape)."""
        return self.value.startswith("v1_") or self is RouteKind.CAMERA_CONTROL

    @property
    def takes_body(self) -> bool:
        return self.changes_state or self is RouteKind.V1_BATCH_STATUS

    @property
    def is_websocket(self) -> bool:
        return self in (RouteKind.STREAM, RouteKind.MULTIPLEX)

    @property
    def changes_state(self) -> bool:
        """Endpoints a cross-site page must never reach."""
        return self in (
            RouteKind.CAMERA_CONTROL,
            RouteKind.V1_CAMERA_TEST,
            RouteKind.RELOAD,
            RouteKind.V1_FRAME_PUSH,
            RouteKind.V1_STREAM_CONFIG,
        )

    @property
    def methods(self) -> frozenset[str]:
        if self is RouteKind.V1_CAMERA_CONFIGURED:
            return frozenset()  # every method gets the 405 naming the config
        if self is RouteKind.V1_STREAM_CONFIG:
            return frozenset({"GET", "HEAD", "POST"})
        if self in (RouteKind.V1_BATCH_STATUS, RouteKind.V1_FRAME_PUSH) or self.changes_state:
            return frozenset({"POST"})
        if self.is_websocket:
            return frozenset({"GET"})
        return frozenset({"GET", "HEAD"})


STREAM_PREFIXES = ("/ws/", "/api/v1/video-stream/ws/")
CONTROL_PREFIX = "/api/v1/cameras/"
CONTROL_ACTIONS = frozenset({"start", "stop", "restart"})
V1_STREAM = "/api/v1/video-stream/"
V1_STREAM_ROUTES = {
    "status/": RouteKind.V1_STREAM_STATUS,
    "frame/": RouteKind.V1_FRAME_PUSH,
    "config/": RouteKind.V1_STREAM_CONFIG,
}
V1_CAMERA_VIEWS = frozenset({"status", "preview", "stats"})
V1_CAMERA_ROUTES = {
    "logs": RouteKind.V1_CAMERA_LOGS,
    "test": RouteKind.V1_CAMERA_TEST,
    "activate": RouteKind.V1_CAMERA_CONFIGURED,
    "deactivate": RouteKind.V1_CAMERA_CONFIGURED,
    "auto-start": RouteKind.V1_CAMERA_CONFIGURED,
}
_SIMPLE = {
    "/": RouteKind.WALL,
    "/healthz": RouteKind.HEALTHZ,
    "/metrics": RouteKind.METRICS,
    "/api/cameras": RouteKind.CAMERAS,
    "/api/v1/reload": RouteKind.RELOAD,
    "/ws": RouteKind.MULTIPLEX,
    "/api/v1/video-stream/stats": RouteKind.V1_STREAM_STATS,
    "/api/v1/cameras": RouteKind.V1_CAMERAS,
    "/api/v1/cameras/": RouteKind.V1_CAMERAS,
    "/api/v1/cameras/batch-status": RouteKind.V1_BATCH_STATUS,
    "/api/events": RouteKind.EVENTS,
    "/api/nodes": RouteKind.NODES,
}
EVENTS_PREFIX = "/api/events/"
EVENT_SNAPSHOT_SUFFIX = "/snapshot.jpg"


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    camera_id: str = ""  # not yet validated: callers check is_valid_camera_id
    action: str = ""
    event_id: str = ""  # not yet validated: events_api checks it

    @property
    def shows_picture(self) -> bool:
        """A JPEG of a camera: another site must not embed it with ``<img>``."""
        return self.kind in (RouteKind.SNAPSHOT, RouteKind.EVENT_SNAPSHOT) or (
            self.kind is RouteKind.V1_CAMERA and self.action == "preview"
        )


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
    if path.startswith(V1_STREAM):
        rest = path[len(V1_STREAM) :]
        for prefix, kind in V1_STREAM_ROUTES.items():
            if rest.startswith(prefix) and "/" not in rest[len(prefix) :]:
                return Route(kind, rest[len(prefix) :])
    if path.startswith(EVENTS_PREFIX) and path.endswith(EVENT_SNAPSHOT_SUFFIX):
        event_id = path[len(EVENTS_PREFIX) : -len(EVENT_SNAPSHOT_SUFFIX)]
        return Route(RouteKind.EVENT_SNAPSHOT, event_id=event_id)
    if path.startswith(CONTROL_PREFIX):
        camera_id, _, action = path[len(CONTROL_PREFIX) :].partition("/")
        if action in CONTROL_ACTIONS:
            return Route(RouteKind.CAMERA_CONTROL, camera_id, action)
        if action in V1_CAMERA_ROUTES:
            return Route(V1_CAMERA_ROUTES[action], camera_id, action)
        if action in V1_CAMERA_VIEWS or (not action and camera_id):
            return Route(RouteKind.V1_CAMERA, camera_id, action)
    return NOT_FOUND
