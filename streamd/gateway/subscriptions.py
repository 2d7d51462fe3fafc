"""The one owner of what the gateway subscribes to in Redis.

What is wanted follows from two things only: the config and what this
gateway's viewers watch. ``wanted`` says it (pure), ``changes`` compares it
with what is subscribed (pure), and ``Subscriptions`` carries the difference
out, at start, on every reload and whenever a viewer comes or goes. So a
camera's channels are asked for once, whoever else wants them.

Viewers watch a camera in one of two kinds: JPEG frames (``video:{id}``) or
passthrough access units (``au:{id}``). Each channel is subscribed only while a
viewer of its kind watches, so ``PUBSUB NUMSUB`` tells the camera's child,
per kind, whether anyone wants it (JPEG to encode, units to publish).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from streamd.config import Config


class Kind(enum.Enum):
    """What a viewer watches a camera for."""

    FRAMES = "frames"  # JPEG, ``video:{id}``
    UNITS = "units"  # H.264/H.265 passthrough, ``au:{id}``


@dataclass(frozen=True)
class Wanted:
    """Camera ids whose frame channel (``video:{id}``), event channel
    (``streamd:events:{id}``) and unit channel (``au:{id}``) are wanted."""

    frames: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    units: frozenset[str] = frozenset()


def wanted(config: Config, watched: Iterable[str], watched_units: Iterable[str] = ()) -> Wanted:
    """Frames of cameras watched as JPEG, and of external ones always (another
    program publishes them: their newest frame is cached for late joiners, as the
    seed system's ``PSUBSCRIBE video:*`` did). Units of cameras watched as
    passthrough, never otherwise. Events of every configured camera (the newest
    is shown in ``/api/cameras``) and of watched ones, of either kind."""
    watching = set(watched)
    units = set(watched_units)
    external = {c.id for c in config.cameras if c.external}
    configured = {c.id for c in config.cameras}
    return Wanted(
        frozenset(external | watching),
        frozenset(configured | watching | units),
        frozenset(units),
    )


@dataclass(frozen=True)
class Changes:
    want: tuple[str, ...] = ()
    unwant: tuple[str, ...] = ()
    want_events: tuple[str, ...] = ()
    unwant_events: tuple[str, ...] = ()
    want_units: tuple[str, ...] = ()
    unwant_units: tuple[str, ...] = ()


def changes(subscribed: Wanted, target: Wanted) -> Changes:
    """What to subscribe to and what to leave to reach ``target`` (sorted: logs
    and tests read the same order every time)."""
    return Changes(
        want=tuple(sorted(target.frames - subscribed.frames)),
        unwant=tuple(sorted(subscribed.frames - target.frames)),
        want_events=tuple(sorted(target.events - subscribed.events)),
        unwant_events=tuple(sorted(subscribed.events - target.events)),
        want_units=tuple(sorted(target.units - subscribed.units)),
        unwant_units=tuple(sorted(subscribed.units - target.units)),
    )


class Subscriber(Protocol):
    """``transport.subscriber.FrameSubscriber`` (and its sharded kin)."""

    subscribed: bool  # a session is up and its subscriptions confirmed

    def want(self, camera_id: str) -> None: ...

    def unwant(self, camera_id: str) -> None: ...

    def want_events(self, camera_id: str) -> None: ...

    def unwant_events(self, camera_id: str) -> None: ...

    def want_units(self, camera_id: str) -> None: ...

    def unwant_units(self, camera_id: str) -> None: ...


class Subscriptions:
    """Keeps ``subscriber`` subscribed to what the config and the viewers want;
    without Redis (no subscriber) it only keeps the count."""

    def __init__(self, subscriber: Subscriber | None, config: Config) -> None:
        self.subscriber = subscriber
        self._config = config
        self._watched: dict[Kind, Counter[str]] = {kind: Counter() for kind in Kind}
        self.subscribed = Wanted()
        self._settle()

    def apply_config(self, config: Config) -> None:
        self._config = config
        self._settle()

    def watch(self, camera_id: str, kind: Kind = Kind.FRAMES) -> None:
        watched = self._watched[kind]
        watched[camera_id] += 1
        if watched[camera_id] == 1:
            self._settle()

    def unwatch(self, camera_id: str, kind: Kind = Kind.FRAMES) -> None:
        watched = self._watched[kind]
        watched[camera_id] -= 1
        if watched[camera_id] <= 0:
            del watched[camera_id]
            self._settle()

    @property
    def watched(self) -> Collection[str]:
        """Cameras a viewer watches, of either kind."""
        return self._watched[Kind.FRAMES].keys() | self._watched[Kind.UNITS].keys()

    def watched_as(self, kind: Kind) -> Collection[str]:
        return self._watched[kind].keys()

    def _settle(self) -> None:
        target = wanted(self._config, self._watched[Kind.FRAMES], self._watched[Kind.UNITS])
        todo = changes(self.subscribed, target)
        self.subscribed = target
        subscriber = self.subscriber
        if subscriber is None:
            return
        for camera_ids, act in (
            (todo.want, subscriber.want),
            (todo.want_events, subscriber.want_events),
            (todo.want_units, subscriber.want_units),
            (todo.unwant, subscriber.unwant),
            (todo.unwant_events, subscriber.unwant_events),
            (todo.unwant_units, subscriber.unwant_units),
        ):
            for camera_id in camera_ids:
                act(camera_id)
