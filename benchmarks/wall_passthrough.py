"""The wall page in headless Chromium (Debian's package) on this machine, the
page's own figures read from ``window.streamdWall.tiles`` (issue 20):

1. one 720p15 H.264 RTSP test camera: capture → drawn latency p50/p99 on the
   WebCodecs path, beside the JPEG path measured the same way (the page loaded
   with ``delete window.VideoDecoder`` in an init script, so the tile falls
   back to JPEG);
2. four 1080p15 H.264 cameras on one wall, streamd and Chromium sharing the
   machine: per tile fps and p99 latency, passthrough vs JPEG.

The page's latency is capture (the unit's SEI metadata, or the JPEG's; the
``/ws`` frame header carries it) → the picture drawn on the tile's canvas
(``Date.now()`` right after ``drawImage``), the last 200 pictures. fps here is
pictures drawn (``frames``) over the measured seconds.

Usage: python -m benchmarks.wall_passthrough [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import connect

from benchmarks._daemon import temporary_daemon
from benchmarks._procs import cpu_seconds, descendants
from benchmarks._redis import redis_server
from benchmarks.end_to_end import percentile
from tests.cameras import Clip, RtspServer, make_clip
from tests.conftest import Daemon
from tests.support import free_port
from tests.test_wall import CHROMIUM_FLAGS, DevTools

FPS = 15
WARM_S = 6.0
TILES = """JSON.stringify(Object.fromEntries(Object.entries(window.streamdWall ?
  streamdWall.tiles : {}).map(([id, t]) => [id, {path: t.path, reason: t.reason, fps: t.fps,
  frames: t.frames, latency_ms_p50: t.latency_ms_p50, latency_ms_p99: t.latency_ms_p99,
  width: t.pictureWidth || 0, canvas: t.canvas.width}])))"""


# Capture → the message's arrival at the page (before any decoding), from the
# same /ws frame header the page reads: splits the page's latency into
# "to the browser" and "in the browser" (decode, draw). Added by the benchmark,
# not by the page.
ARRIVALS = """(() => {
  const Original = window.WebSocket;
  window.streamdArrivals = [];
  window.WebSocket = function (...args) {
    const socket = new Original(...args);
    socket.addEventListener("message", (m) => {
      if (typeof m.data === "string") { return; }
      const view = new DataView(m.data);
      const capture = Number(view.getBigUint64(10 + view.getUint8(1)) / 1000000n);
      if (capture > 0) { window.streamdArrivals.push(Date.now() - capture); }
    });
    return socket;
  };
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.WebSocket.prototype = Original.prototype;
})();"""
ARRIVED = """JSON.stringify(window.streamdArrivals.splice(0))"""


@dataclass(frozen=True)
class Tile:
    camera: str
    path: str
    reason: str | None
    fps: float  # pictures drawn per second over the measured seconds
    p50_ms: float
    p99_ms: float
    width: int  # the picture's
    canvas: int  # the tile's canvas: the width it is drawn at


@dataclass(frozen=True)
class Wall:
    tiles: list[Tile]
    streamd_cores: float
    chromium_cores: float
    load: float
    arrival_p50_ms: float  # capture → message at the page, every tile
    arrival_p99_ms: float


@asynccontextmanager
async def chromium() -> AsyncIterator[tuple[DevTools, subprocess.Popen[bytes]]]:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed (scripts/test installs Debian's chromium)"
    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        process = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--remote-debugging-port={port}",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = None
            for _ in range(150):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as reply:
                        pages = [t for t in json.load(reply) if t.get("type") == "page"]
                    if pages:
                        url = str(pages[0]["webSocketDebuggerUrl"])
                        break
                except OSError:
                    pass
                await asyncio.sleep(0.2)
            assert url, "chromium's DevTools endpoint did not come up"
            async with connect(url, max_size=None) as ws:
                yield DevTools(ws), process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def read_tiles(page: DevTools) -> dict[str, dict[str, object]]:
    value: dict[str, dict[str, object]] = json.loads(await page.evaluate(TILES))
    return value


async def measure_wall(daemon: Daemon, ids: list[str], webcodecs: bool, seconds: float) -> Wall:
    async with chromium() as (page, browser):
        await page.call("Page.enable")
        await page.call("Page.addScriptToEvaluateOnNewDocument", source=ARRIVALS)
        if not webcodecs:
            await page.call(
                "Page.addScriptToEvaluateOnNewDocument", source="delete window.VideoDecoder;"
            )
        await page.call("Page.navigate", url=f"http://{daemon.base}/?cameras={','.join(ids)}")
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            tiles = await read_tiles(page)
            if len(tiles) == len(ids) and all(int(str(t["frames"])) >= 10 for t in tiles.values()):
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"tiles not drawing: {await read_tiles(page)}")
        await asyncio.sleep(WARM_S)
        pids = [daemon.process.pid, *descendants(daemon.process.pid)]
        browsers = [browser.pid, *descendants(browser.pid)]
        streamd0 = sum(cpu_seconds(p) for p in pids)
        chromium0 = sum(cpu_seconds(p) for p in browsers)
        before, start = await read_tiles(page), time.monotonic()
        await page.evaluate(ARRIVED)
        await asyncio.sleep(seconds)
        after, end = await read_tiles(page), time.monotonic()
        arrivals = [float(v) for v in json.loads(await page.evaluate(ARRIVED))]
        streamd1 = sum(cpu_seconds(p) for p in pids)
        chromium1 = sum(cpu_seconds(p) for p in browsers)
    elapsed = end - start
    drawn_tiles = []
    for camera in ids:
        t = after[camera]
        drawn = int(str(t["frames"])) - int(str(before[camera]["frames"]))
        drawn_tiles.append(
            Tile(
                camera,
                str(t["path"]),
                None if t["reason"] is None else str(t["reason"]),
                drawn / elapsed,
                float(str(t["latency_ms_p50"])),
                float(str(t["latency_ms_p99"])),
                int(str(t["width"])),
                int(str(t["canvas"])),
            )
        )
    streamd_cores = (streamd1 - streamd0) / elapsed
    chromium_cores = (chromium1 - chromium0) / elapsed
    load = os.getloadavg()[0]
    to_page = (percentile(arrivals, 0.5), percentile(arrivals, 0.99))
    return Wall(drawn_tiles, streamd_cores, chromium_cores, load, *to_page)


def describe(label: str, wall: Wall) -> str:
    lines = [
        f"{label}: streamd {wall.streamd_cores:.2f} cores, chromium "
        f"{wall.chromium_cores:.2f} cores, load {wall.load:.1f}; capture -> message at the "
        f"page p50 {wall.arrival_p50_ms:.0f} ms, p99 {wall.arrival_p99_ms:.0f} ms"
    ]
    for t in wall.tiles:
        lines.append(
            f"  {t.camera} [{t.path}{'' if t.reason is None else ': ' + t.reason}, {t.width} px on "
            f"{t.canvas}]: "
            f"{t.fps:.1f} fps ({100 * t.fps / FPS:.0f} %), p50 {t.p50_ms:.0f} ms, "
            f"p99 {t.p99_ms:.0f} ms"
        )
    return "\n".join(lines)


async def run(seconds: float, parts: set[str]) -> None:
    clips = {"1": Clip("h264", 1280, 720), "2": Clip("h264", 1920, 1080)}
    counts = {"1": 1, "2": 4}
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_port:
        folder = Path(tmp)
        for part in sorted(parts):
            make_clip(folder, clips[part])
        rtsp = RtspServer(clips=folder)
        rtsp.start()
        try:
            for part in sorted(parts):
                clip, count = clips[part], counts[part]
                config = [
                    {"id": f"cam{i}", "source": rtsp.clip_url(clip), "fps": FPS, "detector": "none"}
                    for i in range(count)
                ]
                ids = [f"cam{i}" for i in range(count)]
                print(f"# {part}. {count} x {clip.name} on the wall", flush=True)
                with temporary_daemon(redis_port, config, healthy_within=60) as (daemon, _):
                    for webcodecs in (True, False):
                        wall = await measure_wall(daemon, ids, webcodecs, seconds)
                        label = "WebCodecs" if webcodecs else "JPEG (no VideoDecoder)"
                        print(describe(label, wall), flush=True)
        finally:
            rtsp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--parts", default="1,2")
    args = parser.parse_args()
    asyncio.run(run(args.seconds, set(args.parts.split(","))))


if __name__ == "__main__":
    main()
