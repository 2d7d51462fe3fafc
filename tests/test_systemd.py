"""systemd integration: sd_notify protocol against a real datagram socket, and the
unit file checked by systemd-analyze."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from streamd.systemd import watchdog_interval

from .conftest import ROOT, Daemon, RedisServer, free_port, wait_for, write_config


def test_watchdog_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}, 10) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "10"}, 10) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "11"}, 10) is None
    assert watchdog_interval({}, 10) is None


def test_sd_notify_sequence(redis_server: RedisServer, tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(0.2)
    port = free_port()
    config = write_config(
        tmp_path / "streamd.toml",
        redis_url=redis_server.url,
        port=port,
        cameras=[{"id": "n", "source": "synthetic:?width=64&height=48", "fps": 5}],
    )
    daemon = Daemon(
        config, port, env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
    )
    messages: list[str] = []

    def drain() -> None:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                return

    def seen(prefix: str) -> bool:
        drain()
        return any(m.startswith(prefix) for m in messages)

    try:
        wait_for(lambda: seen("READY=1"), 20, "READY=1")
        wait_for(lambda: seen("WATCHDOG=1"), 5, "WATCHDOG=1")
        child = wait_for(daemon.child_pids, 10, "a camera child")[0]
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_")) for v in environ)
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: seen("RELOADING=1"), 10, "RELOADING=1")
        time.sleep(0.5)
        daemon.process.send_signal(signal.SIGTERM)
        wait_for(lambda: seen("STOPPING=1"), 10, "STOPPING=1")
        assert daemon.process.wait(15) == 0
    finally:
        daemon.stop()
        sock.close()

    kinds = [m.split("=", 1)[0] for m in messages]
    first_ready = kinds.index("READY")
    reloading = kinds.index("RELOADING")
    assert first_ready < reloading < kinds.index("STOPPING")
    assert "READY" in kinds[reloading + 1 :]  # READY=1 again after the reload
    assert "STATUS" in kinds and "WATCHDOG" in kinds
    reload_message = messages[reloading].split("\n")
    assert reload_message[0] == "RELOADING=1" and reload_message[1].startswith("MONOTONIC_USEC=")
    usec = int(reload_message[1].split("=", 1)[1])
    assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 60
    status = next(m for m in messages if m.startswith("STATUS="))
    assert "cameras live" in status and "viewers" in status
    # Watchdog pings keep coming at about half of WATCHDOG_USEC.
    assert kinds.count("WATCHDOG") >= 2


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing (scripts/test installs the systemd package)"
    streamd_bin = Path(sys.executable).with_name("streamd")
    assert streamd_bin.exists()
    unit = (ROOT / "systemd" / "streamd.service").read_text()
    assert "Type=notify" in unit and "ExecReload=" in unit
    unit = unit.replace("/opt/streamd/venv/bin/streamd", str(streamd_bin))
    path = tmp_path / "streamd.service"
    path.write_text(unit)
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines() if "streamd.service" in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_unit_file_security_exposure_is_ok(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze
    unit = (ROOT / "systemd" / "streamd.service").read_text()
    path = tmp_path / "streamd.service"
    path.write_text(
        unit.replace(
            "/opt/streamd/venv/bin/streamd", str(Path(sys.executable).with_name("streamd"))
        )
    )
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(x for x in result.stdout.splitlines() if "Overall exposure level" in x)
    exposure = float(line.split(":", 1)[1].split()[0])
    assert exposure <= 2.0, line
