"""Logs, stats lines and metrics from a real daemon: journald's native protocol
(a socket of our own, and the real systemd-journald), the periodic stats line
through a Redis outage, and /metrics agreeing with the stats line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamd.journald import encode_fields, field_name, journal_fields

from .conftest import Daemon, RedisServer, free_port, wait_for, write_config
from .viewers import Watcher

JSON = {"Content-Type": "application/json"}  # control needs it (CSRF guard)

SYNTH = {"source": "synthetic:?width=160&height=120", "fps": 10}


def decode_fields(datagram: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:
            (size,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8 : 8 + size].decode()
            rest = after[8 + size + 1 :]
    return fields


def test_journal_field_encoding() -> None:
    fields = journal_fields(
        {
            "event": "camera stats",
            "level": "warning",
            "camera_id": "door",
            "dropped": {"a": 1},
            "note": "two\nlines",
        }
    )
    assert fields["PRIORITY"] == "4" and fields["CAMERA_ID"] == "door"
    assert fields["EVENT"] == "camera stats" and fields["DROPPED"] == '{"a":1}'
    assert decode_fields(encode_fields(fields)) == fields
    assert field_name("_pid") == "PID" and field_name("9x") == "F_9X" and field_name("a-b") == "A_B"


def test_native_journald_fields_via_our_own_socket(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    port = free_port()
    secret_url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens: warnings
    config = write_config(
        tmp_path / "streamd.toml",
        redis_url=secret_url,
        port=port,
        cameras=[{"id": "door", **SYNTH}],
        head="stats_interval = 1.0",
    )
    daemon = Daemon(config, port, env={"STREAMD_JOURNAL_SOCKET": str(path)}, journal=True)
    records: list[dict[str, str]] = []

    def drain() -> None:
        while True:
            try:
                records.append(decode_fields(sock.recv(1 << 16)))
            except TimeoutError:
                return

    try:

        def have(event: str) -> bool:
            drain()
            return any(r.get("EVENT") == event for r in records)

        wait_for(lambda: have("camera stats"), 20, "a camera stats record")
        wait_for(lambda: have("redis unreachable; frames go to the local gateway"), 10, "warning")
    finally:
        daemon.stop()
        sock.close()
    assert all(r["SYSLOG_IDENTIFIER"] == "streamd" for r in records)
    started = next(r for r in records if r["EVENT"] == "video stream manager started")
    assert started["PRIORITY"] == "6"
    warning = next(r for r in records if r["EVENT"].startswith("redis unreachable"))
    assert warning["PRIORITY"] == "4" and warning["CAMERA_ID"] == "door" and warning["PID"]
    stats = next(r for r in records if r["EVENT"] == "camera stats")
    assert stats["CAMERA_ID"] == "door" and "FRAMES_CAPTURED" in stats
    everything = json.dumps(records)
    assert "hunter2" not in everything and ":***@" in everything
    assert daemon.log_text().strip() == ""  # nothing went to stdout


JOURNAL_RUNTIME = Path("/run/systemd/journal")  # journald's sockets
JOURNAL_FILES = Path("/run/log/journal")  # its volatile journal files


@contextlib.contextmanager
def standalone_journald() -> Iterator[Path]:
    """The real systemd-journald, standalone, when none is running here. What it
    creates outside our temporary directories goes again when it stops: its
    sockets left behind would tell the next program that a journal is running."""
    binary = Path("/lib/systemd/systemd-journald")
    assert binary.exists(), "systemd-journald missing (scripts/test installs systemd)"
    socket_path = JOURNAL_RUNTIME / "socket"
    if _connectable(socket_path):
        yield JOURNAL_RUNTIME / "stdout"  # a real journal: use it, touch nothing
        return
    created = [d for d in (JOURNAL_RUNTIME, JOURNAL_FILES) if not d.exists()]
    before = set(JOURNAL_RUNTIME.iterdir()) if JOURNAL_RUNTIME.exists() else set()
    JOURNAL_RUNTIME.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([str(binary)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: _connectable(socket_path) and (JOURNAL_RUNTIME / "stdout").exists(),
            15,
            "systemd-journald sockets",
        )
        yield JOURNAL_RUNTIME / "stdout"
    finally:
        process.terminate()
        process.wait(10)
        for directory in created:
            shutil.rmtree(directory, ignore_errors=True)
        if JOURNAL_RUNTIME.exists():  # it was there before: remove only what we made
            for entry in set(JOURNAL_RUNTIME.iterdir()) - before:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            for entry in JOURNAL_RUNTIME.iterdir():
                if entry.is_socket() and not _connectable(entry):
                    entry.unlink()  # journald rebinds the old names: now dead


@pytest.fixture
def journald() -> Iterator[Path]:
    with standalone_journald() as stdout_socket:
        yield stdout_socket


def test_standalone_journald_leaves_no_dead_sockets() -> None:
    existed = JOURNAL_RUNTIME.exists()
    with standalone_journald() as stdout_socket:
        assert _connectable(JOURNAL_RUNTIME / "socket") and stdout_socket.exists()
    assert JOURNAL_RUNTIME.exists() == existed
    if existed:
        dead = [e for e in JOURNAL_RUNTIME.iterdir() if e.is_socket() and not _connectable(e)]
        assert not dead, f"dead journald sockets left behind: {dead}"


def _connectable(path: Path) -> bool:
    if not path.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def test_real_journald_and_journalctl(journald: Path, tmp_path: Path) -> None:
    camera_id = f"jtest{os.getpid()}"
    port = free_port()
    config = write_config(
        tmp_path / "streamd.toml",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens: a warning
        port=port,
        cameras=[{"id": camera_id, **SYNTH}],
        head="stats_interval = 1.0",
    )
    # Connect stdout to journald's stream socket the way systemd does.
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.connect(str(journald))
    stream.sendall(b"streamd\n\n6\n0\n0\n0\n0\n")
    stat = os.fstat(stream.fileno())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "VIDEO_STREAM"))}
    env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
    process = subprocess.Popen(
        [sys.executable, "-m", "streamd", "run", "-c", str(config)],
        stdout=stream.fileno(),
        stderr=stream.fileno(),
        env=env,
    )
    stream.close()

    def query(*matches: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["journalctl", "--no-pager", "-o", "json", *matches],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

    ours = ("SYSLOG_IDENTIFIER=streamd", f"CAMERA_ID={camera_id}")
    try:
        found = wait_for(
            lambda: [
                r
                for r in query(*ours)
                if r.get("EVENT") == "camera stats" and int(r["FRAMES_CAPTURED"]) > 0
            ],
            30,
            "camera stats with captured frames in the journal",
            interval=0.5,
        )
        # journalctl -p warning must find the child's warning by its PRIORITY field,
        # and leave out the info-level stats lines the same camera wrote.
        warnings = wait_for(lambda: query(*ours, "-p", "warning"), 10, "warnings", interval=0.5)
    finally:
        process.terminate()
        process.wait(15)
    record = found[0]
    assert record["CAMERA_ID"] == camera_id and record["PRIORITY"] == "6" and "STATE" in record
    events = {r["EVENT"] for r in warnings}
    assert "redis unreachable; frames go to the local gateway" in events
    assert "camera stats" not in events
    assert all(r["PRIORITY"] == "4" for r in warnings)


def stats_lines(daemon: Daemon, camera_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in daemon.log_events()
        if e["event"] == "camera stats" and e.get("camera_id") == camera_id
    ]


async def test_stats_through_a_redis_outage(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[{"id": "s", **SYNTH}], head="stats_interval = 1.0"
    )

    async def line_where(
        what: str, predicate: Callable[[dict[str, Any]], bool], after: int = 0
    ) -> dict[str, Any]:
        found = await asyncio.to_thread(
            wait_for,
            lambda: [x for x in stats_lines(daemon, "s")[after:] if predicate(x)],
            20,
            what,
        )
        return dict(found[0])

    # A viewer watches throughout (through the gateway, which resubscribes by itself).
    async with Watcher(f"ws://{daemon.base}/ws/s"):
        healthy = await line_where("published frames", lambda x: x["frames_published"] >= 5)
        assert healthy["success_rate_pct"] == 100.0
        p50, p95, p99 = (healthy[f"publish_p{q}_ms"] for q in (50, 95, 99))
        assert 0 < p50 <= p95 <= p99
        assert healthy["capture_to_publish_p50_ms"] > 0
        assert healthy["fps_in"] > 5 and healthy["state"] == "live"

        redis_server.kill()
        outage = await line_where(
            "the outage",
            lambda x: x["success_rate_pct"] is not None and x["success_rate_pct"] < 50,
        )
        assert (
            outage["dropped"].get("redis_down", 0) + outage["dropped"].get("publish_error", 0) > 0
        )
        assert outage["frames_fallback"] > 0

        redis_server.start()
        seen = len(stats_lines(daemon, "s"))
        await line_where(
            "success rate back to 100",
            lambda x: x["success_rate_pct"] == 100.0 and x["frames_published"] > 0,
            after=seen,
        )


def test_metrics_parse_and_agree_with_stats_line(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[{"id": "m", **SYNTH}], head="stats_interval = 1.0"
    )
    watcher = redis_server.client().pubsub()  # a plain Redis consumer watches the camera
    watcher.subscribe("video:m")
    wait_for(
        lambda: [x for x in stats_lines(daemon, "m") if x["frames_published"] > 0],
        20,
        "frames published",
    )
    # Freeze the counters (stop the camera), then compare a stats line taken after.
    request = urllib.request.Request(
        f"http://{daemon.base}/api/v1/cameras/m/stop", method="POST", headers=JSON
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    frozen_at = len(stats_lines(daemon, "m"))
    line = wait_for(lambda: stats_lines(daemon, "m")[frozen_at + 1 :], 10, "a stats line")[0]
    status, body = daemon.http("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    published = next(
        s.value
        for s in families["streamd_frames_published"].samples
        if s.labels.get("camera") == "m" and s.name.endswith("_total")
    )
    captured = next(
        s.value
        for s in families["streamd_frames_captured"].samples
        if s.labels.get("camera") == "m" and s.name.endswith("_total")
    )
    assert published == line["frames_published_total"] > 0
    assert captured == line["frames_captured_total"]
    latency = families["streamd_publish_latency_seconds"]
    count = next(s.value for s in latency.samples if s.name.endswith("_count"))
    assert count == published
    buckets = [s.value for s in latency.samples if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == count
    assert "streamd_end_to_end_latency_seconds" in families
