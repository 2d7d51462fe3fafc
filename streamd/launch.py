"""Starting one camera child: fork it from the warm fork server, or spawn it by
exec (no fork server, or it is down), behind one interface the supervisor uses
for either (``ChildProcess``). ``starting.choose_start`` decides which."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from streamd.forkserver.client import ForkServerClient, ForkServerUnavailable
from streamd.starting import StartChoice, StartMethod, choose_start

log = structlog.get_logger("streamd.supervisor")
FIRST_READY_TIMEOUT_S = 30.0


class ChildProcess(Protocol):
    """A running camera child, forked or spawned."""

    pid: int
    started_by: str

    @property
    def exited(self) -> bool: ...

    async def wait(self) -> int | None: ...

    def send_signal(self, signum: int) -> None: ...

    def kill(self) -> None: ...


class SpawnedProcess:
    """An exec'd child: the supervisor is its parent and waits for it."""

    started_by = StartMethod.SPAWN.value

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid

    @property
    def exited(self) -> bool:
        return self.process.returncode is not None

    async def wait(self) -> int | None:
        return await self.process.wait()

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Launcher:
    """Forks when it can, spawns otherwise; counts both and the fallbacks."""

    def __init__(self, fork_server: ForkServerClient | None) -> None:
        self.fork_server = fork_server
        self.started: dict[StartMethod, int] = {m: 0 for m in StartMethod}
        self.fallbacks = 0  # spawned because the fork server was down
        self._waited = False
        self._falling_back = False

    async def launch(self, argv: Sequence[str], env: Mapping[str, str], fd: int) -> ChildProcess:
        fork_server = self.fork_server
        enabled = fork_server is not None
        choice = self._choice()
        if choice is StartChoice.WAIT and fork_server is not None:
            await fork_server.wait_ready(FIRST_READY_TIMEOUT_S)
            self._waited = True
            choice = self._choice()
        if choice is StartChoice.FORK and fork_server is not None:
            try:
                child = await fork_server.fork(argv, env, fd)
            except ForkServerUnavailable:
                pass
            else:
                self._falling_back = False
                self.started[StartMethod.FORK] += 1
                return child
        if enabled:
            self.fallbacks += 1
            if not self._falling_back:
                self._falling_back = True
                log.warning("fork server unavailable: spawning camera children by exec")
        process = await asyncio.create_subprocess_exec(
            *argv, pass_fds=(fd,), start_new_session=True, env=dict(env)
        )
        self.started[StartMethod.SPAWN] += 1
        return SpawnedProcess(process)

    def _choice(self) -> StartChoice:
        server = self.fork_server
        if server is None:
            return choose_start(False, False, False, self._waited)
        return choose_start(True, server.up, server.ever_ready, self._waited)
