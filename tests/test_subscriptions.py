"""The gateway's one owner of Redis subscriptions: the pure decision (what the
config and the viewers want, against what is subscribed) and its carrying out
at start, on reload and as viewers come and go."""

from __future__ import annotations

from typing import Any

from streamd.config import Config, parse_config
from streamd.gateway.subscriptions import (
    Changes,
    Kind,
    Subscriptions,
    Wanted,
    changes,
    wanted,
)


def config_of(*cameras: dict[str, Any]) -> Config:
    return parse_config({"redis": {"enabled": False}, "cameras": list(cameras)}, "<test>", {})


DOOR = {"id": "door", "source": "synthetic:"}
YARD = {"id": "yard", "source": "external:"}


class Recorder:
    subscribed = False

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def want(self, camera_id: str) -> None:
        self.calls.append(("want", camera_id))

    def unwant(self, camera_id: str) -> None:
        self.calls.append(("unwant", camera_id))

    def want_events(self, camera_id: str) -> None:
        self.calls.append(("want_events", camera_id))

    def unwant_events(self, camera_id: str) -> None:
        self.calls.append(("unwant_events", camera_id))

    def want_units(self, camera_id: str) -> None:
        self.calls.append(("want_units", camera_id))

    def unwant_units(self, camera_id: str) -> None:
        self.calls.append(("unwant_units", camera_id))


def test_configured_cameras_want_events_external_ones_frames_too() -> None:
    assert wanted(config_of(DOOR, YARD), ()) == Wanted(
        frames=frozenset({"yard"}), events=frozenset({"door", "yard"})
    )


def test_watched_cameras_want_both_configured_or_not() -> None:
    assert wanted(config_of(DOOR), ["door", "lobby"]) == Wanted(
        frames=frozenset({"door", "lobby"}), events=frozenset({"door", "lobby"})
    )


def test_changes_are_the_difference_sorted() -> None:
    before = Wanted(frozenset({"a", "b"}), frozenset({"a"}))
    after = Wanted(frozenset({"b", "d", "c"}), frozenset())
    assert changes(before, after) == Changes(
        want=("c", "d"), unwant=("a",), want_events=(), unwant_events=("a",)
    )
    assert changes(after, after) == Changes()


def test_start_subscribes_the_config_in_every_mode() -> None:
    recorder = Recorder()
    Subscriptions(recorder, config_of(DOOR, YARD))
    assert sorted(recorder.calls) == [
        ("want", "yard"),
        ("want_events", "door"),
        ("want_events", "yard"),
    ]


def test_a_reload_subscribes_added_cameras_and_leaves_removed_ones() -> None:
    recorder = Recorder()
    subscriptions = Subscriptions(recorder, config_of(DOOR, YARD))
    recorder.calls.clear()
    subscriptions.apply_config(config_of({"id": "gate", "source": "synthetic:"}, YARD))
    assert sorted(recorder.calls) == [("unwant_events", "door"), ("want_events", "gate")]


def test_viewers_are_counted_and_a_channel_is_asked_for_once() -> None:
    recorder = Recorder()
    subscriptions = Subscriptions(recorder, config_of(DOOR))
    recorder.calls.clear()
    subscriptions.watch("door")
    subscriptions.watch("door")  # a second viewer: nothing new to ask
    assert recorder.calls == [("want", "door")]  # its events are wanted already
    subscriptions.unwatch("door")
    assert recorder.calls == [("want", "door")]
    subscriptions.unwatch("door")
    assert recorder.calls == [("want", "door"), ("unwant", "door")]
    assert not subscriptions.watched


def test_a_watched_camera_removed_by_reload_stays_subscribed_while_watched() -> None:
    recorder = Recorder()
    subscriptions = Subscriptions(recorder, config_of(DOOR))
    subscriptions.watch("door")
    recorder.calls.clear()
    subscriptions.apply_config(config_of())
    assert recorder.calls == []  # its viewer still wants it
    subscriptions.unwatch("door")
    assert sorted(recorder.calls) == [("unwant", "door"), ("unwant_events", "door")]


def test_without_redis_only_the_count_is_kept() -> None:
    subscriptions = Subscriptions(None, config_of(YARD))
    subscriptions.watch("yard")
    assert subscriptions.subscribed.frames == {"yard"}
    assert list(subscriptions.watched) == ["yard"]


def test_units_are_wanted_only_while_a_passthrough_viewer_watches() -> None:
    """``au:{id}`` is subscribed for passthrough viewers alone (NUMSUB then tells
    the child to publish units), and never makes the JPEG channel wanted."""
    assert wanted(config_of(DOOR), (), ["door"]) == Wanted(
        frames=frozenset(), events=frozenset({"door"}), units=frozenset({"door"})
    )
    recorder = Recorder()
    subscriptions = Subscriptions(recorder, config_of(DOOR))
    recorder.calls.clear()
    subscriptions.watch("door", Kind.UNITS)
    subscriptions.watch("door", Kind.UNITS)
    assert recorder.calls == [("want_units", "door")]
    subscriptions.watch("door")  # a JPEG viewer too: the frames channel, once
    assert recorder.calls == [("want_units", "door"), ("want", "door")]
    subscriptions.unwatch("door", Kind.UNITS)
    subscriptions.unwatch("door", Kind.UNITS)
    assert recorder.calls[-1] == ("unwant_units", "door")
    assert list(subscriptions.watched) == ["door"]
    assert list(subscriptions.watched_as(Kind.UNITS)) == []
