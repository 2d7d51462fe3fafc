"""``[supervisor] child_memory_max``: a child above it is replaced, logged and
counted; the other cameras keep their processes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from streamd.memory import over_memory, read_rss

from .conftest import Daemon, RedisServer, wait_for

CAP = 150 * 1024 * 1024
SMALL = "synthetic:?width=64&height=48"


def cameras(daemon: Daemon) -> dict[str, dict[str, Any]]:
    status, body = daemon.http("/api/cameras")
    assert status == 200
    return dict(json.loads(body)["cameras"])


def test_over_memory_decision() -> None:
    assert not over_memory(CAP, CAP) and over_memory(CAP + 1, CAP)
    assert not over_memory(10**12, None)  # no cap configured
    assert not over_memory(None, CAP)  # the process is gone


def test_read_rss_of_this_process() -> None:
    rss = read_rss(os.getpid())
    assert rss is not None and 10 * 1024 * 1024 < rss < 4 * 1024**3
    assert read_rss(2**22 + 12345) is None  # no such process


def test_a_leaking_child_is_replaced_and_counted(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[
            {"id": "leaky", "source": SMALL, "fps": 10, "detector": "tests.plugins.leaky:Leaky"},
            {"id": "steady", "source": SMALL, "fps": 10, "detector": "none"},
        ],
        extra='\n[supervisor]\nchild_memory_max = "150M"\nrestart_delay_initial = 0.2\n',
    )
    first = wait_for(
        lambda: (c := cameras(daemon))["leaky"]["pid"] and c["steady"]["pid"] and c,
        20,
        "both children started",
    )
    steady_pid = first["steady"]["pid"]

    def replaced() -> dict[str, dict[str, Any]] | None:
        c = cameras(daemon)
        leaky = c["leaky"]
        return (
            c
            if leaky["memory_restarts"] >= 1 and leaky["pid"] not in (None, first["leaky"]["pid"])
            else None
        )

    after = wait_for(replaced, 40, "the leaking child replaced")
    assert after["steady"]["pid"] == steady_pid and after["steady"]["memory_restarts"] == 0
    events = [e for e in daemon.log_events() if e.get("event") == "child over memory cap"]
    assert events, daemon.log_text()[-3000:]
    assert events[0]["camera_id"] == "leaky" and events[0]["cap"] == CAP
    assert events[0]["rss"] > CAP and events[0]["pid"] == first["leaky"]["pid"]
    # Replaced again and again while it leaks: the counter keeps counting.
    wait_for(lambda: cameras(daemon)["leaky"]["memory_restarts"] >= 2, 60, "a second replacement")
    assert cameras(daemon)["steady"]["pid"] == steady_pid
