"""examples/consume_events.py against a real daemon and Redis: a consumer-group
reader stopped midway gets every event it missed when it returns."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, Daemon
from .support import RedisServer, wait_for
from .test_events import STORM, assert_no_traceback, key, start, stream_ids


def read_ids(process: subprocess.Popen[str], count: int) -> list[str]:
    assert process.stdout is not None
    ids: list[str] = []
    while len(ids) < count:
        line = process.stdout.readline()
        assert line, "the consumer exited"
        ids.append(json.loads(line)["id"])
    return ids


def consumer(redis_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "consume_events.py"),
            "--redis",
            redis_url,
            "--group",
            "alerts",
            "--consumer",
            "one",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_consumer_group_reader_gets_every_missed_event(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    daemon: Daemon = start(tmp_path / "streamd.toml", redis_server.url, [{**STORM, "fps": 5}], "")
    try:
        first = consumer(redis_server.url)
        seen = read_ids(first, 3)
        first.send_signal(signal.SIGKILL)  # stopped midway, without warning
        first.wait()
        stopped_after = seen[-1]
        wait_for(
            lambda: (
                len([i for i in stream_ids(redis_server.client()) if key(i) > key(seen[-1])]) >= 5
            ),
            15,
            "events while the consumer is away",
        )
        missed = [i for i in stream_ids(redis_server.client()) if key(i) > key(stopped_after)]
        second = consumer(redis_server.url)
        try:
            seen += read_ids(second, len(missed) + 1)
        finally:
            second.terminate()
            second.wait()
        assert set(missed) <= set(seen)  # every missed event, at least once
        everything = [i for i in stream_ids(redis_server.client()) if key(i) <= key(seen[-1])]
        start_index = everything.index(seen[0])
        assert set(everything[start_index:]) <= set(seen)  # no gap anywhere
    finally:
        daemon.stop()
    assert_no_traceback(daemon)
