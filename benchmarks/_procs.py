"""Process CPU from /proc (a process alone, or with all its descendants), and a
camera child started the way the supervisor starts one."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from streamd.config import CameraConfig
from streamd.transport.local import MessageType, encode_json
from streamd.worker.spec import WorkerSpec

TICKS = os.sysconf("SC_CLK_TCK")
_libc = ctypes.CDLL(None, use_errno=True)


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads)."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def precise_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads) to the nanosecond, from its
    CPU-time clock (``clock_getcpuclockid``): ``cpu_seconds`` counts 10 ms ticks,
    too coarse for a few hundred ms of CPU. Falls back to ``cpu_seconds``."""
    clock = ctypes.c_int()
    if _libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return cpu_seconds(pid)
    try:
        return time.clock_gettime(clock.value)
    except OSError:  # the process is gone
        return cpu_seconds(pid)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU of each live process now (call twice and subtract, per pid)."""
    return {pid: cpu_seconds(pid) for pid in pids}


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


class CameraChild:
    """``python -m streamd.worker`` for one camera, fed its spec over a socketpair;
    the control socket is drained in a thread (heartbeats)."""

    def __init__(self, camera: CameraConfig, redis_port: int) -> None:
        parent, child = socket.socketpair()
        spec = WorkerSpec(
            camera, f"redis://127.0.0.1:{redis_port}/0", f"video:{camera.id}", "warning"
        )
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "streamd.worker", "--camera", camera.id),
                *("--control-fd", str(child.fileno()), "--log-level", "warning"),
            ],
            pass_fds=(child.fileno(),),
        )
        child.close()
        parent.sendall(encode_json(MessageType.SPEC, spec.to_json()))
        self._control = parent
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._control.recv(1 << 20):
                pass

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self._control.close()  # EOF: the child exits
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
