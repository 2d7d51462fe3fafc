"""Detection events that are kept (issue 15): the Redis stream and its snapshots,
the embedded ring and directory, the events API and its guards, `/ws` replay.
Real redis-server, real daemon, real camera children, real WebSocket clients."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np
import pytest
from redis.exceptions import RedisError
from websockets.asyncio.client import connect

from streamd.config import EventsConfig
from streamd.eventlog.records import EventQuery, QueryError, decode_entry, parse_query
from streamd.eventlog.redis_log import RedisEventStore, RedisEventWriter
from streamd.gateway.auth import Decision
from streamd.gateway.routes import RouteKind, route
from streamd.gateway.session import MultiplexSession, Replay, Reply
from streamd.transport.cluster import Topology, plain_client
from streamd.transport.shard_clients import ShardClients

from .conftest import Daemon, write_config
from .support import RedisServer, free_port, wait_for

MOVING = {
    "id": "moving",
    "source": "synthetic:?width=320&height=240",
    "fps": 10,
    "motion_warmup": 0.5,
}
STORM = {
    "id": "storm",
    "source": "synthetic:?width=160&height=120&pattern=static",
    "fps": 10,
    "detector": "tests.plugins.detectors:Storm",
    "event_clear_after": 0.0,
}
TOKEN_MOVING = "sees-moving"
TOKEN_OTHER = "sees-other"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def get(daemon: Daemon, path: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://{daemon.base}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def events(daemon: Daemon, query: str = "", token: str | None = None) -> list[dict[str, Any]]:
    status, body = get(daemon, f"/api/events?{query}", token)
    assert status == 200, body
    found: list[dict[str, Any]] = json.loads(body)["events"]
    return found


def start(path: Path, redis_url: str | None, cameras: list[dict[str, Any]], extra: str) -> Daemon:
    port = free_port()
    write_config(path, redis_url=redis_url, port=port, cameras=cameras, extra=extra)
    if redis_url is None:
        path.write_text("[redis]\nenabled = false\n\n" + path.read_text())
    daemon = Daemon(path, port)
    daemon.wait_healthy(20)
    return daemon


def stream_ids(client: Any, camera: str | None = None) -> list[str]:
    return [
        bytes(i).decode()
        for i, fields in client.xrange("streamd:events")
        if camera is None or fields.get(b"camera") == camera.encode()
    ]


def assert_no_traceback(daemon: Daemon) -> None:
    text = daemon.log_text()
    assert "Traceback" not in text, text[-3000:]


# --- pure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("limit=0", "limit"),
        ("limit=99999999999", "limit"),
        ("limit=-1", "limit"),
        ("since=yesterday", "since"),
        ("since=2026-11-29T03:00:00", "time zone"),
        ("since=1e400", "since"),
        ("since=10&until=5", "before"),
        ("camera=*", "camera"),
        ("camera=a,../b", "camera"),
        ("cursor=1-*", "cursor"),
        ("cursor=-", "cursor"),
        ("cursor=99999999999999999999-0", "cursor"),
        ("label=", "label"),
        ("colour=red", "unknown parameter"),
        ("limit=5&limit=6", "twice"),
        ("label=" + "x" * 5000, "longer"),
    ],
)
def test_bad_query_parameters_are_named(query: str, problem: str) -> None:
    pairs = [tuple(p.split("=", 1)) for p in query.split("&")]
    with pytest.raises(QueryError, match=problem):
        parse_query([(k, v) for k, v in pairs])


def test_good_query_and_its_range() -> None:
    query = parse_query(
        [("camera", "a,b"), ("since", "2026-11-29T03:00:00Z"), ("limit", "7"), ("label", "car")]
    )
    assert query.cameras == frozenset({"a", "b"}) and query.limit == 7 and query.label == "car"
    since = query.since_ms
    assert since == 1795921200000 and query.start() == str(since) and query.end() == "+"
    later = EventQuery(after=f"{since + 5}-3", since_ms=since)
    assert later.start() == f"({since + 5}-3"  # the cursor wins when later


@pytest.mark.parametrize(
    ("entry_id", "fields"),
    [
        (b"1-0", {b"camera": b"door"}),
        (b"1-0", {b"camera": b"../x", b"time": b"1", b"event": b"{}"}),
        (b"1-0", {b"camera": b"door", b"time": b"nan", b"event": b'{"camera_id":"door"}'}),
        (b"1-0", {b"camera": b"door", b"time": b"1", b"event": b"[" * 100_000}),
        (b"1-0", {b"camera": b"door", b"time": b"1", b"event": b'{"camera_id":"yard"}'}),
        (b"1-0", {b"camera": b"door", b"time": b"1", b"event": b"\xff\xfe"}),
        (b"x", {b"camera": b"door", b"time": b"1", b"event": b'{"camera_id":"door"}'}),
        (b"1-0", None),
    ],
)
def test_junk_entries_are_not_events(entry_id: bytes, fields: Any) -> None:
    assert decode_entry(entry_id, fields) is None


def _session() -> MultiplexSession:
    return MultiplexSession(lambda c: Decision(True), lambda c: "live", lambda c: None)


def _texts(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, Reply)]


def test_session_replays_before_live_and_drops_duplicates() -> None:
    session = _session()
    actions = session.on_text('{"op":"subscribe","cameras":["door"],"events_since":"5-0"}')
    replays = [a for a in actions if isinstance(a, Replay)]
    assert replays == [Replay(("door",), "5-0")]
    live_a = {"camera_id": "door", "id": "7-0"}
    live_b = {"camera_id": "door", "id": "9-0"}
    assert session.on_event("door", live_a) == []  # held until the replay is out
    assert session.on_event("door", live_b) == []
    kept = [{"camera_id": "door", "id": "6-0"}, {"camera_id": "door", "id": "7-0"}]
    out = _texts(session.on_replay(kept, more=False))
    assert [m["type"] for m in out] == ["events", "event"]
    assert [e["id"] for e in out[0]["events"]] == ["6-0", "7-0"]
    assert out[1]["event"]["id"] == "9-0"  # 7-0 was in the replay: not twice
    assert _texts(session.on_event("door", {"camera_id": "door", "id": "10-0"}))[0]["type"] == (
        "event"
    )


def test_session_replay_failure_flushes_held_events_and_bad_ids_are_refused() -> None:
    session = _session()
    session.on_text('{"op":"subscribe","cameras":["door"],"events_since":"0-0"}')
    for i in range(200):  # a storm while Redis is slow: held, but bounded
        session.on_event("door", {"camera_id": "door", "id": f"{i + 1}-0"})
    out = _texts(session.on_replay_failed())
    assert out[0]["type"] == "error" and 0 < len(out) <= 65
    for bad in ('"1-*"', '"*"', '"-"', "5", '"1 OR 1"', '"99999999999999999999-1"'):
        text = '{"op":"subscribe","cameras":["door"],"events_since":' + bad + "}"
        assert _texts(session.on_text(text))[0]["type"] == "error"


def test_event_routes() -> None:
    assert route("/api/events").kind is RouteKind.EVENTS
    snapshot = route("/api/events/1795939864476-0/snapshot.jpg")
    assert (snapshot.kind, snapshot.event_id) == (RouteKind.EVENT_SNAPSHOT, "1795939864476-0")
    assert route("/api/events/1-0").kind is RouteKind.NOT_FOUND
    assert route("/api/events/").kind is RouteKind.NOT_FOUND


# --- real Redis, no daemon: trimming by count and by age -------------------------------


def test_stream_trims_by_count_and_by_age_and_snapshots_follow(tmp_path: Path) -> None:
    redis_server = RedisServer(free_port(), tmp_path)
    redis_server.start()
    try:
        asyncio.run(_trim(redis_server))
    finally:
        redis_server.kill()


async def _trim(redis_server: RedisServer) -> None:
    client = plain_client(redis_server.url)
    sync = redis_server.client()
    event = {"camera_id": "door", "time": time.time(), "labels": ["motion"], "detections": []}
    counted = RedisEventWriter(EventsConfig(max_events=10, max_snapshots=3))
    ids = [await counted.append(client, dict(event), b"\xff\xd8jpeg") for _ in range(40)]
    assert sync.xlen("streamd:events") == 10
    assert stream_ids(sync) == ids[-10:]
    assert len(sync.keys("streamd:snapshot:*")) == 3
    assert sync.exists(f"streamd:snapshot:{ids[-1]}")
    ttl = sync.pttl(f"streamd:snapshot:{ids[-1]}")
    assert 0 < ttl <= 7 * 86400 * 1000
    aged = RedisEventWriter(EventsConfig(retention=1.0, max_events=1000, max_snapshots=100))
    await aged.append(client, dict(event), b"\xff\xd8jpeg")
    await asyncio.sleep(1.1)
    last = await aged.append(client, dict(event), b"\xff\xd8jpeg")
    assert stream_ids(sync) == [last]
    assert 0 < sync.pttl(f"streamd:snapshot:{last}") <= 1000
    store = RedisEventStore(ShardClients(Topology(redis_server.url, cluster=False)))
    page = await store.query(EventQuery(), lambda _c: True)
    assert [r.id for r in page.events] == [last] and page.cursor is None
    # Someone replaced the stream with a string: a Redis error for the caller to
    # handle (the child counts the event as not kept; the API answers 503).
    sync.delete("streamd:events")
    sync.set("streamd:events", "junk")
    with pytest.raises(RedisError, match="WRONGTYPE"):
        await aged.append(client, dict(event), None)
    with pytest.raises(RedisError, match="WRONGTYPE"):
        await store.query(EventQuery(), lambda _c: True)
    await client.aclose()
    await store.clients.aclose()


# --- the daemon with Redis: stream, snapshots, API, guards ------------------------------


@pytest.fixture(scope="module")
def scoped(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tokens = "".join(
        f'\n[[server.tokens]]\nname = "{name}"\nsha256 = "{sha(name)}"\ncameras = ["{cam}"]\n'
        for name, cam in ((TOKEN_MOVING, "moving"), (TOKEN_OTHER, "other"))
    )
    other = {"id": "other", "source": "synthetic:?width=160&height=120", "detector": "none"}
    daemon = start(
        tmp_path_factory.mktemp("scoped") / "streamd.toml",
        module_redis.url,
        [MOVING, other],
        tokens,
    )
    yield daemon
    daemon.stop()
    assert_no_traceback(daemon)


def white_fraction(image: np.ndarray, box: list[int]) -> float:
    x, y, w, h = box
    inner = image[y + 4 : y + h - 4, x + 4 : x + w - 4]  # inside the drawn edge
    if inner.size == 0:
        return 0.0
    return float(np.mean(np.all(inner > 200, axis=2)))


def test_events_kept_with_snapshots_whose_boxes_lie_over_the_object(
    scoped: Daemon, module_redis: RedisServer
) -> None:
    kept = wait_for(lambda: events(scoped, "camera=moving", TOKEN_MOVING), 15, "a kept event")
    event = kept[0]
    assert event["camera_id"] == "moving" and event["labels"] == ["motion"]
    assert event["id"] in stream_ids(module_redis.client())  # the stream itself holds it
    status, jpeg = get(scoped, event["snapshot"], TOKEN_MOVING)
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.shape[:2] == (240, 320)  # the frame's size: boxes are in its pixels
    boxes = [d["box"] for d in event["detections"]]
    # The synthetic source's white square (40 px, rows 100-140) is under a box.
    assert max(white_fraction(image, box) for box in boxes) > 0.3, boxes
    ttl = module_redis.client().pttl(f"streamd:snapshot:{event['id']}")
    assert 6 * 86400 * 1000 < ttl <= 7 * 86400 * 1000  # expires with the event (7 d)


def test_api_honours_token_scopes(scoped: Daemon) -> None:
    kept = wait_for(lambda: events(scoped, "camera=moving", TOKEN_MOVING), 15, "a kept event")
    assert get(scoped, "/api/events")[0] == 401
    assert get(scoped, "/api/events", "wrong")[0] == 401
    assert events(scoped, "", TOKEN_OTHER) == []  # the other camera's events only
    assert get(scoped, "/api/events?camera=moving", TOKEN_OTHER)[0] == 403
    assert get(scoped, kept[0]["snapshot"], TOKEN_OTHER)[0] == 403
    assert get(scoped, kept[0]["snapshot"])[0] == 401


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=" + "9" * 40,
        "since=noon",
        "camera=%2A",
        "cursor=" + quote("1-*"),
        "until=1&since=2",
        "nonsense=1",
        "label=" + "x" * 3000,
    ],
)
def test_bad_parameters_get_a_clear_400(scoped: Daemon, query: str) -> None:
    status, body = get(scoped, f"/api/events?{query}", TOKEN_MOVING)
    assert status in (400, 414, 431), body
    if status == 400:
        assert json.loads(body)["error"]


@pytest.mark.parametrize(
    ("event_id", "status"),
    [
        ("*", 400),
        ("1-*", 400),
        ("-", 400),
        ("+", 400),
        ("1*", 400),
        ("%5B1-0%5D", 400),
        ("99999999999999999999-0", 400),
        ("1-0", 404),
    ],
)
def test_snapshot_ids_are_checked(scoped: Daemon, event_id: str, status: int) -> None:
    assert get(scoped, f"/api/events/{event_id}/snapshot.jpg", TOKEN_MOVING)[0] == status


def test_hostile_stream_writer_is_counted_and_skipped(
    scoped: Daemon, module_redis: RedisServer
) -> None:
    wait_for(lambda: events(scoped, "camera=moving", TOKEN_MOVING), 15, "a kept event")
    client = module_redis.client()
    junk: list[dict[Any, Any]] = [
        {"camera": "moving"},
        {"camera": "moving", "time": "1", "event": "{not json"},
        {"camera": "moving", "time": "1", "event": "[" * 50_000},
        {"camera": "moving", "time": "1", "event": '{"camera_id": "else"}', "snapshot": "1"},
        {"x": b"\xff\x00"},
    ]
    added = [client.xadd("streamd:events", fields) for fields in junk]
    junk_ids = [i.decode() if isinstance(i, bytes) else str(i) for i in added]
    found = events(scoped, "limit=500", TOKEN_MOVING)
    assert found and all(e["camera_id"] == "moving" for e in found)
    for junk_id in junk_ids:
        path = f"/api/events/{junk_id}/snapshot.jpg"
        assert get(scoped, path, TOKEN_MOVING)[0] == 404
    logged = [e for e in scoped.log_events() if e["event"].startswith("junk entries")]
    assert logged and logged[-1]["skipped_total"] >= 5
    # A live event with a forged id would break clients' ordering: dropped, counted.
    seen = asyncio.run(_live_ids_after(scoped, client))
    assert seen and "9-*" not in seen  # it ended with the sentinel


async def _live_ids_after(daemon: Daemon, client: Any) -> list[str]:
    ids: list[str] = []
    url = f"ws://{daemon.base}/ws"
    async with connect(url, subprotocols=["streamd", f"token.{TOKEN_MOVING}"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"op": "subscribe", "cameras": ["moving"]}))
        async with asyncio.timeout(10):
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass
            sentinel = f"{time.time_ns() // 10**6}-0"  # well-formed and plausible (now)
            for ident in ("9-*", sentinel):  # forged, then the sentinel
                event = {"camera_id": "moving", "time": 1, "id": ident}
                client.publish("streamd:events:moving", json.dumps(event))
            while not ids or ids[-1] != sentinel:
                message = await ws.recv()
                if isinstance(message, str) and json.loads(message)["type"] == "event":
                    ids.append(json.loads(message)["event"]["id"])
    return ids


# --- replay across a gateway restart, caps under an event storm -------------------------


async def _live_event_ids(url: str, count: int, since: str | None) -> tuple[list[str], list[str]]:
    """(replayed ids, live ids) from one /ws session subscribed to the storm camera."""
    replayed: list[str] = []
    live: list[str] = []
    subscribe: dict[str, Any] = {"op": "subscribe", "cameras": ["storm"]}
    if since is not None:
        subscribe["events_since"] = since
    async with connect(url, max_size=None, open_timeout=5) as ws:
        await ws.send(json.dumps(subscribe))
        async with asyncio.timeout(15):
            while len(live) < count:
                message = await ws.recv()
                if isinstance(message, bytes):
                    continue
                data = json.loads(message)
                if data["type"] == "events":
                    assert not live, "replayed events come before live ones"
                    replayed += [e["id"] for e in data["events"]]
                elif data["type"] == "event":
                    live.append(data["event"]["id"])
    return replayed, live


def key(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def test_viewer_misses_nothing_across_a_gateway_restart(
    module_redis: RedisServer, tmp_path: Path
) -> None:
    storm = {**STORM, "fps": 5}
    path = tmp_path / "streamd.toml"
    caps = "\n[events]\nmax_events = 50\nmax_snapshots = 5\n"
    daemon = start(path, module_redis.url, [storm], caps)
    try:  # a failed check must not leave the daemon running
        _, live = asyncio.run(_live_event_ids(f"ws://{daemon.base}/ws", 3, None))
    finally:
        daemon.stop()
    last_seen = live[-1]
    assert_no_traceback(daemon)
    restarted = start(path, module_redis.url, [storm], caps)  # events go on while we are away
    try:
        wait_for(
            lambda: len(events(restarted, f"camera=storm&cursor={last_seen}")) >= 5,
            15,
            "events while the viewer was away",
        )
        url = f"ws://{restarted.base}/ws"
        replayed, live_after = asyncio.run(_live_event_ids(url, 2, last_seen))
        kept = [i for i in stream_ids(module_redis.client(), "storm") if key(i) > key(last_seen)]
        assert len(replayed) >= 5
        assert replayed == kept[: len(replayed)]  # every event since the last one seen
        assert key(live_after[0]) > key(replayed[-1])  # then live ones, none twice
        assert set(replayed).isdisjoint(live_after)
        client = module_redis.client()  # the storm stays within its caps
        assert client.xlen("streamd:events") <= 50
        assert len(client.keys("streamd:snapshot:*")) <= 5
    finally:
        restarted.stop()
    assert_no_traceback(restarted)


def test_embedded_events_are_bounded_and_survive_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    extra = (
        f'\n[events]\nmax_events = 30\nmax_snapshots = 5\nsnapshot_max_bytes = "64K"\n'
        f'directory = "{directory}"\n'
    )
    storm = {**STORM, "fps": 20}
    path = tmp_path / "streamd.toml"
    daemon = start(path, None, [storm, MOVING], extra)
    try:  # a failed check must not leave the daemon running
        wait_for(lambda: len(list(directory.glob("*.jpg"))) >= 5, 15, "snapshots on disk")
        time.sleep(2.0)  # ~40 more storm events: every cap is reached
        kept = events(daemon, "limit=500")
        assert 25 <= len(kept) <= 30
        assert [key(e["id"]) for e in kept] == sorted(key(e["id"]) for e in kept)
        snapshots = sorted(directory.glob("*.jpg"))
        assert len(snapshots) <= 5 and all(p.stat().st_size <= 64 * 1024 for p in snapshots)
        jsonl = directory.glob("events*.jsonl")
        assert sum(len(p.read_text().splitlines()) for p in jsonl) <= 30
        newest = kept[-1]
        status, jpeg = get(daemon, newest["snapshot"]) if newest["snapshot"] else (404, b"")
        assert status == 200 and jpeg[:2] == b"\xff\xd8"
        assert get(daemon, kept[0]["snapshot"] or "/api/events/1-0/snapshot.jpg")[0] == 404
        page = json.loads(get(daemon, "/api/events?limit=10")[1])
        assert len(page["events"]) == 10 and page["cursor"] == page["events"][-1]["id"]
    finally:
        daemon.stop()
    assert_no_traceback(daemon)
    restarted = start(path, None, [MOVING], extra)  # the storm camera is gone
    try:
        after = events(restarted, "camera=storm&limit=500")
        assert (after and after[-1]["id"] == kept[-1]["id"]) or key(after[-1]["id"]) > key(
            kept[-1]["id"]
        )
        assert get(restarted, after[-1]["snapshot"])[0] == 200
    finally:
        restarted.stop()
    assert_no_traceback(restarted)
