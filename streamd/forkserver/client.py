"""The supervisor's side of the fork server: start it (exec, from the event
loop's thread, so its ``PR_SET_PDEATHSIG`` follows the supervisor's main
thread), ask it for children, route their exit codes, notice its death, and
start it again with backoff. While it is not ``up`` the caller spawns (exec).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog

from streamd import proctitle
from streamd.backoff import Backoff
from streamd.errors import StreamdError
from streamd.forkserver.process import ForkedProcess
from streamd.forkserver.protocol import (
    MAX_PACKET,
    Exited,
    Failed,
    Forked,
    ForkMessageError,
    ForkRequest,
    Ready,
    decode,
    encode,
)

log = structlog.get_logger("streamd.supervisor")
FORK_REPLY_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 3.0


class ForkServerState(StrEnum):
    STARTING = "starting"  # importing what children need
    UP = "up"
    DOWN = "down"  # died; children are spawned by exec until it is back
    STOPPED = "stopped"


class ForkServerUnavailable(StreamdError, RuntimeError):
    """No fork now: the caller spawns the child instead."""


class ForkInterrupted(StreamdError, OSError):
    """The fork server went away with our request in flight: it may have forked
    a child holding the control fd, so this start fails (the caller closes its
    end, which ends such a child) rather than spawn a second one on the same fd."""


@dataclass(frozen=True)
class ForkServerInfo:
    """For ``/metrics``, ``/api/cameras`` and ``streamd status``."""

    state: ForkServerState
    pid: int | None
    restarts: int
    forks: int
    ready_s: float | None  # how long its last start took to be ready

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "pid": self.pid,
            "restarts": self.restarts,
            "forks": self.forks,
            "ready_s": self.ready_s,
        }


class ForkServerClient:
    def __init__(
        self,
        env: Mapping[str, str],
        backoff: Backoff | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.env = dict(env)
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.command = list(command or (sys.executable, "-m", "streamd.forkserver"))
        self.state = ForkServerState.STOPPED
        self.pid: int | None = None
        self.restarts = 0
        self.forks = 0
        self.ready_s: float | None = None
        self.ever_ready = False
        self._failures = 0
        self._sock: socket.socket | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[tuple[int, int]]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._restart: asyncio.Task[None] | None = None
        self._stopping = False

    def info(self) -> ForkServerInfo:
        return ForkServerInfo(self.state, self.pid, self.restarts, self.forks, self.ready_s)

    @property
    def up(self) -> bool:
        return self.state is ForkServerState.UP

    async def start(self) -> None:
        """Exec the fork server; ``wait_ready`` tells when it serves."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        started = time.monotonic()
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.command,
                "--parent",
                str(os.getpid()),
                "--socket-fd",
                str(theirs.fileno()),
                # Its argv area is where each child writes its own command line.
                "--room=" + " " * proctitle.ROOM,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                env=self.env,
            )
        except OSError as exc:
            ours.close()
            log.error("cannot start the fork server", error=str(exc))
            self._lost()
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self.pid = self._process.pid
        self.state = ForkServerState.STARTING
        self._ready = asyncio.Event()
        self._started_at = started
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)

    async def wait_ready(self, within: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), within)
        return self.up

    async def fork(self, argv: Sequence[str], env: Mapping[str, str], fd: int) -> ForkedProcess:
        """A child forked with ``fd`` as its control socket."""
        sock = self._sock
        if not self.up or sock is None:
            raise ForkServerUnavailable(self.state.value)
        self._next_id += 1
        request_id = self._next_id
        reply: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        try:
            try:
                await self._send(sock, encode(ForkRequest(request_id, tuple(argv), env)), fd)
            except OSError as exc:  # not sent: nothing was forked
                self._lost()
                raise ForkServerUnavailable(str(exc)) from None
            try:
                pid, pidfd = await asyncio.wait_for(asyncio.shield(reply), FORK_REPLY_TIMEOUT_S)
            except TimeoutError:
                log.error("fork server did not answer; replacing it", pid=self.pid)
                self._kill()
                raise ForkInterrupted("the fork server did not answer") from None
            except ForkServerUnavailable as exc:
                if self._sock is None:  # it died with the request in flight
                    raise ForkInterrupted(f"the fork server died during the fork: {exc}") from None
                raise  # it answered: the fork itself failed
        finally:
            self._pending.pop(request_id, None)
        child = ForkedProcess(pid, pidfd)
        self._children[pid] = child
        self.forks += 1
        return child

    async def _send(self, sock: socket.socket, data: bytes, fd: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                socket.send_fds(sock, [data], [fd])
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(sock.fileno(), writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        sock = self._sock
        while sock is not None and sock is self._sock:
            try:
                packet, fds, _flags, _addr = socket.recv_fds(sock, MAX_PACKET, 2)
            except BlockingIOError:
                return
            except OSError:
                packet, fds = b"", []
            if not packet:
                self._lost()
                return
            try:
                self._on_message(decode(packet), fds)
            except ForkMessageError as exc:
                for fd in fds:
                    os.close(fd)
                log.error("bad message from the fork server", error=str(exc))

    def _on_message(self, message: object, fds: list[int]) -> None:
        if isinstance(message, Ready):
            self.state = ForkServerState.UP
            self.ready_s = round(time.monotonic() - self._started_at, 3)
            self.ever_ready = True
            self._failures = 0
            self._ready.set()
            log.info("fork server ready", pid=message.pid, ready_s=self.ready_s)
        elif isinstance(message, Forked):
            reply = self._pending.get(message.request_id)
            if reply is None or reply.done() or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                return
            reply.set_result((message.pid, fds[0]))
        elif isinstance(message, Failed):
            reply = self._pending.get(message.request_id)
            if reply is not None and not reply.done():
                reply.set_exception(ForkServerUnavailable(message.error))
        elif isinstance(message, Exited):
            child = self._children.pop(message.pid, None)
            if child is not None:
                child.on_exit_code(message.code)

    def _kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        self._lost()

    def _lost(self) -> None:
        """The fork server is gone (died, killed, or never started)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(ForkServerUnavailable("fork server died"))
        children, self._children = self._children, {}
        for child in children.values():
            child.on_server_lost()
        self._ready.set()  # nobody waits for a start that failed
        if self._stopping:
            self.state = ForkServerState.STOPPED
            return
        if self.state is ForkServerState.DOWN:
            return  # already noticed (EOF after a kill)
        self.state = ForkServerState.DOWN
        self._failures += 1
        delay = self.backoff.delay(self._failures)
        log.warning(
            "fork server died; camera children are spawned by exec until it is back",
            pid=self.pid,
            restart_in_s=round(delay, 2),
        )
        self._restart = asyncio.create_task(self._start_again(delay), name="forkserver-restart")

    async def _start_again(self, delay: float) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        await asyncio.sleep(delay)
        if not self._stopping:
            self.restarts += 1
            await self.start()

    async def stop(self) -> None:
        """Close its socket (it exits on EOF); SIGKILL it if it lingers."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        self._lost()
        process = self._process
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
