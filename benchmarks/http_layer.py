"""Which server should carry the viewers: websockets alone, aiohttp, or uvicorn +
Starlette? Same fan-out in each, measured in the same run.

Each candidate runs in its own process with streamd's viewer pattern: one
latest-wins slot and one sender task per viewer, a producer putting a 100 KiB
frame into every slot at a fixed rate. A separate client process holds N
websockets clients that count what they receive. We report the server's CPU per
delivered frame and the delivered rate, each as a ratio against plain
websockets (the layer streamd used before), runs interleaved to share noise.

Needs the candidates installed: pip install aiohttp uvicorn starlette.

Usage: python -m benchmarks.http_layer [--viewers 10] [--fps 30,120] [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from tests.support import free_port

FRAME = os.urandom(100 * 1024)
Send = Callable[[bytes], Awaitable[None]]


class Fanout:
    """streamd's viewer shape: a latest-wins slot and a sender per viewer."""

    def __init__(self) -> None:
        self.slots: dict[int, list[bytes | None]] = {}
        self.events: dict[int, asyncio.Event] = {}
        self.delivered = 0

    async def serve_viewer(self, send: Send) -> None:
        key = id(send)
        slot: list[bytes | None] = [None]
        event = asyncio.Event()
        self.slots[key], self.events[key] = slot, event
        try:
            while True:
                await event.wait()
                event.clear()
                frame, slot[0] = slot[0], None
                if frame is not None:
                    await send(frame)
                    self.delivered += 1
        finally:
            del self.slots[key], self.events[key]

    async def produce(self, fps: float) -> None:
        interval = 1.0 / fps
        next_at = time.perf_counter()
        while True:
            for key, slot in self.slots.items():
                slot[0] = FRAME
                self.events[key].set()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def run_websockets(port: int, fanout: Fanout) -> Callable[[], Awaitable[None]]:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        await fanout.serve_viewer(ws.send)

    server = await serve(handler, "127.0.0.1", port, compression=None, max_size=4096)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return stop


async def run_aiohttp(port: int, fanout: Fanout) -> Callable[[], Awaitable[None]]:
    from aiohttp import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=4096)
        await ws.prepare(request)
        task = asyncio.create_task(fanout.serve_viewer(ws.send_bytes))
        async for _ in ws:
            pass
        task.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner.cleanup


async def run_starlette(port: int, fanout: Fanout) -> Callable[[], Awaitable[None]]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        await fanout.serve_viewer(ws.send_bytes)

    app = Starlette(routes=[WebSocketRoute("/", endpoint)])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)

    async def stop() -> None:
        server.should_exit = True
        await task

    return stop


SERVERS = {"websockets": run_websockets, "aiohttp": run_aiohttp, "uvicorn+starlette": run_starlette}


def server_process(name: str, port: int, fps: float, pipe: Connection) -> None:
    async def main() -> None:
        fanout = Fanout()
        stop = await SERVERS[name](port, fanout)
        producer = asyncio.create_task(fanout.produce(fps))
        pipe.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "start"
        cpu0, delivered0 = time.process_time(), fanout.delivered
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "stop"
        pipe.send((time.process_time() - cpu0, fanout.delivered - delivered0))
        producer.cancel()
        await stop()

    asyncio.run(main())


def client_process(port: int, viewers: int, pipe: Connection) -> None:
    from websockets.asyncio.client import connect

    async def main() -> None:
        received = [0]

        async def viewer() -> None:
            async with connect(f"ws://127.0.0.1:{port}/", max_size=None, compression=None) as ws:
                async for _ in ws:
                    received[0] += 1

        tasks = [asyncio.create_task(viewer()) for _ in range(viewers)]
        pipe.send("connected")
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        pipe.send(received[0])
        for task in tasks:
            task.cancel()

    asyncio.run(main())


def _recv(pipe: Connection, what: str) -> Any:
    if not pipe.poll(30):
        raise RuntimeError(f"no answer from the {what} process")
    return pipe.recv()


def measure(name: str, viewers: int, fps: float, seconds: float) -> tuple[float, float]:
    """(server CPU µs per delivered frame, delivered fraction of offered frames)."""
    port = free_port()
    ctx = mp.get_context("spawn")
    server_pipe, server_end = ctx.Pipe()
    client_pipe, client_end = ctx.Pipe()
    server = ctx.Process(target=server_process, args=(name, port, fps, server_end))
    server.start()
    assert _recv(server_pipe, name) == "ready"
    client = ctx.Process(target=client_process, args=(port, viewers, client_end))
    client.start()
    assert _recv(client_pipe, "client") == "connected"
    time.sleep(1.0)  # handshakes done, steady state
    server_pipe.send("start")
    time.sleep(seconds)
    server_pipe.send("stop")
    cpu, delivered = _recv(server_pipe, name)
    client_pipe.send("stop")
    _recv(client_pipe, "client")
    for process in (client, server):
        process.join(10)
        if process.is_alive():
            process.kill()
    offered = fps * viewers * seconds
    return cpu / max(delivered, 1) * 1e6, delivered / offered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--fps", default="30,120")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for fps in (float(f) for f in args.fps.split(",")):
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in SERVERS}
        for _ in range(args.rounds):  # interleaved, so load drifts hit all alike
            for name in SERVERS:
                results[name].append(measure(name, args.viewers, fps, args.seconds))
        base_cpu = statistics.median(r[0] for r in results["websockets"])
        for name, runs in results.items():
            cpu = statistics.median(r[0] for r in runs)
            got = statistics.median(r[1] for r in runs)
            rows.append((fps, name, cpu, cpu / base_cpu, got))
    print(f"{args.viewers} viewers, 100 KiB frames, median of {args.rounds} interleaved rounds")
    print(f"{'fps':>5} {'server':<18} {'CPU µs/frame':>13} {'vs websockets':>14} {'delivered':>10}")
    for fps, name, cpu, ratio, got in rows:
        print(f"{fps:5.0f} {name:<18} {cpu:13.1f} {ratio:13.2f}x {got:10.1%}")


if __name__ == "__main__":
    main()
