"""One multiplexed ``/ws`` viewer as a sans-I/O state machine: text in, a list of
things to do out (the way websockets keeps its protocol apart from its
connection). ``viewers.MultiplexedViewer`` carries the actions out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamd.eventlog.records import parse_stream_id
from streamd.gateway import protocol
from streamd.gateway.auth import Decision
from streamd.gateway.unit_hub import Format
from streamd.video.annexb import Codec

MAX_SUBSCRIPTIONS = 64  # cameras on one multiplexed connection (bounds Redis subscriptions)
MAX_REPLAY = 200  # kept events in one replay message (more: "more": true, ask again)
MAX_HELD_LIVE = 64  # live events held back while a replay is fetched


@dataclass(frozen=True)
class Reply:
    text: str  # a JSON message for this viewer


@dataclass(frozen=True)
class Watch:
    camera_id: str  # start feeding this camera's frames, or its access units
    format: Format = Format.JPEG


@dataclass(frozen=True)
class Unwatch:
    camera_id: str


@dataclass(frozen=True)
class Refused:
    reason: str  # counted in streamd_requests_refused_total


@dataclass(frozen=True)
class Replay:
    cameras: tuple[str, ...]  # fetch kept events of these cameras after ``after``
    after: str
    limit: int = MAX_REPLAY


Action = Reply | Watch | Unwatch | Refused | Replay


def _id_key(event: dict[str, Any]) -> tuple[int, int] | None:
    ident = event.get("id")
    return parse_stream_id(ident) if isinstance(ident, str) else None


@dataclass
class _PendingReplay:
    cameras: frozenset[str]
    held: deque[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: deque(maxlen=MAX_HELD_LIVE)
    )


class MultiplexSession:
    def __init__(
        self,
        can_view: Callable[[str], Decision],
        state_of: Callable[[str], str],
        last_event_of: Callable[[str], dict[str, Any] | None],
    ) -> None:
        self._can_view = can_view
        self._state_of = state_of
        self._last_event_of = last_event_of
        self.cameras: set[str] = set()
        self.formats: dict[str, Format] = {}  # what each camera is watched as
        self._states: dict[str, str] = {}
        self._replay: _PendingReplay | None = None

    def hello(self, visible: list[str]) -> list[Action]:
        return [Reply(protocol.text("hello", version=protocol.VERSION, cameras=visible))]

    def on_binary(self) -> list[Action]:
        return [
            Refused("bad_message"),
            Reply(protocol.text("error", reason="binary messages not accepted")),
        ]

    def on_text(self, message: str) -> list[Action]:
        try:
            command = protocol.parse_client_message(message)
        except protocol.ClientMessageError as exc:
            return [Refused("bad_message"), Reply(protocol.text("error", reason=str(exc)))]
        if command.op == "ping":
            return [Reply(protocol.text("pong"))]
        if command.op == "unsubscribe":
            return self._unsubscribe(command.cameras)
        if command.events_since is not None and self._replay is not None:
            return [Refused("bad_message"), Reply(protocol.text("error", reason="replay busy"))]
        return self._subscribe(command.cameras, command.events_since, command.format)

    def on_state(self, camera_id: str, state: str) -> list[Action]:
        """A camera's state as judged now; a message only when it changed."""
        if camera_id not in self.cameras or self._states.get(camera_id) == state:
            return []
        self._states[camera_id] = state
        return [Reply(protocol.text("state", camera=camera_id, state=state))]

    def on_event(self, camera_id: str, event: dict[str, Any]) -> list[Action]:
        if camera_id not in self.cameras:
            return []
        if self._replay is not None and camera_id in self._replay.cameras:
            self._replay.held.append((camera_id, event))  # sent after the replay, in order
            return []
        return [Reply(protocol.text("event", camera=camera_id, event=event))]

    def on_replay(self, events: list[dict[str, Any]], more: bool) -> list[Action]:
        """The kept events a ``Replay`` fetched (oldest first): one ``events``
        message, then the live events held meanwhile that it did not contain."""
        pending, self._replay = self._replay, None
        if pending is None:
            return []
        events = [e for e in events if e.get("camera_id") in self.cameras]
        actions: list[Action] = [Reply(protocol.text("events", events=events, more=more))]
        newest = max((k for e in events if (k := _id_key(e)) is not None), default=None)
        for camera_id, event in pending.held:
            key = _id_key(event)
            if newest is None or key is None or key > newest:
                actions += self.on_event(camera_id, event)
        return actions

    def on_replay_failed(self) -> list[Action]:
        actions: list[Action] = [Reply(protocol.text("error", reason="events replay unavailable"))]
        pending, self._replay = self._replay, None
        for camera_id, event in pending.held if pending else ():
            actions += self.on_event(camera_id, event)
        return actions

    def on_codec_mismatch(self, camera_id: str, codec: Codec) -> list[Action]:
        """The camera sends ``codec``, not what this viewer asked for: JPEG from
        now on for it, and a ``format`` message saying why."""
        asked = self.formats.get(camera_id)
        if camera_id not in self.cameras or asked is None or asked is Format.JPEG:
            return []
        self.formats[camera_id] = Format.JPEG
        reason = f"camera sends {codec.value}, not {asked.value}"
        return [
            Unwatch(camera_id),
            Watch(camera_id, Format.JPEG),
            Reply(protocol.text("format", camera=camera_id, format="jpeg", reason=reason)),
        ]

    def close(self) -> list[Action]:
        actions: list[Action] = [Unwatch(c) for c in sorted(self.cameras)]
        self.cameras.clear()
        self.formats.clear()
        self._states.clear()
        return actions

    def _unsubscribe(self, cameras: tuple[str, ...]) -> list[Action]:
        actions: list[Action] = []
        for camera_id in cameras:
            if camera_id in self.cameras:
                self.cameras.discard(camera_id)
                self.formats.pop(camera_id, None)
                actions.append(Unwatch(camera_id))
            self._states.pop(camera_id, None)
        actions.append(Reply(protocol.text("unsubscribed", cameras=list(cameras))))
        return actions

    def _subscribe(
        self, cameras: tuple[str, ...], events_since: str | None, fmt: Format = Format.JPEG
    ) -> list[Action]:
        actions: list[Action] = []
        granted: list[str] = []
        denied: list[dict[str, str]] = []
        for camera_id in cameras:
            decision = self._can_view(camera_id)
            if not decision.allowed:
                actions.append(Refused("forbidden"))
                denied.append({"camera": camera_id, "reason": decision.reason})
                continue
            if camera_id not in self.cameras and len(self.cameras) >= MAX_SUBSCRIPTIONS:
                actions.append(Refused("max_subscriptions"))
                denied.append({"camera": camera_id, "reason": "too many cameras on one connection"})
                continue
            if camera_id not in self.cameras:
                self.cameras.add(camera_id)
                self.formats[camera_id] = fmt
                actions.append(Watch(camera_id, fmt))
            elif self.formats.get(camera_id) is not fmt:  # the same camera in another format
                self.formats[camera_id] = fmt
                actions += [Unwatch(camera_id), Watch(camera_id, fmt)]
            granted.append(camera_id)
        # JPEG clients see the answer they always did; others the format granted.
        shown = {} if fmt is Format.JPEG else {"format": fmt.value}
        actions.append(Reply(protocol.text("subscribed", cameras=granted, denied=denied, **shown)))
        for camera_id in granted:
            self._states.pop(camera_id, None)  # a fresh subscriber is told the state again
            actions += self.on_state(camera_id, self._state_of(camera_id))
            event = self._last_event_of(camera_id)
            if event is not None and events_since is None:  # a replay brings it
                actions += self.on_event(camera_id, event)
        if events_since is not None and granted:
            self._replay = _PendingReplay(frozenset(granted))
            actions.append(Replay(tuple(granted), events_since))
        return actions
