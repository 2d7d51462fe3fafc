"""Helpers shared by the tests and the benchmarks (no pytest here): free ports,
waiting on a condition without fixed sleeps, and a throwaway redis-server."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from websockets.frames import Frame, Opcode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A throwaway redis-server: never the machine's own on 6379."""

    def __init__(self, port: int, workdir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port
        self.workdir = workdir
        self.extra_args = extra_args  # more redis-server options, e.g. ("--logfile", PATH)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (run scripts/test, it installs it)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, 10, f"redis-server on {self.port}")

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


# --- process figures, config tweaks and raw viewers (faults and soak) ---------------


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid`` (entries of /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _argv(pid: int) -> list[bytes] | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None  # exited meanwhile


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def streamd_processes(daemon_pid: int) -> dict[str, int]:
    """``{"daemon": pid, "forkserver": pid, "child:CAM": pid, ...}``: the
    supervisor, its fork server and the camera children (forked by the fork
    server, or exec'd by the supervisor), named by their ``--camera`` argument."""
    found = {"daemon": daemon_pid}
    for pid in _children(daemon_pid):
        argv = _argv(pid)
        if argv is not None and b"streamd.forkserver" in argv:
            found["forkserver"] = pid
    for parent in (daemon_pid, found.get("forkserver")):
        for pid in _children(parent) if parent else []:
            argv = _argv(pid)
            if argv is not None and b"--camera" in argv[:-1]:
                found["child:" + argv[argv.index(b"--camera") + 1].decode()] = pid
    return found


def camera_child_pids(daemon_pid: int) -> list[int]:
    return [pid for name, pid in streamd_processes(daemon_pid).items() if name.startswith("child:")]


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    """Slope of the least-squares line through (xs, ys)."""
    n = len(xs)
    assert n >= 2 and n == len(ys), "need two or more points"
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return sxy / sxx if sxx else 0.0


def add_server_options(config: Path, options: dict[str, Any]) -> Path:
    """Put ``key = value`` lines into the ``[server]`` table of a config written
    by ``conftest.write_config`` (TOML cannot open that table a second time)."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    text = config.read_text()
    assert "[server]\n" in text, f"no [server] table in {config}"
    config.write_text(text.replace("[server]\n", "[server]\n" + "\n".join(lines) + "\n", 1))
    return config


def raw_viewer(port: int, path: str, *, rcvbuf: int = 4096, first: bytes = b"") -> socket.socket:
    """A WebSocket viewer on a bare socket: the handshake, optionally one masked
    text message (``first``), and then nothing: it never reads unless told to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Set before connecting, so the window it offers is small from the start and a
    # backlog builds up in the gateway, not in this socket.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: leave any frame after the head unread
        assert chunk, f"connection closed during the handshake on {path}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    if first:
        sock.sendall(Frame(Opcode.TEXT, first).serialize(mask=True))
    return sock


def abort_socket(sock: socket.socket) -> None:
    """Close without a close frame, with a TCP reset (SO_LINGER 0): a viewer whose
    browser tab crashed or whose network vanished."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def received_for(sock: socket.socket, seconds: float, poll: float = 0.5) -> Iterator[bytes]:
    """What arrives on ``sock`` within ``seconds``, chunk by chunk, until the
    peer closes; a quiet ``poll`` interval is waited through, not an end."""
    sock.settimeout(poll)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not chunk:
            return
        yield chunk
