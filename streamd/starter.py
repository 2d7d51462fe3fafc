"""What ``streamd init`` and ``streamd install --systemd`` write for the operator:
the starter config, and the atomic write both use (a reader never sees half a file).

Below ``cli`` and ``install`` so that neither imports the other for it.
"""

from __future__ import annotations

import os
from pathlib import Path

STARTER_CONFIG = """\
# streamd configuration. Validate with: streamd check -c {path}
# One file per extra camera can live in {dropins}/ (see: streamd camera add).

[redis]
url = "redis://127.0.0.1:6379/0"   # frames still reach viewers when Redis is down

[server]
listen = "127.0.0.1:8765"          # loopback only unless you change it

[[cameras]]
id = "demo"
source = "synthetic:"              # rtsp://…, http(s)://… MJPEG, a file path, device:0
fps = 10
"""


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
