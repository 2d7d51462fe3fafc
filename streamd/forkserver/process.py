"""A camera child forked by the fork server, as the supervisor sees it.

The supervisor is not its parent, so it cannot ``waitpid``: it watches the
child's pidfd (handed over by the fork server, which opened it before it could
reap the child, so it names the right process) and signals through it
(``pidfd_send_signal``: never a recycled pid). The exit code comes from the fork
server, which reaps the child. If the fork server is gone when the child exits
(the child was reparented to init), the code is unknown: ``None``.

``ExitWatch`` is the pure part: which of those facts settle the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass


@dataclass
class ExitWatch:
    """Settles a forked child's exit from three facts, in any order."""

    exited: bool = False  # the pidfd turned readable
    code: int | None = None
    code_known: bool = False  # the fork server reported the code
    server_lost: bool = False  # the fork server died: no code will come

    def settled(self) -> tuple[bool, int | None]:
        """(done, exit code); a reported code settles it, the exit alone only
        when nobody is left to report one."""
        if self.code_known:
            return True, self.code
        if self.exited and self.server_lost:
            return True, None
        return False, None


class ForkedProcess:
    started_by = "fork"

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd: int | None = pidfd
        self._watch = ExitWatch()
        self._done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(pidfd, self._on_pidfd)

    @property
    def exited(self) -> bool:
        return self._done.done()

    @property
    def returncode(self) -> int | None:
        return self._done.result() if self._done.done() else None

    async def wait(self) -> int | None:
        return await asyncio.shield(self._done)

    def _on_pidfd(self) -> None:
        self._close_pidfd()
        self._watch.exited = True
        self._settle()

    def on_exit_code(self, code: int) -> None:
        self._watch.code, self._watch.code_known = code, True
        self._settle()

    def on_server_lost(self) -> None:
        self._watch.server_lost = True
        self._settle()

    def _settle(self) -> None:
        done, code = self._watch.settled()
        if done and not self._done.done():
            self._close_pidfd()
            self._done.set_result(code)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def send_signal(self, signum: int) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
