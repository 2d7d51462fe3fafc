"""The old frontend's own buttons and the old paths that answered 404 (issue 19,
part 4), each attacked as a hostile web page (Origin, Sec-Fetch-Site, simple
bodies), a rebound DNS name (Host) and a client that never reads or leaves.
Real daemons, real camera children, real probe processes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Daemon, launch_daemon, rss_kib, write_config
from .http_client import raw, request, statuses
from .scale_support import node_config, start_node
from .support import RedisServer, free_port, raw_viewer, wait_for

SYNTH = {"source": "synthetic:", "fps": 10, "width": 160, "detector": "none"}
JSON_TYPE = {"Content-Type": "application/json"}
VIEW_A = "viewer-of-a"
ADMIN = "admin-secret"
EVIL = "http://evil.example"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _start(path: Path, redis_url: str, cameras: list[dict[str, Any]], extra: str) -> Daemon:
    return launch_daemon(path, redis_url=redis_url, cameras=cameras, extra=extra)


@pytest.fixture(scope="module")
def daemon(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A default install: loopback, no tokens."""
    path = tmp_path_factory.mktemp("open") / "streamd.toml"
    started = _start(path, module_redis.url, [{"id": "porch", **SYNTH}], "")
    yield started
    started.stop()
    text = started.log_text()
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture(scope="module")
def secured(
    module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """A view token scoped to camera ``ka``; an admin-scoped token."""
    path = tmp_path_factory.mktemp("secured") / "streamd.toml"
    tokens = (
        f'\n[[server.tokens]]\nname = "a"\nsha256 = "{sha(VIEW_A)}"\ncameras = ["ka"]\n'
        f'\n[[server.tokens]]\nname = "admin"\nsha256 = "{sha(ADMIN)}"\nadmin = true\n'
    )
    cameras = [{"id": "ka", **SYNTH}, {"id": "kb", **SYNTH}]
    port = free_port()
    write_config(path, redis_url=module_redis.url, port=port, cameras=cameras, extra=tokens)
    started = Daemon(path, port)
    started.wait_healthy(20)
    yield started
    started.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def detail(body: bytes) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(body)["detail"]
    return found


def own_page(daemon: Daemon) -> dict[str, str]:
    """What a browser adds to a POST from the daemon's own page."""
    return {"Origin": f"http://{daemon.base}", "Sec-Fetch-Site": "same-origin"}


# --- the old frontend's bodiless buttons ------------------------------------------------------


def test_the_old_frontends_bodiless_buttons_work_and_cross_site_ones_do_not(
    daemon: Daemon,
) -> None:
    base = "/api/v1/cameras/porch/"
    # http.post('/cameras/{id}/start'): no body, no Content-Type, the page's own origin.
    for action in ("stop", "start", "restart"):
        status, body = request(daemon, base + action, "POST", own_page(daemon))
        assert status == 200, (action, body)
        assert json.loads(body)["action"] == action
    # Either browser signal alone vouches for it.
    assert request(daemon, base + "start", "POST", {"Sec-Fetch-Site": "same-origin"})[0] == 200
    assert request(daemon, base + "start", "POST", {"Origin": f"http://{daemon.base}"})[0] == 200
    # A hostile page: another origin, Origin null, the browser saying cross-site.
    for headers in (
        {"Origin": EVIL},
        {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": f"http://{daemon.base}", "Sec-Fetch-Site": "cross-site"},
    ):
        status, body = request(daemon, base + "stop", "POST", headers)
        assert status == 403, (headers, body)
        assert detail(body)["error"] == "cross_site"
    # Bodies a form or a no-cors fetch can send stay 415, even from the own page.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        headers = {**own_page(daemon), "Content-Type": content_type}
        assert request(daemon, base + "stop", "POST", headers, b"x=1")[0] == 415, content_type
    # A body without a Content-Type is not bodiless.
    answer = raw(
        daemon,
        f"POST {base}stop HTTP/1.1\r\nHost: {daemon.base}\r\nOrigin: http://{daemon.base}\r\n"
        "Content-Length: 3\r\nConnection: close\r\n\r\nx=1".encode(),
    )
    assert statuses(answer) == [415], answer[:200]
    # Nobody vouches (no Origin, no Sec-Fetch-Site): 415 as before.
    assert request(daemon, base + "stop", "POST")[0] == 415
    cameras = json.loads(request(daemon, "/api/cameras")[1])["cameras"]
    assert cameras["porch"]["child"] != "stopped"


def test_config_actions_answer_405_naming_the_config(daemon: Daemon) -> None:
    for action in ("activate", "deactivate", "auto-start"):
        for method in ("POST", "GET", "PUT"):
            path = f"/api/v1/cameras/porch/{action}"
            status, body = request(daemon, path, method, JSON_TYPE if method != "GET" else {})
            assert status == 405, (action, method, body)
            message = detail(body)["message"]
            assert "/etc/streamd.toml" in message and "systemctl reload" in message


def _head_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[0].lower()


def test_no_server_banner_on_any_answer(daemon: Daemon) -> None:
    host = f"Host: {daemon.base}\r\n"
    answers = {
        "ok": raw(daemon, f"GET /healthz HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()),
        "404": raw(daemon, f"GET /nope HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()),
        "405": raw(daemon, f"DELETE /healthz HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()),
        "rebound": raw(daemon, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n"),
        "aiohttp's own 400": raw(daemon, b"GARBAGE\r\n\r\n"),
        "bad header": raw(daemon, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n"),
    }
    for name, answer in answers.items():
        assert answer.startswith(b"HTTP/1."), (name, answer[:100])
        assert b"\r\nserver:" not in _head_of(answer), (name, answer[:400])
    sock = raw_viewer(daemon.port, "/ws/porch")  # the WebSocket upgrade (101)
    sock.close()
    upgrade = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
    upgrade.sendall(
        f"GET /ws/porch HTTP/1.1\r\n{host}Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += upgrade.recv(1)
    upgrade.close()
    assert head.startswith(b"HTTP/1.1 101") and b"\r\nserver:" not in head.lower(), head


# --- GET /api/v1/cameras/{id}/logs -----------------------------------------------------------


def test_logs_show_the_cameras_recent_records(daemon: Daemon) -> None:
    restart = request(daemon, "/api/v1/cameras/porch/restart", "POST", JSON_TYPE, b"{}")
    assert restart[0] == 200

    def records() -> list[dict[str, Any]]:
        status, body = request(daemon, "/api/v1/cameras/porch/logs?lines=200")
        assert status == 200, body
        found: list[dict[str, Any]] = json.loads(body)["records"]
        return found

    wait_for(
        lambda: sum(r["message"] == "camera child started" for r in records()) >= 2,
        20,
        "the restarted child's start in the ring",
    )
    messages = [r["message"] for r in records()]
    assert "camera stop asked for" in messages and "camera start asked for" in messages
    started = [r for r in records() if r["message"] == "camera child started"]
    assert all(isinstance(r["pid"], int) and r["level"] == "info" for r in started)
    # lines: the newest N, oldest first. The child keeps reporting (a state change
    # may land between two reads), so the two are found among the records read
    # after them, ending no earlier than the newest record read before them.
    before = records()
    body = json.loads(request(daemon, "/api/v1/cameras/porch/logs?lines=2")[1])
    after = records()
    newest_two = body["records"]
    assert body["lines"] == 2 and len(newest_two) == 2
    ends = [i + 2 for i in range(len(after) - 1) if after[i : i + 2] == newest_two]
    assert ends and ends[-1] >= len(before), (newest_two, before[-2:], after[-3:])
    # Clamped to the ring's size, however large.
    for big in ("201", "99999999999999999999999999"):
        body = json.loads(request(daemon, f"/api/v1/cameras/porch/logs?lines={big}")[1])
        assert body["lines"] == 200
    # Only ASCII digits, at least 1, given once.
    for bad in ("0", "-1", "+3", "3.0", "abc", "", "%D9%A3", "%EF%BC%93", "1e3", "%203"):
        status, body = request(daemon, f"/api/v1/cameras/porch/logs?lines={bad}")
        assert status == 400, (bad, body)
        assert "lines" in detail(body)["message"]
    assert request(daemon, "/api/v1/cameras/porch/logs?lines=1&lines=2")[0] == 400
    # Unknown here, or not a camera id at all.
    assert request(daemon, "/api/v1/cameras/nowhere/logs")[0] == 404
    assert request(daemon, "/api/v1/cameras/a%2Fb/logs")[0] == 404
    assert request(daemon, "/api/v1/cameras/porch/logs", "POST", JSON_TYPE, b"{}")[0] == 405


def test_logs_are_scoped_like_the_camera(secured: Daemon) -> None:
    assert request(secured, "/api/v1/cameras/ka/logs")[0] == 401
    assert request(secured, "/api/v1/cameras/ka/logs", headers=bearer(VIEW_A))[0] == 200
    status, body = request(secured, "/api/v1/cameras/kb/logs", headers=bearer(VIEW_A))
    assert status == 403 and detail(body)["error"] == "forbidden"
    assert request(secured, "/api/v1/cameras/kb/logs", headers=bearer(ADMIN))[0] == 200
    # From a proxy too: tokens are what count, not the address.
    proxied = {**bearer(VIEW_A), "X-Forwarded-For": "203.0.113.7"}
    assert request(secured, "/api/v1/cameras/ka/logs", headers=proxied)[0] == 200


def test_new_endpoints_refuse_a_rebound_name_and_give_other_sites_nothing_to_read(
    daemon: Daemon,
) -> None:
    rebound = {"Host": "evil.example"}
    for path, method in (
        ("/api/v1/cameras/porch/logs", "GET"),
        ("/api/v1/cameras/porch/test", "POST"),
        ("/api/v1/cameras/porch/activate", "POST"),
        ("/api/nodes", "GET"),
    ):
        headers = {**rebound, **(JSON_TYPE if method == "POST" else {})}
        status, _ = request(daemon, path, method, headers, b"{}" if method == "POST" else None)
        assert status == 400, (path, status)
    # A hostile page may send the GETs, but may not read the answers (no CORS grant),
    # and its preflight for the test is refused.
    for path in ("/api/v1/cameras/porch/logs", "/api/nodes"):
        req = urllib.request.Request(
            f"http://{daemon.base}{path}", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}
        )
        with urllib.request.urlopen(req, timeout=5) as answer:
            assert answer.headers.get("Access-Control-Allow-Origin") is None, path
    preflight = {"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    assert request(daemon, "/api/v1/cameras/porch/test", "OPTIONS", preflight)[0] == 403


def test_a_client_that_never_reads_its_logs_does_not_hold_the_daemon(daemon: Daemon) -> None:
    before = rss_kib(daemon.process.pid)
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    one = f"GET /api/v1/cameras/porch/logs?lines=200 HTTP/1.1\r\nHost: {daemon.base}\r\n\r\n"
    sock.settimeout(0.5)
    try:
        for _ in range(2000):  # pipelined, never read: the server's writes back up
            sock.sendall(one.encode())
    except (TimeoutError, OSError):
        pass  # the server stopped reading from us: what we want
    started = time.monotonic()
    assert request(daemon, "/healthz")[0] == 200  # others are still served at once
    assert request(daemon, "/api/v1/cameras/porch/logs")[0] == 200
    assert time.monotonic() - started < 2
    sock.close()
    assert rss_kib(daemon.process.pid) - before < 50_000  # no unbounded queue of answers


# --- POST /api/v1/cameras/{id}/test ------------------------------------------------------------


def test_camera_test_reports_codec_size_and_fps_or_the_error(daemon: Daemon) -> None:
    path = "/api/v1/cameras/porch/test"
    status, body = request(daemon, path, "POST", JSON_TYPE, b"{}")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["ok"] and answer["codec"] == "synthetic"
    assert answer["width"] == 640 and answer["height"] == 360  # the source's own picture
    # The old frontend's way: no body at all, from its own page.
    assert request(daemon, path, "POST", own_page(daemon))[0] == 200
    # A URL from the body, validated like the config's and limited to the network.
    url = json.dumps({"url": "synthetic:?width=320&height=180"}).encode()
    answer = json.loads(request(daemon, path, "POST", JSON_TYPE, url)[1])
    assert (answer["width"], answer["height"]) == (320, 180)
    for bad in (
        "file:///etc/passwd",
        "/etc/passwd",
        "device:0",
        "pipe:0",
        "concat:/etc/passwd",
        "subfile:,start,0,end,0,,:/etc/passwd",
        "data:image/jpeg;base64,AAAA",
        "gopher://127.0.0.1/",
        "rtsp://cam/x y",
        "rtsp://cam/\x00",
        "",
        3,
        None,
        "rtsp://" + "a" * 3000,
    ):
        status, body = request(daemon, path, "POST", JSON_TYPE, json.dumps({"url": bad}).encode())
        assert status == 422, (bad, body)
    # The error, said without the password.
    closed = free_port()
    secret = json.dumps({"url": f"rtsp://user:hunter2@127.0.0.1:{closed}/x"}).encode()
    status, body = request(daemon, path, "POST", JSON_TYPE, secret)
    assert status == 502, body
    assert b"hunter2" not in body and b"***" in body
    assert "hunter2" not in daemon.log_text()
    # Bad bodies and unknown cameras.
    assert request(daemon, path, "POST", JSON_TYPE, b"[1]")[0] == 400
    assert request(daemon, path, "POST", JSON_TYPE, b"{" * 5000)[0] == 413
    assert request(daemon, "/api/v1/cameras/nowhere/test", "POST", JSON_TYPE, b"{}")[0] == 404


def test_camera_test_is_control(daemon: Daemon, secured: Daemon) -> None:
    path = "/api/v1/cameras/porch/test"
    for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        status, body = request(daemon, path, "POST", {**JSON_TYPE, **headers}, b"{}")
        assert status == 403, (headers, body)
    assert request(daemon, path, "POST", {"Content-Type": "text/plain"}, b"{}")[0] == 415
    proxied = {**JSON_TYPE, "X-Forwarded-For": "203.0.113.7"}
    assert request(daemon, path, "POST", proxied, b"{}")[0] == 403
    assert request(daemon, path, "GET")[0] == 405
    secured_path = "/api/v1/cameras/ka/test"
    assert request(secured, secured_path, "POST", JSON_TYPE, b"{}")[0] == 401
    viewer = {**JSON_TYPE, **bearer(VIEW_A)}
    assert request(secured, secured_path, "POST", viewer, b"{}")[0] == 403
    admin = {**JSON_TYPE, **bearer(ADMIN)}
    assert request(secured, secured_path, "POST", admin, b"{}")[0] == 200


class SilentServer:
    """Accepts connections and never answers: a camera that hangs."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def probes_of(daemon: Daemon) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(daemon.process.pid), "-f", "streamd.probe"],
        capture_output=True,
        text=True,
    )
    return [int(p) for p in out.stdout.split()]


def test_camera_tests_are_bounded_in_number_and_die_with_their_client(
    daemon: Daemon, silent: SilentServer
) -> None:
    path = "/api/v1/cameras/porch/test"
    hang = json.dumps({"url": f"http://127.0.0.1:{silent.port}/video"}).encode()
    # A client that asks and leaves without reading: its probe is killed at once
    # (well before the source's 5 s open timeout) and its slot freed.
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {daemon.base}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(hang)}\r\n\r\n".encode()
        + hang
    )
    wait_for(lambda: len(probes_of(daemon)) == 1, 5, "the probe running")
    sock.close()
    left = time.monotonic()
    wait_for(lambda: not probes_of(daemon), 3, "the probe killed when its client left")
    assert time.monotonic() - left < 3
    # Two at once; a third is told to come back, not queued.
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(request(daemon, path, "POST", JSON_TYPE, hang)[0])
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(probes_of(daemon)) == 2, 5, "two probes running")
    status, body = request(daemon, path, "POST", JSON_TYPE, b"{}")
    assert status == 429, body
    for thread in threads:
        thread.join(20)
    assert sorted(results) == [502, 502], results  # FFmpeg's own open timeout
    assert not probes_of(daemon)
    assert request(daemon, path, "POST", JSON_TYPE, b"{}")[0] == 200  # slots are free again


async def test_a_probe_past_its_deadline_is_killed(silent: SilentServer) -> None:
    from streamd.gateway import camera_api  # here: the module is new (run on old code)

    started = time.monotonic()
    result = await camera_api.run_probe(f"http://127.0.0.1:{silent.port}/x", deadline=1.0)
    assert result["timeout"] and not result["ok"], result
    assert time.monotonic() - started < 3
    mine = subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "-f", "streamd.probe"], capture_output=True, text=True
    )
    assert mine.stdout.strip() == "", "the probe outlived its deadline"


def test_network_source_rules() -> None:
    from streamd.gateway import camera_api

    ok = ("rtsp://cam/1", "rtsps://cam/1", "http://cam/v.mjpg", "https://cam/", "synthetic:")
    for url in ok:
        assert camera_api.network_source_problem(url) is None, url
    for bad in ("file:/x", "/x", "x.mp4", "device:0", "pipe:1", "tcp://h:1", "RTSP://cam/1"):
        assert camera_api.network_source_problem(bad) is not None, bad


# --- GET /api/nodes ------------------------------------------------------------------------


def test_nodes_embedded_answers_with_this_node(tmp_path: Path) -> None:
    path = tmp_path / "streamd.toml"
    port = free_port()
    write_config(path, redis_url=None, port=port, cameras=[{"id": "solo", **SYNTH}])
    path.write_text("[redis]\nenabled = false\n\n" + path.read_text())  # no registry
    daemon = Daemon(path, port)
    try:
        daemon.wait_healthy()
        status, body = request(daemon, "/api/nodes")
        assert status == 200, body
        (node,) = json.loads(body)["nodes"]
        assert node["role"] == "embedded" and node["cameras"] == ["solo"] and node["this_node"]
    finally:
        daemon.stop()


def test_nodes_lists_each_node_its_cameras_and_lease_age(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    config, port = node_config(
        tmp_path / "cam.toml",
        redis_url=redis_server.url,
        node="cams",
        cameras=[{"id": "far", **SYNTH}, {"id": "near", **SYNTH}],
        gateway=False,
    )
    camera_node = start_node(config, port, gateway=False)
    config, port = node_config(
        tmp_path / "gw.toml",
        redis_url=redis_server.url,
        node="gw",
        cameras=[{"id": "own", **SYNTH}],
    )
    gateway = start_node(config, port, gateway=True)
    try:

        def listed() -> dict[str, dict[str, Any]]:
            status, body = request(gateway, "/api/nodes")
            assert status == 200, body
            return {n["name"]: n for n in json.loads(body)["nodes"]}

        wait_for(
            lambda: (
                listed().get("cams", {}).get("cameras") == ["far", "near"]
                and listed().get("gw", {}).get("cameras") == ["own"]
            ),
            20,
            "both nodes listed with their cameras",
        )
        nodes = listed()
        assert nodes["gw"]["this_node"] and nodes["gw"]["role"] == "owner"
        assert nodes["cams"]["role"] == "owner"
        for name in ("gw", "cams"):
            assert 0 <= nodes[name]["lease_age_s"] <= 2.0, nodes[name]  # lease = 2 s
        # A node that dies: its leases end, it is offline.
        camera_node.stop(signal.SIGKILL)
        wait_for(lambda: listed()["cams"]["role"] == "offline", 10, "the dead node offline")
        assert listed()["cams"]["lease_age_s"] is None
        assert request(gateway, "/api/nodes", headers={"X-Forwarded-For": "1.2.3.4"})[0] == 403
    finally:
        camera_node.stop()
        gateway.stop()


def test_nodes_are_scoped_like_the_cameras(secured: Daemon) -> None:
    assert request(secured, "/api/nodes")[0] == 401
    status, body = request(secured, "/api/nodes", headers=bearer(VIEW_A))
    assert status == 200, body
    cameras = [c for node in json.loads(body)["nodes"] for c in node["cameras"]]
    assert cameras == ["ka"]
    status, body = request(secured, "/api/nodes", headers=bearer(ADMIN))
    nodes = json.loads(body)["nodes"]
    (this,) = [n for n in nodes if n.get("this_node")]
    assert this["cameras"] == ["ka", "kb"]
    # The other daemon of this module shares the Redis: its node is listed too.
    assert any(n["cameras"] == ["porch"] for n in nodes if not n.get("this_node"))


def test_log_ring_is_bounded_and_says_no_password() -> None:
    from streamd.camera_log import MAX_RECORDS, MAX_TEXT, CameraLog, parse_lines

    ring = CameraLog()
    for index in range(MAX_RECORDS * 3):
        ring.add("info", "x" * 1000, n=index, error="rtsp://u:hunter2@cam/1 " + "y" * 1000)
    assert len(ring.records) == MAX_RECORDS
    newest = ring.tail(1)[0]
    assert newest["n"] == MAX_RECORDS * 3 - 1
    assert len(newest["message"]) == MAX_TEXT and len(newest["error"]) == MAX_TEXT
    assert "hunter2" not in json.dumps(ring.tail(MAX_RECORDS))
    assert parse_lines([]) == 50 and parse_lines(["7"]) == 7 and parse_lines(["999"]) == 200
    for bad in (["\u0663"], ["\uff13"], ["+3"], [" 3"], ["0"], [""], ["1", "2"], ["0x10"]):
        assert isinstance(parse_lines(bad), str), bad


def test_node_summaries_group_by_node_and_age_leases() -> None:
    from streamd.registry.directory import DirectoryEntry, node_summaries
    from streamd.states import SourceState

    def entry(camera: str, node: str, expires: int) -> DirectoryEntry:
        return DirectoryEntry(camera, node, SourceState.LIVE, expires, None)

    entries = [entry("a", "n1", 10_500), entry("b", "n1", 11_000), entry("c", "n2", 9_000)]
    nodes = {n["name"]: n for n in node_summaries(entries, 10_000, 2.0, {"a", "b", "c"})}
    assert nodes["n1"] == {
        "name": "n1",
        "role": "owner",
        "cameras": ["a", "b"],
        "lease_age_s": 1.0,
        "lease_left_s": 1.0,
    }
    assert nodes["n2"]["role"] == "offline" and nodes["n2"]["lease_age_s"] is None
    scoped = node_summaries(entries, 10_000, 2.0, {"c"})
    assert [n["name"] for n in scoped] == ["n2"]
