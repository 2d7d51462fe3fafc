"""Real WebSocket viewers for tests (python-websockets clients)."""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from websockets.asyncio.client import ClientConnection, connect


def decodes(data: bytes) -> bool:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image is not None and image.size > 0


async def frames(url: str, count: int, timeout: float = 10.0) -> list[bytes]:
    async with connect(url, max_size=None, open_timeout=5) as ws:
        return await binary_messages(ws, count, timeout)


async def binary_messages(ws: ClientConnection, count: int, timeout: float = 15) -> list[bytes]:
    """The next ``count`` binary messages (text ones are passed over)."""
    got: list[bytes] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            message = await ws.recv()
            if isinstance(message, bytes):
                got.append(message)
    return got


@dataclass
class Watcher:
    """A viewer that records the arrival time of every frame in the background."""

    url: str
    arrivals: list[float] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    keep_payloads: bool = False
    ws: ClientConnection | None = None
    task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        self.ws = await connect(self.url, max_size=None, open_timeout=5)
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if isinstance(message, bytes):
                self.arrivals.append(time.monotonic())
                if self.keep_payloads:
                    self.payloads.append(message)

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.ws is not None:
            await self.ws.close()

    def count_since(self, since: float) -> int:
        return sum(1 for t in self.arrivals if t >= since)

    def max_gap(self, start: float, end: float) -> float:
        times = [start, *(t for t in self.arrivals if start <= t <= end), end]
        return max(b - a for a, b in itertools.pairwise(times))

    async def wait_frames(self, count: int, timeout: float) -> None:
        target = len(self.arrivals) + count
        async with asyncio.timeout(timeout):
            while len(self.arrivals) < target:
                await asyncio.sleep(0.02)


@dataclass
class MuxWatcher(Watcher):
    """A multiplexed ``/ws`` viewer subscribed to ``cameras``, recording the arrival
    time of every frame per camera (``arrivals`` holds them all)."""

    cameras: tuple[str, ...] = ()
    by_camera: dict[str, list[float]] = field(default_factory=dict)
    # (arrival, camera, seq, capture_ns) from each frame's header
    headers: list[tuple[float, str, int, int]] = field(default_factory=list)

    async def __aenter__(self) -> MuxWatcher:
        await super().__aenter__()
        assert self.ws is not None
        await self.ws.send(json.dumps({"op": "subscribe", "cameras": list(self.cameras)}))
        return self

    async def _run(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if isinstance(message, bytes):
                now = time.monotonic()
                cut = 2 + message[1]
                camera = message[2:cut].decode()
                seq, capture_ns = struct.unpack_from(">QQ", message, cut)
                self.arrivals.append(now)
                self.by_camera.setdefault(camera, []).append(now)
                self.headers.append((now, camera, seq, capture_ns))

    def camera_count_since(self, camera: str, since: float) -> int:
        return sum(1 for t in self.by_camera.get(camera, []) if t >= since)
