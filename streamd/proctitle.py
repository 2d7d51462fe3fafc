"""Give a forked process the command line it would have had if it were exec'd.

A camera child forked from the fork server still has the fork server's argv;
``ps``, ``pgrep -f``, journald's ``_CMDLINE`` and the tests read
``/proc/PID/cmdline``. The kernel serves that file from the process's own argv
area (``arg_start``..``arg_end``, fields 48-49 of ``/proc/self/stat``), so
writing a NUL-separated argv there, padded with NULs, is what an exec would
have shown. The area cannot grow: the fork server is started with room to spare
(``ROOM``), and ``fit_argv`` (pure) shortens what does not fit.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path

# Camera ids are at most 64 characters; this leaves room for the interpreter's path.
ROOM = 384


def fit_argv(argv: Sequence[str], room: int) -> bytes:
    """``argv`` as NUL-terminated strings in exactly ``room`` bytes (NUL padded).
    Too long: the interpreter path is shortened to its name, then the tail cut
    (the last byte is always NUL, so the kernel reads the area as an argv)."""
    if room <= 0:
        return b""
    parts = list(argv)
    encoded = b"".join(os.fsencode(a) + b"\0" for a in parts)
    if len(encoded) > room and parts:
        parts[0] = os.path.basename(parts[0])
        encoded = b"".join(os.fsencode(a) + b"\0" for a in parts)
    encoded = encoded[: room - 1] + b"\0" if len(encoded) > room else encoded
    return encoded.ljust(room, b"\0")


def argv_area(pid: int | str = "self") -> tuple[int, int] | None:
    """(arg_start, arg_end) of a process, None when the kernel does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # Fields after the command name start at field 3; arg_start is field 48.
    if len(fields) < 47:
        return None
    start, end = int(fields[45]), int(fields[46])
    return (start, end) if 0 < start < end else None


def set_argv(argv: Sequence[str]) -> bool:
    """Rewrite this process's ``/proc/self/cmdline``; False if it cannot be done."""
    area = argv_area()
    if area is None:
        return False
    start, end = area
    data = fit_argv(argv, end - start)
    ctypes.memmove(start, data, len(data))
    return True
