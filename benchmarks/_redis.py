"""A throwaway redis-server for benchmarks (never the machine's own on 6379)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import numpy as np
import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "redis-server not found: run scripts/test once, or apt-get install redis-server"
        )
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield port
        finally:
            process.kill()
            process.wait()


def fake_jpeg(size: int) -> bytes:
    """SOI + incompressible bytes + EOI: frame-sized, passes streamd's JPEG check."""
    body = np.random.default_rng(1).integers(0, 255, size - 4, dtype=np.uint8).tobytes()
    return b"\xff\xd8" + body + b"\xff\xd9"
