"""Signals the uvicorn way: handlers only record what was asked; the daemon's
run loop acts on it (SIGTERM/SIGINT stop, a second one forces, SIGHUP reloads)."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field


@dataclass
class SignalRequests:
    """What the signals asked for. The handlers only record it (uvicorn's habit);
    ``Daemon`` acts on it from its run loop."""

    stop: signal.Signals | None = None
    force: signal.Signals | None = None
    reload: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    forced: asyncio.Event = field(default_factory=asyncio.Event)

    def on_stop(self, signum: signal.Signals) -> None:
        if self.stop is None:
            self.stop = signum
        else:
            self.force = signum
            self.forced.set()
        self.changed.set()

    def on_reload(self) -> None:
        self.reload = True
        self.changed.set()
