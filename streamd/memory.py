"""A child's resident memory, read from ``/proc``, and the pure decision to
replace it (``[supervisor] child_memory_max``): OpenCV and FFmpeg are known to
leak on flaky RTSP streams, and a fresh child is the cure."""

from __future__ import annotations

import os
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def read_rss(pid: int) -> int | None:
    """Resident set size in bytes (``/proc/PID/statm``), None when the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return None
    return int(fields[1]) * PAGE_SIZE


def over_memory(rss: int | None, cap: int | None) -> bool:
    return cap is not None and rss is not None and rss > cap
