"""The gateway's side of H.264 passthrough (issue 20), two figures:

1. CPU per delivered access unit: the daemon's main process (subscriber, the
   ``check_unit`` verdict, GOP cache, per-viewer queues, the WebSocket write)
   while a publisher sends real units (a 1280x720 H.264 clip through
   ``Demuxer`` + ``Passthrough``) to ``au:gw`` and viewers in another process
   read ``/ws/gw?format=h264``; against one process ``sendall``-ing the same
   units over TCP to a reader at the same rate and fan-out (as
   ``gateway_cost``, whose JPEG figure it mirrors). Target: ratio <= 2.
2. Bytes to a viewer: a passthrough viewer against a JPEG viewer of the same
   camera (an RTSP test camera, 1280x720, its child encoding the JPEG), read
   at the same time through the same daemon: bytes per picture each.

Usage: python -m benchmarks.gateway_passthrough [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import socket
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import redis
from websockets.asyncio.client import connect

from benchmarks._daemon import temporary_daemon
from benchmarks._procs import precise_cpu_seconds as cpu_seconds
from benchmarks._raw_send import raw_send_per_message
from benchmarks._redis import redis_server
from streamd.video.demux import Demuxer
from streamd.video.passthrough import Passthrough
from tests.cameras import Clip, RtspServer, make_clip

CLIP = Clip("h264", 1280, 720)


def clip_units(path: Path, camera_id: str) -> list[bytes]:
    """Every message the child's pipeline makes of the clip (starts at a keyframe)."""
    messages = []
    with Demuxer(str(path)) as source:
        pipeline = Passthrough(camera_id, source.codec)
        for unit in source:
            message = pipeline.feed(unit, time.time_ns())
            if message is not None:
                messages.append(message)
    return messages


def _publish(port: int, channel: str, units: list[bytes], rate: float, seconds: float) -> None:
    client = redis.Redis(port=port)
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) < start + seconds:
        client.publish(channel, units[sent % len(units)])
        sent += 1
        time.sleep(max(0.0, start + sent / rate - now))


async def _read(url: str, until: float, log: list[tuple[float, int]]) -> None:
    with contextlib.suppress(OSError, TimeoutError):
        async with connect(url, max_size=None, open_timeout=10) as ws:
            while (left := until - time.monotonic()) > 0:
                try:
                    message = await asyncio.wait_for(ws.recv(), max(0.01, left))
                except TimeoutError:
                    break
                if isinstance(message, bytes):
                    log.append((time.monotonic(), len(message)))


def _viewers(urls: list[str], seconds: float, out: Queue[list[list[tuple[float, int]]]]) -> None:
    logs: list[list[tuple[float, int]]] = [[] for _ in urls]
    until = time.monotonic() + seconds

    async def main() -> None:
        await asyncio.gather(*(_read(url, until, log) for url, log in zip(urls, logs, strict=True)))

    asyncio.run(main())
    out.put(logs)


def gateway_per_unit(
    redis_port: int, units: list[bytes], *, viewers: int, rate: float, seconds: float
) -> tuple[float, int]:
    """(CPU seconds per delivered unit, units delivered in the window), the
    daemon's background CPU without units taken off (as ``gateway_cost``)."""
    warm = 3.0

    def no_such_file(folder: Path) -> list[dict[str, Any]]:
        return [{"id": "gw", "source": str(folder / "none.mp4")}]

    context = mp.get_context("fork")
    with temporary_daemon(redis_port, camera_of=no_such_file) as (daemon, _):
        out: Queue[list[list[tuple[float, int]]]] = context.Queue()
        urls = [f"ws://{daemon.base}/ws/gw?format=h264"] * viewers
        reader = context.Process(target=_viewers, args=(urls, warm + 2 * seconds + 2, out))
        publisher = context.Process(
            target=_publish, args=(redis_port, "au:gw", units, rate, warm + seconds + 1)
        )
        reader.start()
        time.sleep(1.0)
        quiet0, quiet_start = cpu_seconds(daemon.process.pid), time.monotonic()
        time.sleep(seconds)
        background = (cpu_seconds(daemon.process.pid) - quiet0) / (time.monotonic() - quiet_start)
        publisher.start()
        time.sleep(warm)
        start, cpu0 = time.monotonic(), cpu_seconds(daemon.process.pid)
        time.sleep(seconds)
        end, cpu1 = time.monotonic(), cpu_seconds(daemon.process.pid)
        logs = out.get(timeout=2 * seconds + 30)
        reader.join()
        publisher.join()
    delivered = sum(1 for log in logs for t, _ in log if start <= t < end)
    used = cpu1 - cpu0 - background * (end - start)
    return max(0.0, used) / max(1, delivered), delivered


def raw_send_per_unit(units: list[bytes], *, fanout: int, rate: float, seconds: float) -> float:
    """CPU seconds per ``sendall`` of one unit over TCP to a reading peer, paced."""
    return raw_send_per_message(units, fanout=fanout, rate=rate, seconds=seconds)


def _floor(
    redis_port: int, ports: list[int], warm: float, seconds: float, out: Queue[float]
) -> None:
    """A bare asyncio loop: subscribed to ``au:gw`` with a ``BufferedProtocol``,
    every read written on to each socket; no parsing, no framing, no Python per
    unit beyond the read callback. Its CPU in the window after ``warm``."""

    class Forward(asyncio.BufferedProtocol):
        def __init__(self, writers: list[asyncio.Transport]) -> None:
            self.buffer = bytearray(1 << 20)
            self.writers = writers

        def get_buffer(self, sizehint: int) -> memoryview:
            return memoryview(self.buffer)

        def buffer_updated(self, nbytes: int) -> None:
            data = bytes(self.buffer[:nbytes])
            for writer in self.writers:
                writer.write(data)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        writers = []
        for port in ports:
            transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            writers.append(transport)
        transport, _ = await loop.create_connection(
            lambda: Forward(writers), "127.0.0.1", redis_port
        )
        transport.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nau:gw\r\n")
        await asyncio.sleep(warm)
        cpu0 = time.process_time()
        await asyncio.sleep(seconds)
        return time.process_time() - cpu0

    out.put(asyncio.run(main()))


def asyncio_floor_per_unit(
    redis_port: int, units: list[bytes], *, viewers: int, rate: float, seconds: float
) -> float:
    """CPU seconds per delivered unit of ``_floor``: what any asyncio gateway
    pays (the event loop per wake-up, one ``recv``, the ``send``s)."""
    warm = 2.0
    readers = [socket.create_server(("127.0.0.1", 0)) for _ in range(viewers)]

    def read(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(1 << 20):
                pass

    for listener in readers:
        threading.Thread(target=read, args=(listener,), daemon=True).start()
    context = mp.get_context("fork")
    out: Queue[float] = context.Queue()
    ports = [listener.getsockname()[1] for listener in readers]
    forward = context.Process(target=_floor, args=(redis_port, ports, warm, seconds, out))
    forward.start()
    time.sleep(0.5)
    publisher = context.Process(
        target=_publish, args=(redis_port, "au:gw", units, rate, warm + seconds + 1)
    )
    publisher.start()
    used = out.get(timeout=warm + seconds + 30)
    forward.join()
    publisher.join()
    for listener in readers:
        listener.close()
    return used / (rate * seconds * viewers)


def viewer_bytes(redis_port: int, rtsp: RtspServer, seconds: float) -> tuple[float, float]:
    """(bytes per picture to a passthrough viewer, to a JPEG viewer) of one camera."""
    camera = {"id": "cam", "source": rtsp.clip_url(CLIP), "detector": "none"}
    context = mp.get_context("fork")
    # The camera's child publishes both: units while a passthrough viewer is
    # there, JPEG while a JPEG viewer is. (A second publisher of units, as
    # this once had, broke every GOP: only keyframes reached the viewer.)
    with temporary_daemon(redis_port, [camera]) as (daemon, _):
        out: Queue[list[list[tuple[float, int]]]] = context.Queue()
        urls = [f"ws://{daemon.base}/ws/cam?format=h264", f"ws://{daemon.base}/ws/cam"]
        reader = context.Process(target=_viewers, args=(urls, seconds + 3, out))
        reader.start()
        logs = out.get(timeout=seconds + 30)
        reader.join()
    # The first 3 s (connecting, the child's first JPEG) are left out of both.
    per = []
    for log in logs:
        steady = [size for t, size in log if t >= log[0][0] + 3] if log else []
        per.append(sum(steady) / max(1, len(steady)))
    return per[0], per[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--viewers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_port:
        folder = Path(tmp)
        units = clip_units(make_clip(folder, CLIP), "gw")
        mean = sum(map(len, units)) / len(units)
        per_unit, delivered = gateway_per_unit(
            redis_port, units, viewers=args.viewers, rate=args.rate, seconds=args.seconds
        )
        raw = raw_send_per_unit(units, fanout=args.viewers, rate=args.rate, seconds=args.seconds)
        floor = asyncio_floor_per_unit(
            redis_port, units, viewers=args.viewers, rate=args.rate, seconds=args.seconds
        )
        print(
            f"gateway CPU per delivered unit ({delivered} units of {mean / 1024:.1f} KiB mean, "
            f"{args.rate:.0f}/s to {args.viewers} viewers): {per_unit * 1e6:.1f} µs; raw paced "
            f"TCP send {raw * 1e6:.1f} µs; ratio {per_unit / raw:.2f} (target <= 2); a bare "
            f"asyncio forwarder {floor * 1e6:.1f} µs ({floor / raw:.2f} x raw)"
        )
        rtsp = RtspServer(clips=folder)
        rtsp.start()
        try:
            units_bytes, jpeg_bytes = viewer_bytes(redis_port, rtsp, args.seconds)
        finally:
            rtsp.stop()
        print(
            f"bytes per picture to a viewer, {CLIP.width}x{CLIP.height}: passthrough "
            f"{units_bytes / 1024:.1f} KiB, JPEG {jpeg_bytes / 1024:.1f} KiB; ratio "
            f"{units_bytes / jpeg_bytes:.2f}"
        )


if __name__ == "__main__":
    main()
