"""WebSocket viewers in their own process: arrival time and capture → viewer
latency of every frame, so the daemon under test shares no process with them."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue

from websockets.asyncio.client import connect

from streamd.transport.frame import FrameError, parse_frame
from streamd.video.annexb import Codec
from streamd.video.units import check_unit

MAX_MESSAGE = 64 << 20


def _capture_ns(url: str, message: bytes) -> int | None:
    """Capture time of a frame: a JPEG's metadata, or (``/ws/{id}?format=h264``)
    the access unit's SEI metadata; None when it has none."""
    if "format=h264" in url:
        camera_id = url.split("/ws/", 1)[1].split("?", 1)[0]
        verdict = check_unit(message, Codec.H264, camera_id, MAX_MESSAGE)
        return verdict.meta.capture_ns if verdict.meta is not None else None
    try:
        meta = parse_frame(message, MAX_MESSAGE).meta
    except FrameError:
        return None
    return meta.capture_ns if meta else 0


@dataclass
class ViewerLog:
    url: str
    arrivals: list[float] = field(default_factory=list)  # time.monotonic()
    latencies: list[float] = field(default_factory=list)  # seconds, capture → here

    def count_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.arrivals if start <= t < end)

    def latencies_between(self, start: float, end: float) -> list[float]:
        return [
            lat for t, lat in zip(self.arrivals, self.latencies, strict=True) if start <= t < end
        ]


async def _watch(log: ViewerLog, until: float) -> None:
    with contextlib.suppress(OSError, asyncio.TimeoutError, TimeoutError):
        async with connect(log.url, max_size=None, open_timeout=10) as ws:
            while time.monotonic() < until:
                try:
                    message = await asyncio.wait_for(ws.recv(), max(0.01, until - time.monotonic()))
                except TimeoutError:
                    break
                if not isinstance(message, bytes):
                    continue
                now_ns = time.time_ns()
                capture_ns = _capture_ns(log.url, message)
                if capture_ns is None:
                    continue
                log.arrivals.append(time.monotonic())
                log.latencies.append((now_ns - capture_ns) / 1e9 if capture_ns else float("nan"))


def _run(urls: list[str], seconds: float, out: Queue[list[ViewerLog]]) -> None:
    logs = [ViewerLog(url) for url in urls]
    until = time.monotonic() + seconds

    async def main() -> None:
        await asyncio.gather(*(_watch(log, until) for log in logs))

    asyncio.run(main())
    out.put(logs)


class Viewers:
    """``with Viewers(urls, seconds) as v: ...; logs = v.logs()``"""

    def __init__(self, urls: list[str], seconds: float) -> None:
        context = mp.get_context("fork")
        self._out: Queue[list[ViewerLog]] = context.Queue()
        self.process = context.Process(target=_run, args=(urls, seconds, self._out))
        self.seconds = seconds

    def __enter__(self) -> Viewers:
        self.process.start()
        return self

    def logs(self) -> list[ViewerLog]:
        logs = self._out.get(timeout=self.seconds + 60)
        self.process.join()
        return logs

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
