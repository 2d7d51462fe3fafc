"""What a child forked by the fork server does before it is a camera worker:
its own session, default signal dispositions, none of the fork server's fds,
the environment the supervisor chose, the command line an exec would have
shown, then ``streamd.worker.main``; it never returns into the fork server."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import traceback
from collections.abc import Iterable, Sequence
from typing import NoReturn

from streamd import proctitle
from streamd.forkserver.protocol import ForkRequest


def with_control_fd(argv: Sequence[str], fd: int) -> list[str]:
    """The worker's argv with ``--control-fd`` naming the fd this child really has
    (the supervisor cannot know the number the fd arrives under)."""
    out = list(argv)
    if "--control-fd" in out[:-1]:
        out[out.index("--control-fd") + 1] = str(fd)
    else:
        out += ["--control-fd", str(fd)]
    return out


def worker_args(argv: Sequence[str]) -> list[str]:
    """The arguments after ``-m streamd.worker`` (what the worker's parser reads)."""
    items = list(argv)
    if "streamd.worker" in items:
        return items[items.index("streamd.worker") + 1 :]
    return items[1:]


def become_worker(
    request: ForkRequest, control_fd: int, supervisor_pidfd: int, inherited: Iterable[int]
) -> NoReturn:
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        for fd in inherited:
            if fd >= 0:
                os.close(fd)
        os.environ.clear()
        os.environ.update(request.env)
        argv = with_control_fd(request.argv, control_fd)
        proctitle.set_argv(argv)
        args = worker_args(argv)
        sys.argv = ["-m", *args]
        gc.enable()  # frozen in the fork server; this child's own objects are collected

        from streamd.worker.main import main

        code = main(args, supervisor_pidfd=supervisor_pidfd)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
