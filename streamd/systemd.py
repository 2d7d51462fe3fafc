"""sd_notify without libsystemd: READY, STATUS, RELOADING, STOPPING, WATCHDOG.

Messages are newline-separated ``KEY=VALUE`` datagrams to ``$NOTIFY_SOCKET``
(a path, or ``@name`` for the abstract namespace). Without ``NOTIFY_SOCKET``
(not under systemd, or ``Type=`` other than notify) every call is a no-op.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Mapping

from streamd.untrusted import is_ascii_digits


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``WATCHDOG_USEC``), or None."""
    usec = env.get("WATCHDOG_USEC")
    owner = env.get("WATCHDOG_PID")
    if not usec or not is_ascii_digits(usec) or int(usec) == 0:
        return None
    if owner and is_ascii_digits(owner) and int(owner) != pid:
        return None  # the watchdog belongs to another process
    return int(usec) / 2_000_000


class Notifier:
    def __init__(self, env: Mapping[str, str]) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        self._socket: socket.socket | None = None
        if address.startswith(("/", "@")):
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, *lines: str) -> None:
        if self._socket is None or self._address is None:
            return
        # A full or missing socket must never take the daemon down.
        with contextlib.suppress(OSError):
            self._socket.sendto("\n".join(lines).encode(), self._address)

    def ready(self) -> None:
        self.send("READY=1")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


# The service's own: children must not talk to systemd as if they were the service.
SERVICE_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
