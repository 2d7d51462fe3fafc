"""``streamd run``: wires supervisor, gateway and subscriber into one event loop,
and shuts them down in a fixed order with a deadline.

Signal handlers only set events (uvicorn's habit). Shutdown order: stop
accepting viewers and close them with 1001, stop the children (SIGTERM, grace,
SIGKILL), stop the subscriber. A second SIGINT/SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import structlog

from streamd.config import Config
from streamd.gateway.hub import Hub
from streamd.gateway.server import Gateway
from streamd.redact import redact_url
from streamd.supervisor import Supervisor
from streamd.transport.subscriber import FrameSubscriber

log = structlog.get_logger("streamd")
SHUTDOWN_DEADLINE_S = 10.0
EXIT_FORCED = 130


async def run_daemon(config: Config) -> int:
    hub = Hub()
    subscriber: FrameSubscriber | None = None
    gateway: Gateway
    if config.redis.enabled:
        subscriber = FrameSubscriber(
            config.redis.url,
            config.redis.channel_prefix,
            on_frame=lambda cam, data: gateway.ingest(cam, data),
        )
        for camera in config.cameras:
            subscriber.want(camera.id)
    supervisor = Supervisor(config, on_frame=lambda cam, data: gateway.ingest(cam, data))
    gateway = Gateway(config, hub, subscriber, fallback_active=supervisor.fallback_active)

    await gateway.start()
    supervisor.start()
    background: list[asyncio.Task[None]] = []
    if subscriber is not None:
        background.append(asyncio.create_task(subscriber.run(), name="subscriber"))
    log.info(
        "video stream manager started",
        listen=f"{config.server.host}:{gateway.bound_port()}",
        cameras=[c.id for c in config.cameras],
        config=config.source,
        redis_url=redact_url(config.redis.url) if config.redis.enabled else None,
        redis_enabled=config.redis.enabled,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now", signal=signal.Signals(signum).name)
            os._exit(EXIT_FORCED)
        log.info("shutting down", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    await stop.wait()
    try:
        await asyncio.wait_for(_shutdown(gateway, supervisor, background), SHUTDOWN_DEADLINE_S)
    except TimeoutError:
        log.error("shutdown deadline passed; exiting anyway", deadline_s=SHUTDOWN_DEADLINE_S)
        return 1
    log.info("video stream manager stopped")
    return 0


async def _shutdown(
    gateway: Gateway, supervisor: Supervisor, background: list[asyncio.Task[None]]
) -> None:
    await gateway.close()
    await supervisor.stop()
    for task in background:
        task.cancel()
    for task in background:
        with contextlib.suppress(asyncio.CancelledError):
            await task
