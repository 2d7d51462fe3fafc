"""The daemon's pure parts, in process: what signals ask for, the children's
environment, and that building a daemon leaves the process environment alone."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from streamd.config import load_config, parse_config
from streamd.daemon import Daemon, SignalRequests
from streamd.supervisor import child_environment

from .conftest import free_port, write_config


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


def test_rejected_frames_are_logged_sparsely() -> None:
    config = parse_config({"redis": {"enabled": False}, "cameras": []}, "<test>", {})
    gateway = Daemon(config, None).gateway
    with capture_logs() as logs:
        for _ in range(9):
            gateway.ingest("cam", b"not a jpeg at all")
    rejected = [e for e in logs if e["event"] == "frame rejected"]
    assert [e["rejected_total"] for e in rejected] == [1, 2, 4, 8]  # not one per frame
    assert all(e["reason"] == "not_jpeg" and e["camera_id"] == "cam" for e in rejected)
    assert gateway.rejected["not_jpeg"] == 9


async def test_an_invalid_reload_is_refused_naming_file_key_and_reason(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "streamd.toml",
        redis_url=None,
        port=free_port(),
        cameras=[{"id": "one", "source": "synthetic:"}],
    )
    daemon = Daemon(load_config(path, {}), path)
    path.write_text(path.read_text().replace('id = "one"', 'id = "one"\nfps = "fast"'))
    with capture_logs() as logs:
        ok, detail = await daemon.reload()
    assert not ok and "cameras[0].fps" in detail
    refused = [e for e in logs if e["event"].startswith("reload refused")]
    assert len(refused) == 1 and refused[0]["log_level"] == "error"
    assert refused[0]["file"] == str(path) and refused[0]["key"] == "cameras[0].fps"
    assert "number" in refused[0]["reason"]
    assert [c.id for c in daemon.config.cameras] == ["one"]  # the running config stays
