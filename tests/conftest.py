"""Real parts for tests: a redis-server per test on a free port (killable and
restartable), the daemon as a subprocess, and helpers to wait on conditions
without fixed sleeps."""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import RedisServer, camera_child_pids, free_port, wait_for

__all__ = ["RedisServer", "free_port", "wait_for"]

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent / "tools"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Byte-compile streamd once, so the many processes the tests start (daemons,
    fork servers, camera children, ``streamd check``) load it as an installed
    package does, instead of each compiling its source again: an editable
    install has no .pyc, and with PYTHONDONTWRITEBYTECODE (set on CI) none is
    ever written. py_compile writes them regardless; stale ones are rebuilt."""
    compileall.compile_dir(ROOT / "streamd", quiet=1)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


def streamd_check(
    path: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``streamd check -c PATH`` as an operator runs it, with a clean environment."""
    return subprocess.run(
        [sys.executable, "-m", "streamd", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for a module whose tests share a daemon."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


def write_config(
    path: Path,
    *,
    redis_url: str | None,
    port: int,
    cameras: list[dict[str, Any]],
    extra: str = "",
    head: str = "",
    server: str = "",
) -> Path:
    """``head`` is top-level TOML (before any table); ``server`` goes in
    ``[server]``; ``extra`` goes at the end."""
    lines = [head] if head else []
    if redis_url is not None:
        lines += ["[redis]", f'url = "{redis_url}"', ""]
    lines += ["[server]", f'listen = "127.0.0.1:{port}"', server, ""]
    for cam in cameras:
        lines.append("[[cameras]]")
        for key, value in cam.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines) + extra)
    return path


class Daemon:
    """``streamd run -c FILE`` as a real subprocess, its JSON log lines captured."""

    def __init__(
        self, config: Path, port: int, env: dict[str, str] | None = None, *, journal: bool = False
    ) -> None:
        self.config = config
        self.port = port
        self.log_path = Path(tempfile.mkstemp(prefix="streamd-", suffix=".log")[1])
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "VIDEO_STREAM"))
        }
        full_env.update(env or {})
        self._log_file = self.log_path.open("wb")
        if journal:  # as systemd does: JOURNAL_STREAM names stdout's device:inode
            stat = os.fstat(self._log_file.fileno())
            full_env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamd", "run", "-c", str(config)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
        )

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def http(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://{self.base}{path}", timeout=5) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def wait_healthy(self, timeout: float = 20) -> None:
        def healthy() -> bool:
            assert self.process.poll() is None, f"daemon exited:\n{self.log_text()}"
            try:
                return self.http("/healthz")[0] == 200
            except OSError:
                return False

        wait_for(healthy, timeout, "daemon /healthz")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
        return events

    def child_pids(self) -> list[int]:
        """The camera children (forked by the fork server, or exec'd)."""
        return camera_child_pids(self.process.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return int(self.process.returncode)


def launch_daemon(
    path: Path,
    *,
    redis_url: str | None,
    cameras: list[dict[str, Any]],
    server: str = "",
    extra: str = "",
    head: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 20,
) -> Daemon:
    """Write a config, start a daemon on a free port and wait for /healthz; one
    that does not come up is stopped, never left running."""
    port = free_port()
    write_config(
        path, redis_url=redis_url, port=port, cameras=cameras, server=server, extra=extra, head=head
    )
    daemon = Daemon(path, port, env)
    try:
        daemon.wait_healthy(timeout)
    except BaseException:
        daemon.stop()
        raise
    return daemon


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    daemons: list[Daemon] = []

    def start(
        *,
        redis_url: str | None,
        cameras: list[dict[str, Any]],
        env: dict[str, str] | None = None,
        extra: str = "",
        head: str = "",
    ) -> Daemon:
        daemon = launch_daemon(
            tmp_path / f"streamd-{len(daemons)}.toml",
            redis_url=redis_url,
            cameras=cameras,
            env=env,
            extra=extra,
            head=head,
        )
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()
        if daemon.process.returncode not in (0, None):
            print(daemon.log_text())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
