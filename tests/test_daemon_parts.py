"""The daemon's pure parts, in process: what signals ask for, the children's
environment, and that building a daemon leaves the process environment alone."""

from __future__ import annotations

import os
import signal

import pytest

from streamd.config import parse_config
from streamd.daemon import Daemon, SignalRequests
from streamd.supervisor import child_environment


def test_signal_handlers_only_record_what_was_asked() -> None:
    asked = SignalRequests()
    asked.on_reload()
    assert asked.reload and asked.changed.is_set() and asked.stop is None
    asked.changed.clear()
    asked.on_stop(signal.SIGTERM)
    assert asked.stop is signal.SIGTERM and asked.changed.is_set()
    assert asked.force is None and not asked.forced.is_set()
    asked.on_stop(signal.SIGINT)  # the second one asks to exit at once
    assert asked.force is signal.SIGINT and asked.forced.is_set()
    assert asked.stop is signal.SIGTERM


def test_children_get_an_explicit_environment() -> None:
    parent = {"PATH": "/bin", "NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "9"}
    assert child_environment(parent, "synthetic:") == {"PATH": "/bin"}
    rtsp = child_environment(parent, "rtsp://cam/live")
    assert rtsp == {"PATH": "/bin", "OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;tcp"}
    mine = {**parent, "OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;udp"}
    assert child_environment(mine, "rtsps://cam")["OPENCV_FFMPEG_CAPTURE_OPTIONS"].endswith("udp")
    assert "NOTIFY_SOCKET" in parent  # the parent's mapping is not edited


def test_building_the_daemon_leaves_os_environ_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    config = parse_config(
        {"redis": {"enabled": False}, "cameras": [{"id": "a", "source": "rtsp://x/y"}]},
        "<test>",
        {},
    )
    daemon = Daemon(config, None)
    assert os.environ["NOTIFY_SOCKET"] == "/nonexistent/notify"
    assert os.environ["WATCHDOG_USEC"] == "1000000"
    assert daemon.watchdog_every == 0.5  # read, not removed
