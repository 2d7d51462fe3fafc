"""Supervision with real processes and real signals: restarts, stalls, orphans,
reload, runtime control."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from streamd.registry.store import CAMERAS_KEY

from .conftest import Daemon, RedisServer, kill_quietly, pid_alive, wait_for, write_config
from .viewers import Watcher

SYNTH = {"source": "synthetic:?width=160&height=120", "fps": 15}
FAST = """
[supervisor]
restart_delay_initial = 0.2
restart_delay_max = 2.0
stall_timeout = 2.0
stop_grace = 1.0
stable_after = 0.5
"""


def cameras(daemon: Daemon) -> dict[str, dict[str, Any]]:
    status, body = daemon.http("/api/cameras")
    assert status == 200
    result: dict[str, dict[str, Any]] = json.loads(body)["cameras"]
    return result


def pid_of(daemon: Daemon, camera_id: str) -> int | None:
    pid = cameras(daemon).get(camera_id, {}).get("pid")
    return int(pid) if pid else None


def wait_pid(daemon: Daemon, camera_id: str, timeout: float = 15) -> int:
    pid: int = wait_for(lambda: pid_of(daemon, camera_id), timeout, f"{camera_id} child pid")
    return pid


def wait_live(daemon: Daemon, camera_id: str, timeout: float = 20) -> int:
    """The child's pid once it streams (fully started, heartbeats flowing)."""
    info = wait_for(
        lambda: (c := cameras(daemon).get(camera_id)) and c.get("state") == "live" and c,
        timeout,
        f"{camera_id} live",
    )
    return int(info["pid"])


def post(daemon: Daemon, path: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://{daemon.base}{path}", method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.load(response)
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


def test_child_cmdline_names_its_camera(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "door", **SYNTH}])
    pid = wait_pid(daemon, "door")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"streamd.worker" in argv and argv[argv.index(b"--camera") + 1] == b"door"
    assert not any(b"synthetic" in arg for arg in argv)  # the spec is not on the command line


async def test_killed_child_is_restarted_others_see_no_gap(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[{"id": "a", **SYNTH}, {"id": "b", **SYNTH}], extra=FAST
    )
    pid_a = wait_pid(daemon, "a")
    async with Watcher(f"ws://{daemon.base}/ws/b") as viewer_b:
        await viewer_b.wait_frames(5, timeout=10)
        start = time.monotonic()
        os.kill(pid_a, signal.SIGKILL)
        new_pid = await asyncio.to_thread(
            wait_for, lambda: (p := pid_of(daemon, "a")) and p != pid_a and p, 10, "a restarted"
        )
        assert new_pid != pid_a
        async with Watcher(f"ws://{daemon.base}/ws/a") as viewer_a:
            await viewer_a.wait_frames(3, timeout=10)
        assert viewer_b.max_gap(start, time.monotonic()) < 1.0  # a restart would be ≥ 1.5 s
    assert cameras(daemon)["a"]["restarts"] >= 1


async def test_stopped_child_is_detected_and_replaced(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "s", **SYNTH}], extra=FAST)
    pid = wait_live(daemon, "s")
    stopped_at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        # stall_timeout 2 s + grace 1 s, plus restart delay and interpreter start-up.
        new_pid = await asyncio.to_thread(
            wait_for, lambda: (p := pid_of(daemon, "s")) and p != pid and p, 8, "replacement"
        )
        replaced_after = time.monotonic() - stopped_at
    finally:
        kill_quietly(pid)
    assert new_pid != pid and replaced_after < 2.0 + 1.0 + 3.0
    assert not pid_alive(pid)
    async with Watcher(f"ws://{daemon.base}/ws/s") as viewer:
        await viewer.wait_frames(3, timeout=10)
    assert any(e["event"].startswith("camera child hung") for e in daemon.log_events())
    assert cameras(daemon)["s"]["stalls"] == 1


def test_no_orphans_when_supervisor_is_killed(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[{"id": "x", **SYNTH}, {"id": "y", **SYNTH}]
    )
    pids = [wait_pid(daemon, "x"), wait_pid(daemon, "y")]
    assert survivors_of_a_killed_supervisor(daemon, pids, within=2.0) == []


def survivors_of_a_killed_supervisor(daemon: Daemon, pids: list[int], within: float) -> list[int]:
    """SIGKILL the daemon; the children (and its fork server) still alive
    ``within`` seconds later (each then killed, so a failing test leaves no
    orphan behind)."""
    fork_server = json.loads(daemon.http("/api/cameras")[1]).get("fork_server") or {}
    if fork_server.get("pid"):
        pids = [*pids, int(fork_server["pid"])]
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(5)
    deadline = time.monotonic() + within
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [p for p in pids if pid_alive(p)]
    for pid in survivors:
        kill_quietly(pid)
    return survivors


def test_no_orphan_even_when_a_task_ignores_cancellation(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": "x", **SYNTH, "detector": "tests.plugins.detectors:Stubborn"}],
    )
    pid = wait_pid(daemon, "x")
    time.sleep(1.0)
    assert survivors_of_a_killed_supervisor(daemon, [pid], within=20.0) == []


def test_no_orphans_when_supervisor_is_killed_while_redis_hangs(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    """A stalled Redis (frames pile up unsent) must not hold a child's shutdown."""
    big = {"source": "synthetic:?width=1280&height=720", "fps": 15, "detector": "none"}
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "x", **big}])
    pid = wait_pid(daemon, "x")
    watcher = redis_server.client().pubsub()  # watched: frames are published
    watcher.subscribe("video:x")
    assert redis_server.process is not None
    time.sleep(1.5)
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3.0)  # socket buffers fill; replies stop
        survivors = survivors_of_a_killed_supervisor(daemon, [pid], within=15.0)
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert survivors == []


def test_unusable_camera_config_is_not_restarted(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": "bad", "source": "synthetic:?width=5", "fps": 5}, {"id": "ok", **SYNTH}],
        extra=FAST,
    )
    wait_for(lambda: cameras(daemon)["bad"]["child"] == "config_error", 15, "config_error")
    time.sleep(1.0)
    info = cameras(daemon)["bad"]
    assert info["restarts"] == 0 and info["pid"] is None and info["last_exit_code"] == 78
    assert any(e["event"] == "unusable camera source" for e in daemon.log_events())


async def test_reload_applies_only_the_difference(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": "keep", **SYNTH}, {"id": "change", **SYNTH}, {"id": "gone", **SYNTH}],
    )
    before = {cid: wait_pid(daemon, cid) for cid in ("keep", "change", "gone")}
    registry = redis_server.client()
    wait_for(lambda: registry.hexists(CAMERAS_KEY, "gone"), 10, "gone in the camera registry")
    async with Watcher(f"ws://{daemon.base}/ws/keep") as viewer:
        await viewer.wait_frames(5, timeout=10)
        start = time.monotonic()
        write_config(
            daemon.config,
            redis_url=redis_server.url,
            port=daemon.port,
            cameras=[{"id": "keep", **SYNTH}, {"id": "change", **SYNTH, "fps": 5}],
        )
        dropins = daemon.config.parent / f"{daemon.config.stem}.d"
        dropins.mkdir()
        (dropins / "new.toml").write_text('[[cameras]]\nid = "new"\nsource = "synthetic:"\n')
        daemon.process.send_signal(signal.SIGHUP)
        await asyncio.to_thread(
            wait_for,
            lambda: any(e["event"] == "config reloaded" for e in daemon.log_events()),
            10,
            "config reloaded",
        )
        # Unlisted by the time the reload is done, not when its lease runs out.
        assert "gone" not in cameras(daemon)
        after = {
            cid: await asyncio.to_thread(wait_pid, daemon, cid) for cid in ("keep", "change", "new")
        }
        await asyncio.sleep(0.5)
        assert viewer.max_gap(start, time.monotonic()) < 1.0  # unchanged camera: no gap
    assert after["keep"] == before["keep"]
    assert after["change"] != before["change"]
    assert "gone" not in cameras(daemon)
    assert not pid_alive(before["gone"])
    reloaded = next(e for e in daemon.log_events() if e["event"] == "config reloaded")
    assert reloaded["added"] == ["new"] and reloaded["removed"] == ["gone"]
    assert reloaded["changed"] == ["change"]


def test_reload_with_broken_file_keeps_everything(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "one", **SYNTH}])
    pid = wait_pid(daemon, "one")
    daemon.config.write_text(daemon.config.read_text().replace("fps = 15", 'fps = "fast"'))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: any(e["event"].startswith("reload refused") for e in daemon.log_events()),
        10,
        "reload refused",
    )
    # What the refusal says (file, key, reason) is checked in process: test_daemon_parts.py.
    assert pid_of(daemon, "one") == pid and daemon.process.poll() is None


def test_control_api_stop_and_start_from_loopback(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "c", **SYNTH}])
    pid = wait_pid(daemon, "c")
    status, body = post(daemon, "/api/v1/cameras/c/stop")
    assert status == 200
    assert body == {"ok": True, "camera_id": "c", "action": "stop", "running": False, "pid": None}
    assert not pid_alive(pid) and cameras(daemon)["c"]["state"] == "stopped"
    assert post(daemon, "/api/v1/cameras/c/start")[0] == 200
    assert wait_pid(daemon, "c") != pid
    assert post(daemon, "/api/v1/cameras/nope/start")[0] == 404
    assert post(daemon, "/api/v1/cameras/a*b/start")[0] == 400
    assert daemon.http("/api/v1/cameras/c/stop")[0] == 405  # GET is not allowed


def test_control_api_with_admin_token(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    admin, viewer = "correct horse battery staple", "just-watching"
    admin_hash, viewer_hash = (hashlib.sha256(t.encode()).hexdigest() for t in (admin, viewer))
    tokens = (
        f'\n[[server.tokens]]\nname = "ops"\nsha256 = "{admin_hash}"\nadmin = true\n'
        f'\n[[server.tokens]]\nname = "wall"\nsha256 = "{viewer_hash}"\n'
    )
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "c", **SYNTH}], extra=tokens)
    assert post(daemon, "/api/v1/cameras/c/stop")[0] == 401  # loopback is not enough now
    assert post(daemon, "/api/v1/cameras/c/stop", token="wrong")[0] == 401
    assert post(daemon, "/api/v1/cameras/c/stop", token=viewer)[0] == 403  # no admin scope
    assert post(daemon, "/api/v1/cameras/c/stop", token=admin)[0] == 200
    assert admin not in daemon.log_text() and viewer not in daemon.log_text()


@contextlib.contextmanager
def hung_child(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon], supervisor: str
) -> Iterator[tuple[Daemon, int]]:
    """A daemon whose one child is SIGSTOPped: it will not stop on SIGTERM."""
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": "h", **SYNTH}],
        extra=f"\n[supervisor]\n{supervisor}\n",
    )
    pid = wait_live(daemon, "h")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield daemon, pid
    finally:
        kill_quietly(pid)


def test_second_sigint_forces_exit(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    config = "stop_grace = 20.0\nshutdown_timeout = 30.0"
    with hung_child(redis_server, start_daemon, config) as (daemon, _):
        daemon.process.send_signal(signal.SIGINT)  # shutdown now hangs on the child
        wait_for(
            lambda: any(e["event"] == "shutting down" for e in daemon.log_events()),
            5,
            "shutting down",
        )
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGINT)
        assert daemon.process.wait(5) == 130
        assert time.monotonic() - started < 2.0


def test_shutdown_deadline_is_kept(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    config = "stop_grace = 30.0\nshutdown_timeout = 2.0"
    with hung_child(redis_server, start_daemon, config) as (daemon, pid):
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        daemon.process.wait(10)
        assert time.monotonic() - started < 4.0
        assert any(e["event"].startswith("shutdown deadline passed") for e in daemon.log_events())
        wait_for(lambda: not pid_alive(pid), 2, "the hung child killed")
