"""One camera's child process, kept alive: start it in its own session (forked
from the warm fork server, or by exec: ``launch.Launcher``), hand it its spec
over a ``socketpair``, read its heartbeats and fallback frames, and replace it
when it exits, does not start in time (no first heartbeat within
``start_timeout``), stalls (no heartbeat for ``stall_timeout`` once started) or
grows past ``child_memory_max``. ``lifecycle.Lifecycle`` decides; this carries
out its decisions. A start holds one of the supervisor's start slots until the
first heartbeat (``starting``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog

from streamd.backoff import Backoff
from streamd.camera_log import CameraLog, RecordingLogger
from streamd.camera_status import Heartbeat
from streamd.child_status import ChildStatus
from streamd.config import SupervisorConfig
from streamd.launch import ChildProcess, Launcher
from streamd.lifecycle import Lifecycle, control_closed_is_news
from streamd.memory import over_memory, read_rss
from streamd.states import ExitCode, SourceState
from streamd.systemd import SERVICE_ONLY_ENV
from streamd.transport.local import (
    ControlSocketError,
    MessageType,
    decode_json,
    encode_json,
    read_message,
)
from streamd.worker.spec import WorkerSpec

log = structlog.get_logger("streamd.supervisor")  # one logger name for both layers
FrameSink = Callable[[str, bytes], None]
MEMORY_CHECK_INTERVAL_S = 1.0


class CameraChild:
    """One camera's child process, restarted by ``keep_alive`` until stopped."""

    def __init__(
        self,
        spec: WorkerSpec,
        settings: SupervisorConfig,
        on_frame: FrameSink,
        on_event: FrameSink = lambda _camera, _body: None,
        env: Mapping[str, str] | None = None,
        journal: CameraLog | None = None,
        launcher: Launcher | None = None,
        start_slot: Callable[[], AbstractAsyncContextManager[object]] | None = None,
        on_unit: FrameSink = lambda _camera, _body: None,
    ) -> None:
        self.spec = spec
        self.env = env
        self.launcher = launcher or Launcher(None)
        self.start_slot = start_slot or _no_slot
        self.on_event = on_event
        self.on_unit = on_unit
        self.settings = settings
        self.on_frame = on_frame
        backoff = Backoff(settings.restart_delay_initial, settings.restart_delay_max)
        self.status = ChildStatus(Lifecycle(backoff, stable_after=settings.stable_after))
        # Every record is also kept in the camera's ring (GET …/logs, camera_log.py).
        self.journal = journal if journal is not None else CameraLog()
        self.log = RecordingLogger(log.bind(camera_id=spec.camera.id), self.journal)
        self._process: ChildProcess | None = None
        self._started = asyncio.Event()  # the current child sent its first heartbeat
        self._terminating = False  # we are stopping the current child
        self._writer: asyncio.StreamWriter | None = None
        self.demand = False  # viewers of this daemon's gateway watch the camera
        self.unit_demand = False  # … and its passthrough viewers (au:{id})
        self.publish_every = 1  # [old API] stream_interval: every Nth paced frame
        self._stopping = asyncio.Event()
        self._heartbeat = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def camera_id(self) -> str:
        return self.spec.camera.id

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._stopping = asyncio.Event()
        self.status.lifecycle.on_start_requested()
        self._task = asyncio.create_task(self.keep_alive(), name=f"child-{self.camera_id}")

    async def keep_alive(self) -> None:
        lifecycle = self.status.lifecycle
        while not self._stopping.is_set():
            exit_code = await self._run_once()
            self.status.last_exit_code = exit_code
            if self._stopping.is_set():
                break
            delay = lifecycle.on_exit(time.monotonic(), exit_code)
            if delay is None:
                self.status.last_error = f"unusable camera config (exit {ExitCode.CONFIG:d})"
                self.log.error(
                    "camera child has an unusable config; not restarting until it changes",
                    exit_code=exit_code,
                )
                await self._stopping.wait()
                break
            self.status.last_error = f"child exited with code {exit_code}"
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
        """One child's life; while it starts it holds a start slot."""
        async with self.start_slot():
            if self._stopping.is_set():
                return None
            parent_end = await self._launch()
            if parent_end is None:
                return None
            self._started = asyncio.Event()
            run = asyncio.create_task(self._supervise(parent_end))
            started = asyncio.create_task(self._started.wait())
            await asyncio.wait([run, started], return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
        return await run

    def worker_argv(self, control_fd: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "streamd.worker",
            "--camera",
            self.camera_id,
            "--control-fd",
            str(control_fd),
            "--log-level",
            self.spec.log_level,
        ]

    async def _launch(self) -> socket.socket | None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(self.env if self.env is not None else os.environ)
        try:
            process = await self.launcher.launch(
                self.worker_argv(child_end.fileno()), env, child_end.fileno()
            )
        except OSError as exc:
            parent_end.close()
            self.log.error("cannot start camera child", error=str(exc))
            return None
        finally:
            child_end.close()
        self._process = process
        self._terminating = False
        self.status.pid = process.pid
        self.status.started_by = process.started_by
        self.status.on_new_child()
        self.status.lifecycle.on_spawned(time.monotonic())
        self.log.info("camera child started", pid=process.pid, started_by=process.started_by)
        return parent_end

    async def _supervise(self, parent_end: socket.socket) -> int | None:
        process = self._process
        assert process is not None
        reader, writer = await asyncio.open_unix_connection(sock=parent_end)
        writer.write(encode_json(MessageType.SPEC, self.spec.to_json()))
        writer.write(encode_json(MessageType.DEMAND, self._demand_body()))
        if self.publish_every != 1:
            writer.write(encode_json(MessageType.TUNE, {"publish_every": self.publish_every}))
        self._writer = writer
        helpers = [
            asyncio.create_task(self._read_control(reader)),
            asyncio.create_task(self._watch_heartbeats(process)),
            asyncio.create_task(self._watch_memory(process)),
            # A stop asked for while the child was being launched (waiting for
            # a start slot or the fork server) ends it as soon as it exists.
            asyncio.create_task(self._stop_when_asked(process)),
        ]
        try:
            exit_code = await process.wait()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            writer.close()
            self._writer = None
            self._process = None
            self.status.pid = None
        return exit_code

    async def _read_control(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await read_message(reader)
            except ControlSocketError as exc:
                self.log.warning("bad control message; closing channel", error=str(exc))
                return
            except ConnectionError as exc:
                # A child we stopped (or that died) resets the channel: not news.
                stopped = self._terminating or self._stopping.is_set()
                if control_closed_is_news(stopped):
                    self.log.info("control channel closed by the child", error=str(exc))
                return
            if message is None:
                return
            kind, body = message
            if kind is MessageType.FRAME:
                self.on_frame(self.camera_id, body)
            elif kind is MessageType.EVENT:
                self.on_event(self.camera_id, body)
            elif kind is MessageType.UNIT:
                self.on_unit(self.camera_id, body)
            elif kind is MessageType.STATUS:
                self._on_status(body)

    def _on_status(self, body: bytes) -> None:
        try:
            heartbeat = Heartbeat.from_wire(decode_json(body))
        except ControlSocketError:
            return
        except ValueError as exc:
            self.log.warning("bad heartbeat", error=str(exc))
            return
        now = time.monotonic()
        previous = self.status.heartbeat
        self.status.heartbeat = heartbeat
        self.status.figures = heartbeat.figures
        self._heartbeat.set()
        self._started.set()
        if heartbeat.state is SourceState.LIVE:
            self.status.lifecycle.on_frames(now)
        if previous is not None and heartbeat.state != previous.state:
            self.log.info("camera state", state=heartbeat.state, previous=previous.state)
        detector = heartbeat.detector
        failed = detector is not None and detector.startswith("failed")
        if failed and (previous is None or previous.detector != detector):
            self.log.error("detector failed", detector=detector)

    async def _watch_heartbeats(self, process: ChildProcess) -> None:
        """Kill a child that does not start in time, or that stops sending
        heartbeats once started (hung, SIGSTOPped). Starting is not stalling:
        the stall timer begins at the first heartbeat."""
        try:
            await asyncio.wait_for(self._started.wait(), self.settings.start_timeout)
        except TimeoutError:
            self.status.start_timeouts += 1
            self.status.last_error = "child did not start in time (no first heartbeat)"
            self.log.error(
                "camera child did not start in time; replacing it",
                pid=process.pid,
                start_timeout_s=self.settings.start_timeout,
            )
            await self._terminate(process)
            return
        while True:
            self._heartbeat.clear()
            try:
                await asyncio.wait_for(self._heartbeat.wait(), self.settings.stall_timeout)
            except TimeoutError:
                self.status.stalls += 1
                self.status.last_error = "child hung (no heartbeat)"
                self.log.error(
                    "camera child hung: no heartbeat; replacing it",
                    pid=process.pid,
                    stall_timeout_s=self.settings.stall_timeout,
                )
                await self._terminate(process)
                return

    async def _stop_when_asked(self, process: ChildProcess) -> None:
        await self._stopping.wait()
        await self._terminate(process)

    async def _watch_memory(self, process: ChildProcess) -> None:
        """Replace a child whose RSS passes ``child_memory_max``; it restarts through
        the normal lifecycle, with backoff. The cap is read each tick (reloads)."""
        while True:
            await asyncio.sleep(MEMORY_CHECK_INTERVAL_S)
            cap = self.settings.child_memory_max
            rss = read_rss(process.pid) if cap is not None else None
            if over_memory(rss, cap):
                self.status.memory_restarts += 1
                self.status.last_error = "child over memory cap"
                self.log.error("child over memory cap", pid=process.pid, rss=rss, cap=cap)
                await self._terminate(process)
                return

    async def _terminate(self, process: ChildProcess) -> None:
        """SIGTERM, wait ``stop_grace``, then SIGKILL."""
        if process.exited:
            return
        self._terminating = True
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.settings.stop_grace)
        except TimeoutError:
            self.log.warning("camera child ignored SIGTERM; killing", pid=process.pid)
            process.kill()
            await process.wait()

    def set_publish_every(self, every: int) -> None:
        """Kept across restarts of the child (sent with its spec)."""
        if every != self.publish_every:
            self.publish_every = every
            self._tell(MessageType.TUNE, {"publish_every": every})

    def set_demand(self, watched: bool) -> None:
        if watched != self.demand:
            self.demand = watched
            self._tell(MessageType.DEMAND, self._demand_body())

    def set_unit_demand(self, wanted: bool) -> None:
        if wanted != self.unit_demand:
            self.unit_demand = wanted
            self._tell(MessageType.DEMAND, self._demand_body())

    def _demand_body(self) -> dict[str, Any]:
        return {"watched": self.demand, "au": self.unit_demand}

    def _tell(self, kind: MessageType, body: dict[str, Any]) -> None:
        """A control message to the running child; a new child gets the state
        with its spec, so nothing is lost while none runs."""
        writer = self._writer
        if writer is not None and not writer.transport.is_closing():
            writer.write(encode_json(kind, body))

    def kill(self) -> None:
        """SIGKILL now: the last resort when the shutdown deadline has passed."""
        self._stopping.set()
        if self._process is not None and not self._process.exited:
            self._process.kill()

    async def stop(self) -> None:
        """Stop the child and do not restart it; idempotent."""
        self._stopping.set()
        if self._process is not None:
            await self._terminate(self._process)
        if self._task is not None:
            await self._task


@contextlib.asynccontextmanager
async def _no_slot() -> AsyncIterator[object]:
    yield None


def child_environment(parent: Mapping[str, str], source: str) -> dict[str, str]:
    """The environment a camera child is started with (the daemon's own is not
    edited): the parent's, without systemd's service-only variables."""
    env = {k: v for k, v in parent.items() if k not in SERVICE_ONLY_ENV}
    if source.startswith(("rtsp://", "rtsps://")):
        # TCP interleaving survives NAT and packet loss far better than UDP for video.
        env.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    return env
