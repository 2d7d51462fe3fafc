"""A throwaway ``streamd run`` for a benchmark step: a temporary config on a free
port against the benchmark's Redis, healthy before use, stopped after."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, write_config
from tests.support import free_port


@contextmanager
def temporary_daemon(
    redis_port: int,
    cameras: Sequence[dict[str, Any]] = (),
    camera_of: Callable[[Path], list[dict[str, Any]]] | None = None,
    healthy_within: float = 20,
    server: str = "",
) -> Iterator[tuple[Daemon, Path]]:
    """``cameras`` as config tables; ``camera_of(tmp)`` builds them when they
    need the temporary folder. Logs at warning: a benchmark measures, not logs."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = free_port()
        config = write_config(
            folder / "streamd.toml",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            port=port,
            cameras=list(cameras) if camera_of is None else camera_of(folder),
            head='log_level = "warning"',
            server=server,
        )
        daemon = Daemon(config, port)
        try:
            daemon.wait_healthy(healthy_within)
            yield daemon, folder
        finally:
            daemon.stop()
