"""Runs one child process per camera and keeps it alive (the asyncio layer that
carries out ``lifecycle.Lifecycle``'s decisions).

Children are started by exec (``python -m streamd.worker --camera ID``) in their
own session, so a Ctrl-C in a terminal reaches the supervisor only and it stops
the children in order. Each child gets one end of a ``socketpair``: the camera
spec goes down it, heartbeats and fallback frames come up it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from streamd.backoff import Backoff
from streamd.config import CameraConfig, Config
from streamd.lifecycle import ChildState, Lifecycle
from streamd.transport.local import (
    MessageType,
    ProtocolError,
    decode_json,
    encode_json,
    read_message,
)
from streamd.worker.spec import WorkerSpec

log = structlog.get_logger("streamd.supervisor")


@dataclass
class ChildStatus:
    """What the supervisor knows about one camera, for /healthz, logs and APIs."""

    lifecycle: Lifecycle
    pid: int | None = None
    report: dict[str, Any] = field(default_factory=dict)
    last_report_at: float | None = None
    bad_messages: int = 0

    @property
    def source_state(self) -> str:
        return str(self.report.get("state", "unknown"))

    @property
    def redis_state(self) -> str:
        return str(self.report.get("redis", "unknown"))


class CameraChild:
    """One camera's child process, restarted by ``keep_alive`` until stopped."""

    def __init__(
        self,
        camera: CameraConfig,
        spec: WorkerSpec,
        config: Config,
        on_frame: Callable[[str, bytes], None],
    ) -> None:
        self.camera = camera
        self.spec = spec
        self.on_frame = on_frame
        sup = config.supervisor
        self.grace = sup.stop_grace
        self.status = ChildStatus(
            Lifecycle(Backoff(sup.restart_delay_initial, sup.restart_delay_max))
        )
        self.log = log.bind(camera_id=camera.id)
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.keep_alive(), name=f"child-{self.camera.id}")

    async def keep_alive(self) -> None:
        lifecycle = self.status.lifecycle
        while not self._stopping.is_set():
            exit_code = await self._run_once()
            if self._stopping.is_set():
                break
            delay = lifecycle.on_exit(time.monotonic(), exit_code)
            if delay is None:
                self.log.error(
                    "camera child has an unusable config; not restarting", exit_code=exit_code
                )
                await self._stopping.wait()
                break
            self.log.warning(
                "camera child exited; restarting",
                exit_code=exit_code,
                restart_in_s=round(delay, 2),
                failures=lifecycle.failures,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        lifecycle.on_stopped()

    async def _run_once(self) -> int | None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streamd.worker",
                "--camera",
                self.camera.id,
                "--control-fd",
                str(child_end.fileno()),
                "--log-level",
                self.spec.log_level,
                pass_fds=(child_end.fileno(),),
                start_new_session=True,
            )
        except OSError as exc:
            parent_end.close()
            self.log.error("cannot start camera child", error=str(exc))
            return None
        finally:
            child_end.close()
        self._process = process
        self.status.pid = process.pid
        self.status.report = {}
        self.status.lifecycle.on_spawned(time.monotonic())
        self.log.info("camera child started", pid=process.pid)
        reader, writer = await asyncio.open_unix_connection(sock=parent_end)
        writer.write(encode_json(MessageType.SPEC, self.spec.to_json()))
        control = asyncio.create_task(self._read_control(reader))
        try:
            exit_code = await process.wait()
        finally:
            control.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await control
            writer.close()
            self._process = None
            self.status.pid = None
        return exit_code

    async def _read_control(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await read_message(reader)
            except (ProtocolError, ConnectionError) as exc:
                self.status.bad_messages += 1
                self.log.warning("bad control message; closing channel", error=str(exc))
                return
            if message is None:
                return
            kind, body = message
            if kind is MessageType.FRAME:
                self.on_frame(self.camera.id, body)
            elif kind is MessageType.STATUS:
                self._on_status(body)

    def _on_status(self, body: bytes) -> None:
        try:
            report = decode_json(body)
        except ProtocolError:
            self.status.bad_messages += 1
            return
        now = time.monotonic()
        self.status.report = report
        self.status.last_report_at = now
        if report.get("state") == "live":
            self.status.lifecycle.on_frames(now)

    async def stop(self) -> None:
        """SIGTERM, wait ``grace``, then SIGKILL; idempotent."""
        self._stopping.set()
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.grace)
            except TimeoutError:
                self.log.warning("camera child ignored SIGTERM; killing", pid=process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            await self._task


class Supervisor:
    def __init__(self, config: Config, on_frame: Callable[[str, bytes], None]) -> None:
        self.config = config
        self.on_frame = on_frame
        self.children: dict[str, CameraChild] = {}

    def spec_for(self, camera: CameraConfig) -> WorkerSpec:
        redis = self.config.redis
        return WorkerSpec(
            camera=camera,
            redis_url=redis.url if redis.enabled else None,
            channel=redis.channel_prefix + camera.id,
            log_level=self.config.log_level,
        )

    def start(self) -> None:
        for camera in self.config.cameras:
            child = CameraChild(camera, self.spec_for(camera), self.config, self.on_frame)
            self.children[camera.id] = child
            child.start()

    def fallback_active(self) -> bool:
        return any(c.status.redis_state in ("down", "disabled") for c in self.children.values())

    def live_count(self) -> int:
        return sum(
            1
            for c in self.children.values()
            if c.status.pid is not None
            and c.status.source_state == "live"
            and c.status.lifecycle.state is not ChildState.BACKOFF
        )

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.children.values()))
