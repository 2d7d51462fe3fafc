"""The wall page in a real headless Chromium (Debian's package), driven over the
DevTools protocol: every tile decodes frames that change over time, a stopped
camera is shown as not live, and a screenshot is taken."""

from __future__ import annotations

import asyncio
import base64
import http.server
import itertools
import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from .conftest import Daemon, RedisServer, free_port, wait_for

JSON = {"Content-Type": "application/json"}  # control needs it (CSRF guard)

SYNTH = {"source": "synthetic:?width=320&height=180", "fps": 10}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


class DevTools:
    """Just enough of the Chrome DevTools Protocol: call a method, get its result."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        async with asyncio.timeout(20):
            while True:
                reply = json.loads(await self.ws.recv())
                if reply.get("id") == call_id:
                    if "error" in reply:
                        raise AssertionError(f"{method}: {reply['error']}")
                    result: dict[str, Any] = reply["result"]
                    return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[DevTools]:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed (scripts/test installs Debian's chromium)"
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--remote-debugging-port={port}",
            f"--user-data-dir={tmp_path / 'profile'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def page_target() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as reply:
                targets = json.load(reply)
        except OSError:
            return None
        pages = [t for t in targets if t.get("type") == "page"]
        return str(pages[0]["webSocketDebuggerUrl"]) if pages else None

    try:
        url = await asyncio.to_thread(wait_for, page_target, 30, "chromium's DevTools endpoint")
        async with connect(url, max_size=None) as ws:
            yield DevTools(ws)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


TILES = """JSON.stringify(Object.values(window.streamdWall ? streamdWall.tiles : {}).map(t => ({
  id: t.id, shown: t.shown, state: t.state, seq: t.lastSeq, latency: t.latencyMs,
  shownState: t.el.dataset.state, picture: t.pictureWidth || 0, canvas: t.canvas.width,
  shownWidth: t.canvas.clientWidth * devicePixelRatio,
  lit: (() => { const c = t.canvas; if (!c.width) return 0;
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let s = 0; for (let i = 0; i < d.length; i += 97) s += d[i]; return s; })()
})))"""


async def tiles(page: DevTools) -> list[dict[str, Any]]:
    value = await page.evaluate(TILES)
    result: list[dict[str, Any]] = json.loads(value)
    return result


async def until(
    page: DevTools,
    predicate: Callable[[list[dict[str, Any]]], bool],
    what: str,
    timeout: float = 20,
) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while True:
            current = await tiles(page)
            if predicate(current):
                return current
            await asyncio.sleep(0.2)
    raise AssertionError(what)  # pragma: no cover - the timeout raises first


async def test_wall_in_headless_chromium(
    browser: DevTools,
    redis_server: RedisServer,
    start_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[
            {
                "id": "lobby",
                "name": "Lobby",
                "location": "Ground floor",
                **SYNTH,
                "source": "synthetic:?width=1280&height=720",  # wider than its tile
            },
            {"id": "garage", **SYNTH},
            {"id": "yard", **SYNTH},
        ],
    )
    await browser.call("Page.enable")
    await browser.call("Page.navigate", url=f"http://{daemon.base}/")
    first = await until(
        browser,
        lambda ts: len(ts) == 3 and all(t["shown"] >= 3 and t["state"] == "live" for t in ts),
        "every tile live with decoded frames",
    )
    assert all(t["lit"] > 0 for t in first)  # something was drawn
    # Each picture is drawn at the size its tile shows it, never above its own.
    assert [t["picture"] for t in first] == [1280, 320, 320]
    assert all(t["canvas"] <= min(t["picture"], round(t["shownWidth"]) + 1) for t in first)
    assert first[0]["canvas"] < 1280 and first[1]["canvas"] == 320
    assert all(t["latency"] is not None and 0 <= t["latency"] < 2000 for t in first)
    later = await until(
        browser,
        lambda ts: all(t["seq"] > f["seq"] + 5 for t, f in zip(ts, first, strict=True)),
        "frames that change over time",
    )
    assert [t["id"] for t in later] == ["lobby", "garage", "yard"]
    names = await browser.evaluate(
        "JSON.stringify([...document.querySelectorAll('.tile .name')].map(e => e.textContent))"
    )
    assert json.loads(names) == ["Lobby · Ground floor", "garage", "yard"]

    shot = await browser.call("Page.captureScreenshot", format="png")
    path = tmp_path / "wall.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000

    request = urllib.request.Request(
        f"http://{daemon.base}/api/v1/cameras/garage/stop", method="POST", headers=JSON
    )
    await asyncio.to_thread(urllib.request.urlopen, request, None, 10)
    stopped = await until(
        browser,
        lambda ts: next(t for t in ts if t["id"] == "garage")["shownState"] != "live",
        "the stopped camera shown as not live",
        timeout=10,
    )
    assert next(t for t in stopped if t["id"] == "garage")["state"] == "stopped"
    assert all(t["state"] == "live" for t in stopped if t["id"] != "garage")

    # Tiles scrolled out of view unsubscribe, and resume when visible again.
    await browser.call(
        "Emulation.setDeviceMetricsOverride",
        width=420,
        height=300,
        deviceScaleFactor=1,
        mobile=False,
    )
    await until(browser, lambda ts: ts[2]["state"] == "paused", "off-screen tile paused")
    viewers = json.loads(daemon.http("/api/cameras")[1])["cameras"]["yard"]["viewers"]
    assert viewers == 0
    await browser.call("Emulation.clearDeviceMetricsOverride")
    await until(browser, lambda ts: ts[2]["state"] == "live", "tile resumed", timeout=10)

    # Memory stays flat while frames keep coming (bitmaps closed, no object URLs).
    heap = (
        "(async () => { await new Promise(r => setTimeout(r, 100));"
        " return performance.memory.usedJSHeapSize; })()"
    )
    await browser.call("HeapProfiler.collectGarbage")
    before = await browser.evaluate(heap)
    await asyncio.sleep(5)
    await browser.call("HeapProfiler.collectGarbage")
    after = await browser.evaluate(heap)
    assert after - before < 5 * 1024 * 1024, (before, after)

    # The page reconnects by itself after the server restarts.
    assert await browser.evaluate("streamdWall.connects") == 1
    daemon.stop()
    restarted = Daemon(daemon.config, daemon.port)
    try:
        await asyncio.to_thread(restarted.wait_healthy)
        await until(
            browser,
            lambda ts: all(t["state"] == "live" for t in ts),
            "every tile live again after the restart",
            timeout=30,
        )
        assert await browser.evaluate("streamdWall.connects") == 2
    finally:
        restarted.stop()


EVIL_PAGE = b"<!doctype html><title>evil</title><p>nothing to see</p>"
ATTACK = """(async () => {
  const base = "http://127.0.0.1:%d";
  const stop = base + "/api/v1/cameras/door/stop";
  const quiet = (p) => p.then(() => "answered", () => "blocked");
  const results = {
    noCors: await quiet(fetch(stop, {method: "POST", mode: "no-cors"})),
    noCorsText: await quiet(fetch(stop, {method: "POST", mode: "no-cors",
                                         headers: {"Content-Type": "text/plain"}, body: "{}"})),
    reload: await quiet(fetch(base + "/api/v1/reload", {method: "POST", mode: "no-cors"})),
    json: await quiet(fetch(stop, {method: "POST", headers: {"Content-Type": "application/json"},
                                   body: "{}"})),
  };
  results.ws = await new Promise((resolve) => {
    const ws = new WebSocket("ws://127.0.0.1:%d/ws/door");
    ws.onmessage = () => { resolve("frames"); ws.close(); };
    ws.onerror = () => resolve("refused");
    setTimeout(() => resolve("timeout"), 5000);
  });
  return JSON.stringify(results);
})()"""


async def test_a_cross_site_page_in_chromium_cannot_stop_or_watch(
    browser: DevTools,
    redis_server: RedisServer,
    start_daemon: Callable[..., Daemon],
) -> None:
    """Issue 9, hole 1: the page another site serves, open in the operator's browser."""
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "door", **SYNTH}])

    class EvilPage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(EVIL_PAGE)

        def log_message(self, *args: Any) -> None:
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.2", 0), EvilPage)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        await browser.call("Page.navigate", url=f"http://127.0.0.2:{evil.server_port}/")
        async with asyncio.timeout(10):
            while await browser.evaluate("document.title") != "evil":
                await asyncio.sleep(0.1)
        results = json.loads(await browser.evaluate(ATTACK % (daemon.port, daemon.port)))
    finally:
        evil.shutdown()
    assert results["json"] == "blocked"  # the preflight is refused: the POST is never sent
    assert results["ws"] == "refused"
    cameras = json.loads(daemon.http("/api/cameras")[1])["cameras"]
    assert cameras["door"]["child"] != "stopped"
    metrics = daemon.http("/metrics")[1].decode()
    assert 'streamd_requests_refused_total{reason="cross_site"}' in metrics
    assert 'streamd_requests_refused_total{reason="origin"}' in metrics
