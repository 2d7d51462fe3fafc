"""A throwaway redis-server for benchmarks (never the machine's own on 6379)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tests.support import RedisServer, free_port


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(free_port(), Path(workdir))
        server.start()
        try:
            yield server.port
        finally:
            server.kill()


def fake_jpeg(size: int) -> bytes:
    """SOI + incompressible bytes + EOI: frame-sized, passes streamd's JPEG check."""
    body = np.random.default_rng(1).integers(0, 255, size - 4, dtype=np.uint8).tobytes()
    return b"\xff\xd8" + body + b"\xff\xd9"
