"""``streamd init``, ``camera add/remove/list`` and ``status``, run as real commands."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from streamd.config import load_config

from .conftest import ROOT, Daemon, RedisServer, wait_for


def streamd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamd", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_init_writes_a_valid_starter_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "streamd.toml"
    result = streamd("init", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert [c.id for c in load_config(path, {}).cameras] == ["demo"]
    assert (tmp_path / "etc" / "streamd.d").is_dir()
    again = streamd("init", "-c", str(path))
    assert again.returncode != 0 and "exists" in again.stderr


def test_camera_add_list_remove_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "streamd.toml"
    assert streamd("init", "-c", str(path)).returncode == 0
    secret = tmp_path / "cam-password"
    secret.write_text("pa ss@word\n")
    added = streamd(
        "camera",
        "add",
        "door",
        "rtsp://10.0.0.9/stream",
        "--fps",
        "5",
        "--username",
        "admin",
        "--password-file",
        str(secret),
        "-c",
        str(path),
    )
    assert added.returncode == 0, added.stderr
    dropin = tmp_path / "streamd.d" / "door.toml"
    assert dropin.exists() and "pa ss@word" not in dropin.read_text()  # only the file's path
    config = load_config(path, {})
    door = config.camera("door")
    assert door is not None and door.fps == 5.0
    assert door.source == "rtsp://admin:pa%20ss%40word@10.0.0.9/stream"

    listed = streamd("camera", "list", "-c", str(path))
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("demo\t") and lines[1].startswith("door\t")
    assert "pa ss" not in listed.stdout and "admin:***@" in listed.stdout
    assert str(dropin) in lines[1]

    removed = streamd("camera", "remove", "door", "-c", str(path))
    assert removed.returncode == 0 and not dropin.exists()
    assert load_config(path, {}).camera("door") is None


def test_camera_add_refuses_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "streamd.toml"
    assert streamd("init", "-c", str(path)).returncode == 0
    cases = [
        (("camera", "add", "demo", "synthetic:"), "already exists"),
        (("camera", "add", "bad id", "synthetic:"), "not a valid camera id"),
        (("camera", "add", "x", "ftp://nope"), "unsupported scheme"),
        (("camera", "add", "x", "synthetic:", "--fps", "0"), "fps"),
        (("camera", "add", "x", "rtsp://h/s", "--password-file", "/nonexistent"), "cannot read"),
        (("camera", "remove", "demo"), "defined in"),
        (("camera", "remove", "ghost"), "no camera"),
    ]
    for args, message in cases:
        result = streamd(*args, "-c", str(path))
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
    assert list((tmp_path / "streamd.d").iterdir()) == []  # nothing half-written


def test_camera_add_with_reload_and_status(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": "first", "source": "synthetic:?width=64&height=48"}],
    )
    config = str(daemon.config)
    added = streamd(
        "camera", "add", "second", "synthetic:?width=64&height=48", "--reload", "-c", config
    )
    assert added.returncode == 0, added.stderr
    assert "daemon reloaded: added 1" in added.stdout

    def both_live() -> bool:
        result = streamd("status", "--json", "-c", config)
        cams = json.loads(result.stdout)
        return all(cams.get(c, {}).get("state") == "live" for c in ("first", "second"))

    wait_for(both_live, 20, "both cameras live")
    table = streamd("status", "-c", config)
    assert table.returncode == 0
    header, *rows, fork_server = table.stdout.splitlines()
    assert header.split()[:4] == ["camera", "state", "pid", "start"]
    assert [r.split()[:2] for r in rows] == [["first", "live"], ["second", "live"]]
    assert [r.split()[3] for r in rows] == ["fork", "fork"]  # forked from the warm fork server
    assert fork_server.startswith("fork server: up (pid ")
    assert "children forked 2, spawned 0" in fork_server


def test_status_without_daemon_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "streamd.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:1"\n')
    result = streamd("status", "-c", str(path))
    assert result.returncode != 0 and "cannot reach the daemon" in result.stderr
