"""Kept events, always named (issue 19): an event made while Redis is down or not
yet up waits in a bounded backlog and is kept, then published with its id, when
Redis answers; no live event goes out without the id it is kept under.
The decisions are pure and tested here; the real path kills and restarts a real
redis-server under a real daemon with a real camera child and a /ws viewer."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from websockets.asyncio.client import connect

from streamd.config import ConfigError, EventsConfig
from streamd.eventlog.records import CLUSTER_KEYS, SINGLE_KEYS, event_keys
from streamd.states import RedisState
from streamd.worker.event_backlog import (
    EventBacklog,
    EventRoute,
    PendingEvent,
    route_event,
    worth_retrying,
)
from streamd.worker.spec import WorkerSpec

from .conftest import Daemon
from .support import RedisServer, free_port, wait_for
from .test_events import STORM, events, key, start

# --- pure -----------------------------------------------------------------------------


def pending(n: int, snapshot: bytes | None = None) -> PendingEvent:
    return PendingEvent({"camera_id": "door", "n": n}, snapshot)


def numbers(backlog: EventBacklog) -> list[int]:
    out = []
    while (item := backlog.take()) is not None:
        out.append(item.event["n"])
    return out


@pytest.mark.parametrize(
    ("state", "route"),
    [
        (RedisState.DISABLED, EventRoute.LOCAL),
        (RedisState.CONNECTING, EventRoute.WAIT),  # the CI failure: not yet up
        (RedisState.DOWN, EventRoute.WAIT),
        (RedisState.UNKNOWN, EventRoute.WAIT),
        (RedisState.UP, EventRoute.KEEP),
    ],
)
def test_an_event_waits_whenever_redis_is_configured_but_not_answering(
    state: RedisState, route: EventRoute
) -> None:
    assert route_event(state) is route


def test_backlog_keeps_order_drops_the_oldest_and_counts() -> None:
    backlog = EventBacklog(3)
    assert [backlog.add(pending(n)) for n in range(5)] == [0, 0, 0, 1, 1]
    assert backlog.dropped == 2 and len(backlog) == 3
    assert numbers(backlog) == [2, 3, 4]
    assert backlog.take() is None


def test_a_taken_event_goes_back_first_or_is_the_one_dropped() -> None:
    backlog = EventBacklog(2)
    backlog.add(pending(1))
    backlog.add(pending(2))
    taken = backlog.take()  # being written when Redis went away
    assert taken is not None and taken.event["n"] == 1
    assert backlog.put_back(taken) == 0
    assert numbers(backlog) == [1, 2]  # still first: ids follow the order of events
    backlog.add(pending(1))
    taken = backlog.take()
    assert taken is not None
    backlog.add(pending(2))
    backlog.add(pending(3))  # filled while the write was under way
    assert backlog.put_back(taken) == 1  # the oldest: it is the one dropped
    assert numbers(backlog) == [2, 3] and backlog.dropped == 1


def test_backlog_is_bounded_by_snapshot_bytes_too() -> None:
    backlog = EventBacklog(100, max_bytes=1000)
    for n in range(5):
        backlog.add(pending(n, b"x" * 400))
    assert len(backlog) == 2 and backlog.bytes == 800 and backlog.dropped == 3
    backlog.add(pending(9, b"y" * 5000))  # alone above the bound: still kept, alone
    assert len(backlog) == 1 and backlog.bytes == 5000
    with pytest.raises(ValueError):
        EventBacklog(0)


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (RedisConnectionError("Connection refused"), True),
        (RedisTimeoutError("Timeout reading"), True),
        (OSError("reset"), True),
        (ResponseError("MOVED 1234 127.0.0.1:7001"), True),
        (ResponseError("CLUSTERDOWN The cluster is down"), True),
        (ResponseError("LOADING Redis is loading the dataset in memory"), True),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (ResponseError("OOM command not allowed"), False),
        (ResponseError("NOPERM this user has no permissions"), False),
    ],
)
def test_only_outages_are_retried(exc: BaseException, retry: bool) -> None:
    assert worth_retrying(exc) is retry


def test_cluster_keys_share_one_slot_and_one_redis_keeps_its_names() -> None:
    slots = {key_slot(name.encode()) for name in CLUSTER_KEYS.all_names}
    slots.add(key_slot(CLUSTER_KEYS.snapshot("1732860000000-0").encode()))
    assert len(slots) == 1
    assert SINGLE_KEYS.all_names == ("streamd:events", "streamd:snapshot:", "streamd:snapshots")
    assert event_keys(cluster=True) is CLUSTER_KEYS and event_keys(cluster=False) is SINGLE_KEYS


def test_backlog_size_is_configured_and_reaches_the_child() -> None:
    spec = WorkerSpec.from_json({**_minimal_spec(), "events": {"backlog": 7, "max_events": 10}})
    assert spec.events.backlog == 7
    assert WorkerSpec.from_json(json.loads(json.dumps(spec.to_json()))).events.backlog == 7
    assert EventsConfig().backlog == 100
    with pytest.raises(ConfigError, match="backlog"):
        WorkerSpec.from_json({**_minimal_spec(), "events": {"backlog": 0}})


def _minimal_spec() -> dict[str, Any]:
    spec = WorkerSpec.from_json(
        {"camera": {"id": "door", "source": "synthetic:"}, "redis_url": None, "channel": "v:door"}
    )
    data: dict[str, Any] = spec.to_json()
    return data


# --- real Redis killed and restarted under a running daemon ------------------------------


async def _collect(url: str, seen: list[dict[str, Any]], stop: asyncio.Event) -> None:
    async with connect(url, max_size=None, open_timeout=5) as ws:
        await ws.send(json.dumps({"op": "subscribe", "cameras": ["storm"]}))
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            if isinstance(message, str) and json.loads(message)["type"] == "event":
                seen.append(json.loads(message)["event"])


def metric(daemon: Daemon, name: str) -> float:
    text = daemon.http("/metrics")[1].decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and 'camera="storm"' in line
    )


async def _outage(
    tmp_path: Path, backlog: int | None, outage_s: float
) -> tuple[Daemon, RedisServer, list[dict[str, Any]], float, float]:
    """A daemon with the storm camera (5 events a second) and a /ws viewer;
    Redis killed for ``outage_s`` and started again on the same port."""
    redis_server = RedisServer(free_port(), tmp_path)
    redis_server.start()
    extra = f"\n[events]\nbacklog = {backlog}\n" if backlog is not None else ""
    daemon = await asyncio.to_thread(
        start, tmp_path / "streamd.toml", redis_server.url, [{**STORM, "fps": 5}], extra
    )
    seen: list[dict[str, Any]] = []
    stop = asyncio.Event()
    viewer = asyncio.create_task(_collect(f"ws://{daemon.base}/ws", seen, stop))
    try:
        await asyncio.to_thread(wait_for, lambda: len(seen) >= 3, 15, "live events")
        redis_server.kill()
        down = time.time()
        await asyncio.sleep(outage_s)  # the storm goes on: events wait for Redis
        redis_server.start()
        back = time.time()
        await asyncio.to_thread(
            wait_for,
            lambda: sum(e["time"] > back + 0.5 for e in seen) >= 3,
            20,
            "live events again",
        )
    finally:
        stop.set()
        await viewer
    return daemon, redis_server, seen, down, back


async def test_events_made_while_redis_is_down_are_kept_then_published_with_their_ids(
    tmp_path: Path,
) -> None:
    daemon, redis_server, seen, down, back = await _outage(tmp_path, None, 3.0)
    try:
        # Every live event is named: none went out without the id it is kept under.
        assert all(isinstance(e.get("id"), str) for e in seen), [e for e in seen if "id" not in e]
        # Redis restarted empty; the stream holds what was made during the outage.
        kept = await asyncio.to_thread(events, daemon, "camera=storm&limit=500")
        during = [e for e in kept if down + 0.3 < e["time"] < back - 0.3]
        assert len(during) >= 5, [e["time"] - down for e in kept]
        times = [e["time"] for e in kept]
        assert times == sorted(times)  # written in the order they happened
        ids = {e["id"] for e in kept}
        after = [e for e in seen if e["time"] > back + 0.5]
        assert after and all(e["id"] in ids for e in after)
        assert [key(e["id"]) for e in after] == sorted(key(e["id"]) for e in after)
        snapshot = next(e["snapshot"] for e in during if e["snapshot"])
        assert daemon.http(snapshot)[0] == 200
        assert metric(daemon, "streamd_detection_events_dropped_total") == 0
    finally:
        daemon.stop()
        redis_server.kill()
    assert "Traceback" not in daemon.log_text()


async def test_a_long_outage_keeps_the_newest_events_and_counts_the_rest(tmp_path: Path) -> None:
    daemon, redis_server, _seen, down, back = await _outage(tmp_path, 5, 4.0)
    try:
        kept = await asyncio.to_thread(events, daemon, "camera=storm&limit=500")
        made_since = [e for e in kept if e["time"] > down]
        # ~20 events made while Redis was away, more until the child's next PING
        # answers: only the 5 newest waited (plus, at most, the one being written
        # when Redis went), the oldest were dropped and counted.
        assert len([e for e in made_since if e["time"] < back]) <= 6
        assert made_since and min(e["time"] for e in made_since) > down + 2.0
        dropped = metric(daemon, "streamd_detection_events_dropped_total")
        assert dropped >= 5, dropped
        logged = [e for e in daemon.log_events() if e.get("event", "").startswith("events dropped")]
        assert logged and len(logged) < dropped  # counted always, logged sparsely
    finally:
        daemon.stop()
        redis_server.kill()
    assert "Traceback" not in daemon.log_text()
