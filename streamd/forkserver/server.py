"""The fork server process: ``python -m streamd.forkserver --parent PID --socket-fd N``.

Started by the supervisor (exec, own session). It dies with the supervisor
(``PR_SET_PDEATHSIG`` = SIGKILL, checked against ``--parent``), imports what a
camera child needs, collects and freezes the heap (``gc.freeze``: the objects of
the preload are never touched by a child's collector, so their pages stay
shared), says ``ready``, then serves: one fork per request, a pidfd of the child
back to the supervisor, and each child's exit code once it is reaped (SIGCHLD).

It stays single-threaded (forking a threaded process is unsafe): OpenBLAS is
told to start no thread pool, OpenCV to use one thread. It holds a pidfd of the
supervisor that every child inherits: the child's sign that the supervisor died.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import os
import selectors
import signal
import socket

from streamd.forkserver.entry import become_worker
from streamd.forkserver.protocol import (
    MAX_PACKET,
    Exited,
    Failed,
    Forked,
    ForkMessageError,
    ForkRequest,
    Message,
    Ready,
    decode,
    encode,
)

PRELOAD = (
    "numpy",
    "cv2",
    "av",
    "redis",
    "redis.asyncio",
    "structlog",
    "streamd.worker.main",
    "streamd.worker.av_source",
)
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> bool:
    """SIGKILL this process when the supervisor dies; False if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return os.getppid() == parent


def preload(modules: tuple[str, ...] = PRELOAD) -> None:
    # One thread per process: a fork server must not have threads, and a box with
    # many cameras gets its parallelism from them (OpenCV is set the same way).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gc.disable()
    for name in modules:
        importlib.import_module(name)
    import cv2

    cv2.setNumThreads(1)
    gc.collect()
    gc.freeze()


class ForkServer:
    def __init__(self, sock: socket.socket, supervisor_pidfd: int) -> None:
        self.sock = sock
        self.supervisor_pidfd = supervisor_pidfd
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector = selectors.DefaultSelector()

    def send(self, message: Message, fds: list[int] | None = None) -> None:
        if fds:
            socket.send_fds(self.sock, [encode(message)], fds)
        else:
            self.sock.send(encode(message))

    def serve(self) -> int:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.send(Ready(os.getpid()))
        while True:
            for key, _ in self.selector.select():
                if key.fileobj == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)
                    self.reap()
                elif not self.on_request():
                    return 0  # the supervisor closed the socket

    def on_request(self) -> bool:
        try:
            packet, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_PACKET, 4)
        except (ConnectionError, OSError):
            return False
        if not packet:
            return False
        try:
            message = decode(packet)
            if not isinstance(message, ForkRequest) or len(fds) != 1:
                raise ForkMessageError("expected a fork request with one fd")
        except ForkMessageError as exc:
            for fd in fds:
                os.close(fd)
            self.send(Failed(-1, str(exc)))
            return True
        self.fork(message, fds[0])
        return True

    def fork(self, request: ForkRequest, control_fd: int) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(control_fd)
            self.send(Failed(request.request_id, str(exc)))
            return
        if pid == 0:
            inherited = (self.sock.fileno(), self.wake_r, self.wake_w, self.selector_fd())
            become_worker(request, control_fd, self.supervisor_pidfd, inherited)
        os.close(control_fd)
        pidfd = os.pidfd_open(pid)  # race-free: our own child, not reaped yet
        try:
            self.send(Forked(request.request_id, pid), [pidfd])
        finally:
            os.close(pidfd)

    def selector_fd(self) -> int:
        fileno = getattr(self.selector, "fileno", None)
        return int(fileno()) if fileno is not None else -1

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.send(Exited(pid, os.waitstatus_to_exitcode(status)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamd.forkserver", description=__doc__)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--socket-fd", type=int, required=True)
    parser.add_argument("--room", default="", help="room for the children's command lines")
    args = parser.parse_args(argv)
    if not die_with_parent(args.parent):
        return 0
    supervisor_pidfd = os.pidfd_open(args.parent)
    sock = socket.socket(fileno=args.socket_fd)
    preload()
    try:
        return ForkServer(sock, supervisor_pidfd).serve()
    except (BrokenPipeError, ConnectionError):
        return 0  # the supervisor is gone
