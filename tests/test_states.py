"""One vocabulary for state: enums whose values are the strings streamd has
always written, and the camera status as a typed value with one JSON form."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from streamd.backoff import Backoff
from streamd.camera_status import CameraStatus, Heartbeat, RecentFigures
from streamd.child_status import ChildStatus
from streamd.lifecycle import Lifecycle
from streamd.states import ChildState, ExitCode, RedisState, SourceState, picture_stalled
from streamd.stats import CameraCounters

# The keys of GET /api/cameras' per-camera objects before the gateway adds its own,
# in the order the API has always sent them.
API_KEYS = [
    "state",
    "child",
    "pid",
    "redis",
    "restarts",
    "stalls",
    "memory_restarts",
    "last_exit_code",
    "last_error",
    "detector",
    "watched",
    "active_labels",
    "started_by",
    "start_timeouts",
    "fps_out",
    "success_rate_pct",
    "publish_p50_ms",
    "e2e_p50_ms",
    "detect_fps",
    "detect_p50_ms",
]


def test_enum_values_are_the_strings_on_the_wire() -> None:
    assert [s.value for s in ChildState] == [
        "stopped",
        "starting",
        "running",
        "backoff",
        "config_error",
        "conflict",
    ]
    assert json.dumps([SourceState.LIVE, RedisState.DOWN]) == '["live", "down"]'
    assert f"{SourceState.STALLED}" == "stalled" and str(ChildState.BACKOFF) == "backoff"
    assert (ExitCode.CANNOT_LISTEN, ExitCode.CONFIG, ExitCode.FORCED) == (71, 78, 130)
    assert int(ExitCode.NO_PERMISSION) == 77  # EX_NOPERM
    assert {s for s in RedisState if s.uses_fallback} == {
        RedisState.DOWN,
        RedisState.DISABLED,
        RedisState.CONNECTING,
    }


def test_camera_status_json_has_the_api_keys_and_plain_values() -> None:
    status = CameraStatus(
        state=SourceState.LIVE,
        child=ChildState.RUNNING,
        pid=42,
        redis=RedisState.UP,
        restarts=1,
        stalls=0,
        memory_restarts=0,
        last_exit_code=None,
        last_error=None,
        detector="motion",
        watched=True,
        active_labels=("person",),
    )
    fresh = status.to_json()
    assert list(fresh) == API_KEYS
    assert fresh["fps_out"] is None and fresh["active_labels"] == ["person"]
    assert type(fresh["state"]) is str and type(fresh["redis"]) is str
    line = {"fps_out": 9.5, "e2e_p50_ms": 12.0, "frames_captured": 100}
    with_figures = replace(status, recent=RecentFigures.from_stats_line(line))
    out = with_figures.to_json()
    assert list(out) == API_KEYS
    assert out["fps_out"] == 9.5 and out["e2e_p50_ms"] == 12.0 and out["detect_fps"] is None


def test_heartbeat_round_trips_and_refuses_unknown_states() -> None:
    figures = CameraCounters()
    figures.counters["captured"] = 7
    beat = Heartbeat(
        SourceState.RECONNECTING,
        RedisState.CONNECTING,
        seq=3,
        uptime_s=1.5,
        detector="none",
        watched=False,
        active_labels=("car",),
        figures=figures,
    )
    wire = json.loads(json.dumps(beat.to_wire()))
    assert list(wire) == [
        "state",
        "redis",
        "seq",
        "uptime_s",
        "detector",
        "watched",
        "active_labels",
        "figures",
    ]
    back = Heartbeat.from_wire(wire)
    assert back.state is SourceState.RECONNECTING and back.redis is RedisState.CONNECTING
    assert back.active_labels == ("car",) and back.figures.counters["captured"] == 7
    with pytest.raises(ValueError, match="state"):
        Heartbeat.from_wire({**wire, "state": "exploded"})
    with pytest.raises(ValueError, match="figures"):
        Heartbeat.from_wire({**wire, "figures": {"counters": {"captured": -1}}})
    with pytest.raises(ValueError, match="active_labels"):
        Heartbeat.from_wire({**wire, "active_labels": "car"})


def test_child_status_says_which_state_a_camera_is_in() -> None:
    status = ChildStatus(Lifecycle(Backoff(1.0, 8.0)))
    assert status.camera_status().state is ChildState.STOPPED  # no child
    assert status.redis_state is RedisState.UNKNOWN
    status.pid = 7
    status.lifecycle.on_spawned(0.0)
    assert status.camera_status().state is ChildState.STARTING  # no heartbeat yet
    status.heartbeat = Heartbeat(SourceState.LIVE, RedisState.DOWN, active_labels=("dog",))
    camera = status.camera_status()
    assert camera.state is SourceState.LIVE and camera.child is ChildState.STARTING
    assert camera.redis is RedisState.DOWN and camera.active_labels == ("dog",)
    status.on_new_child()
    assert status.camera_status().state is ChildState.STARTING
    assert status.camera_status().to_json()["active_labels"] == []


def test_one_stall_rule_for_every_judge() -> None:
    # 3 s for a camera of 5/3 fps or faster; five frame intervals for a slower one.
    assert not picture_stalled(2.9) and picture_stalled(3.1)
    assert not picture_stalled(2.9, fps=25.0) and picture_stalled(3.1, fps=25.0)
    assert not picture_stalled(9.0, fps=0.5) and picture_stalled(10.5, fps=0.5)
