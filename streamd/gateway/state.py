"""What the gateway's handlers share, and the verbs they share it through.

``Gateway`` (server.py) composes the handlers and hands each this state, never
itself (uvicorn's ``ServerState`` habit): so no handler can reach the listening
socket, and no handler module imports the server. The state holds the config,
the hub, the subscriptions, the daemon's ``Control``, the camera directory, the
kept events and the counters; its verbs are access decisions, refusal
accounting, camera views, watching and ingest of untrusted frames and events.
Viewers that want events and state changes register as a ``Listener``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import structlog
from aiohttp import web

from streamd.camera_status import CameraStatus
from streamd.config import Config
from streamd.eventlog.local_log import LocalEventLog
from streamd.eventlog.records import EventStore
from streamd.gateway import protocol
from streamd.gateway.auth import Decision, Need, authorize, visible_cameras
from streamd.gateway.control import Control
from streamd.gateway.hub import Hub, HubFrame, Mailbox, SendNow
from streamd.gateway.live_events import viewer_event
from streamd.gateway.responses import error
from streamd.gateway.revoke import ViewerAccess
from streamd.gateway.subscriptions import Kind, Subscriptions
from streamd.gateway.unit_hub import SendUnitNow, UnitHub, UnitViewer
from streamd.registry.directory import CameraDirectory
from streamd.sparse import should_log
from streamd.states import CameraState
from streamd.transport.frame import FrameError, parse_frame
from streamd.video.annexb import Codec
from streamd.video.units import Reason

log = structlog.get_logger("streamd.gateway")
MAX_EVENT_BYTES = 64 * 1024
MAX_IDLE_FOREIGN_EVENTS = 256  # newest events kept for unconfigured cameras (LRU)
# Refusals after which the connection is closed (the client misbehaves or may
# have sent a body we did not read).
CLOSING_REASONS = frozenset(
    {"bad_request", "host", "max_viewers_per_address", "body_too_large", "body_timeout"}
)


class Listener(Protocol):
    """A viewer told of events and state changes (a multiplexed ``/ws``)."""

    @property
    def ws(self) -> web.WebSocketResponse: ...

    @property
    def cameras(self) -> Collection[str]:
        """The cameras it watches (checked again when a reload narrows access)."""
        ...

    def on_event(self, camera_id: str, event: dict[str, Any]) -> None: ...

    def on_state(self, camera_id: str, state: CameraState) -> None: ...


class GatewayState:
    def __init__(
        self,
        config: Config,
        hub: Hub,
        subscriptions: Subscriptions,
        control: Control,
        *,
        directory: CameraDirectory | None = None,
        events: EventStore | None = None,
        fallback_active: Callable[[], bool] = lambda: False,
        units: UnitHub | None = None,
    ) -> None:
        self.config = config
        self.hub = hub
        self.units = units if units is not None else UnitHub()  # passthrough feeds
        self.subscriptions = subscriptions
        self.control = control
        self.directory = directory  # every node's cameras, from the Redis registry
        self.events = events  # kept events: Redis' stream or the embedded log
        self.fallback_active = fallback_active  # frames come over control sockets
        self.listening = False  # set by the server while its socket is open
        self.rejected: Counter[str] = Counter()  # untrusted input dropped, by reason
        self.refused: Counter[str] = Counter()  # viewers and requests refused, by reason
        # Open WebSockets and what let them in (checked again on reload).
        self.websockets: dict[web.WebSocketResponse, ViewerAccess] = {}
        self.listeners: set[Listener] = set()
        self._last_events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        hub.pin(c.id for c in config.cameras)

    def apply_config(self, config: Config) -> None:
        self.config = config
        self.hub.pin(c.id for c in config.cameras)
        self.subscriptions.apply_config(config)

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

    def ingest_unit(self, camera_id: str, payload: bytes) -> bool:
        """Judge an untrusted access unit from ``au:{id}`` (``video.units.check_unit``)
        and hand it to the camera's passthrough viewers; False when it was
        rejected, counted as ``unit_{reason}`` with the frames' reasons."""
        reason = self.units.ingest(camera_id, payload, time.time_ns())
        if reason is None or reason is Reason.OK:
            return reason is Reason.OK
        self.reject(camera_id, f"unit_{reason.value}")
        return False

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
        for listener in self.listeners:
            listener.on_event(camera_id, event)

    def _keep_event(self, camera_id: str, event: dict[str, Any]) -> None:
        self._last_events[camera_id] = event
        self._last_events.move_to_end(camera_id)
        configured = {c.id for c in self.config.cameras}
        foreign = [c for c in self._last_events if c not in configured]
        for camera_id in foreign[: max(0, len(foreign) - MAX_IDLE_FOREIGN_EVENTS)]:
            del self._last_events[camera_id]

    def last_event(self, camera_id: str) -> dict[str, Any] | None:
        return self._last_events.get(camera_id)

    # --- refusals -----------------------------------------------------------------------
    def reject(self, camera_id: str, reason: str) -> None:
        """Count an untrusted frame or event dropped (by reason); log sparsely."""
        self.rejected[reason] += 1
        total = sum(self.rejected.values())
        if should_log(total):
            log.warning("frame rejected", camera_id=camera_id, reason=reason, rejected_total=total)

    def refuse_quietly(self, reason: str, **fields: Any) -> None:
        """Count a refusal; log sparsely per reason (no log floods)."""
        self.refused[reason] += 1
        count = self.refused[reason]
        if should_log(count):
            log.info("request refused", reason=reason, refused_total=count, **fields)

    def refuse(
        self, reason: str, status: int, message: str, *, seed_errors: bool = False, **fields: Any
    ) -> web.Response:
        """Count, log sparsely, and answer; ``seed_errors``: in the seed system's shape."""
        self.refused[reason] += 1
        count = self.refused[reason]
        if should_log(count):
            log.info("request refused", reason=reason, status=status, refused_total=count, **fields)
        close = status >= 500 or reason in CLOSING_REASONS
        return error(status, message, close=close, seed_error=reason if seed_errors else None)

    # --- access -------------------------------------------------------------------------
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

    def can_view(self, token: str | None, peer: str, camera_id: str) -> Decision:
        return self.decide(Need.VIEW, token, peer, camera_id)

    def known_cameras(self) -> list[str]:
        """Configured cameras, then other nodes' (the registry), then others being
        watched here (idle cached feeds of removed or foreign cameras are not
        listed: no ghosts)."""
        configured = [c.id for c in self.config.cameras]
        listed = set(configured)
        registered = [c for c in self.directory.ids() if c not in listed] if self.directory else []
        listed.update(registered)
        watched = {c for c, feed in self.hub.feeds.items() if feed.mailboxes}
        watched |= set(self.units.feeds)  # passthrough viewers
        others = [c for c in watched if c not in listed]
        return configured + registered + sorted(others)

    def visible_cameras(self, token: str | None) -> list[str]:
        return visible_cameras(self.known_cameras(), self.config.server.tokens, token)

    # --- camera views -------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        if not self.listening:
            return False, "not listening"
        subscriber = self.subscriptions.subscriber
        if subscriber is None:
            return True, "redis disabled: local frames"
        if subscriber.subscribed:
            return True, "subscribed"
        if self.fallback_active():
            return True, "redis down: local fallback"
        return False, "redis subscription down"

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
        """``GET /api/cameras``: each visible camera's status, state and viewers."""
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
            info["passthrough"] = self.units.info(camera_id)
            result[camera_id] = info
        fork_server = self.control.fork_server()
        if fork_server is None:
            return {"cameras": result}
        return {"cameras": result, "fork_server": fork_server}

    def tell_states(self) -> None:
        """Give every listener the state of each camera it watches."""
        if not self.listeners:
            return
        statuses = self.control.camera_statuses()
        for listener in list(self.listeners):
            for camera_id in list(listener.cameras):
                listener.on_state(camera_id, self.camera_state(camera_id, statuses))

    # --- viewers' demand ----------------------------------------------------------------
    def watch(
        self,
        camera_id: str,
        notify: asyncio.Event | None = None,
        send_now: SendNow | None = None,
    ) -> Mailbox:
        mailbox = self.hub.attach(camera_id, notify, send_now)
        self.subscriptions.watch(camera_id)
        self.control.viewers_changed(camera_id)
        return mailbox

    def unwatch(self, mailbox: Mailbox) -> None:
        camera_id = mailbox.camera_id
        self.hub.detach(mailbox)
        self.subscriptions.unwatch(camera_id)
        self.control.viewers_changed(camera_id)

    def watch_units(
        self,
        camera_id: str,
        codec: Codec,
        notify: asyncio.Event | None = None,
        send_now: SendUnitNow | None = None,
    ) -> UnitViewer:
        """A passthrough viewer: ``au:{id}`` is subscribed while one watches (not
        ``video:{id}``: nobody needs the JPEG), and it starts with the cached GOP."""
        viewer = UnitViewer(camera_id, codec, notify=notify, send_now=send_now)
        self.units.attach(viewer)
        self.subscriptions.watch(camera_id, Kind.UNITS)
        self.control.viewers_changed(camera_id)
        return viewer

    def unwatch_units(self, viewer: UnitViewer) -> None:
        self.units.detach(viewer)
        self.subscriptions.unwatch(viewer.camera_id, Kind.UNITS)
        self.control.viewers_changed(viewer.camera_id)
