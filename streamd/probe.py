"""``POST /api/v1/cameras/{id}/test`` runs this in a child process with a
deadline (``python -m streamd.probe``): open a source, read one picture, say its
codec, size and frame rate, or what went wrong. The source comes on stdin, not
in argv, where ``ps`` would show a URL's password; the answer is one JSON line
on stdout. Error words are the sources' own ``SourceError`` texts, which redact
URLs; any other failure is named by its type only."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

MAX_READS = 300  # packets to read for the first picture before giving up
SELF_LIMIT_S = 30  # SIGALRM ends the probe even if the daemon that waits for it died


def probe(source: str) -> dict[str, Any]:
    from streamd.worker.av_source import AvSource
    from streamd.worker.frames import SourceError
    from streamd.worker.sources import open_source

    try:
        opened = open_source(source, loop=False)
        opened.open()
    except SourceError as exc:
        return {"ok": False, "error": str(exc)}
    try:
        for _ in range(MAX_READS):
            frame = opened.read()
            if frame is None:
                continue
            image = frame.image()
            codec, fps = opened.stream_info() if isinstance(opened, AvSource) else (None, None)
            if codec is None and source.startswith("synthetic:"):
                codec, fps = "synthetic", None
            height, width = image.shape[:2]
            return {"ok": True, "codec": codec, "width": width, "height": height, "fps": fps}
        return {"ok": False, "error": f"no picture in the first {MAX_READS} reads"}
    except SourceError as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        opened.close()


def main() -> int:
    signal.alarm(SELF_LIMIT_S)  # default action: terminate
    try:
        request = json.loads(sys.stdin.read(64 * 1024))
        source = request["source"]
        if not isinstance(source, str):
            raise TypeError("source")
    except (ValueError, KeyError, TypeError):
        print(json.dumps({"ok": False, "error": "bad probe request"}))
        return 2
    try:
        answer = probe(source)
    except Exception as exc:
        answer = {"ok": False, "error": f"probe failed: {type(exc).__name__}"}
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
